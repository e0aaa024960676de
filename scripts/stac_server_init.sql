-- Run by scripts/stac_server.sh after `pypgstac migrate` (pgstac 0.10), on every start; idempotent.

-- pgstac's triggers call its functions unqualified, as the API does (search_path pgstac,public).
SET search_path TO pgstac, public;

-- Registers `updated` as a timestamptz queryable: CQL2 filters/sorts on it compare timestamps (not
-- strings, which is what pgstac 0.10 falls back to for unregistered properties) and /queryables lists it.
-- pgstac 0.10 has no unique constraint on queryables.name (a BEFORE INSERT trigger raises
-- unique_violation on a clash instead), so ON CONFLICT DO NOTHING cannot be used: guard with NOT EXISTS.
INSERT INTO pgstac.queryables (name, definition, property_wrapper)
SELECT 'updated', '{"title":"Last update","type":"string","format":"date-time"}'::jsonb, 'to_tstz'
WHERE NOT EXISTS (SELECT 1 FROM pgstac.queryables WHERE name = 'updated');

-- With context off, search responses carry no numberMatched and pystac-client's matched() is None.
INSERT INTO pgstac.pgstac_settings (name, value) VALUES ('context', 'on')
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value;
