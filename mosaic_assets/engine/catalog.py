"""STAC search -> scene table: one row per scene with everything the GTI needs, so no scene is probed.

The scene table is a GeoDataFrame (footprints in EPSG:4326) saved as GeoParquet. The href policy
(which schemes may reach GDAL, and how they map to GDAL paths) lives here too.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import math
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import geopandas as gpd
import pandas as pd
from odc.geo import geom
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO
from shapely import make_valid
from shapely.geometry import shape as shapely_shape
from urllib3.util.retry import Retry

from .bandgroups import mask_group
from .keys import STATIC_STEP, time_key
from .masks import check_mask_values
from .modifier import ModifierError, load_modifier, redact_text, signed_item
from .object_store import VSI_PREFIXES, Location, is_remote, read_bytes, vsi_path, write_bytes
from .spec import MosaicSpec
from .stac_meta import AssetGrid, AssetMetadataError, MissingProjection, asset_grid, band_count, band_metadata
from .timegrid import step_bounds, step_index, step_start

SCENE_COLUMNS = (
    "item_id",
    "collection",
    "datetime",
    "time_step",
    "updated",
    "sort_value",
    "crs",
    "transform",
    "shape",
    "hrefs",
    "assets",  # JSON: asset key -> {href, crs, shape, transform, bands: {index: nodata/data_type/scale/offset}}
)


class CatalogError(ValueError):
    """A STAC item cannot be used; the message names the item and what is wrong."""


class StacIncompleteError(RuntimeError):
    """The STAC API's paging ended short of what it said matched (an empty or truncated page mid-paging,
    a malformed page). Transient as far as we can tell: the step is retried, and nothing is written."""


@dataclass(frozen=True)
class StacFailure:
    """Why a STAC request failed, said safely: the message (the whole cause chain) with the token
    replaced by ``***`` (a server may echo the Authorization header into its error), and whether a
    retry can help (not for 4xx other than 408/429, nor for an unusable item)."""

    message: str
    retryable: bool
    redacted: bool


def explain_stac_failure(exc: BaseException, token: str | None) -> StacFailure:
    parts, seen, current = [], set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    text = f"{type(exc).__name__}: " + " <- ".join(parts)
    safe = text.replace(token, "***") if token else text
    status = getattr(exc, "status_code", None)
    client_error = isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)
    return StacFailure(safe, not (client_error or isinstance(exc, CatalogError)), safe != text)


# HTTP-level retries for the STAC API: connection errors, timeouts and 429/5xx, with exponential
# backoff and jitter (1, 2, 4, 8 s, +-1 s), for GET and POST (searches only read). Past these,
# the error reaches Dagster, whose RetryPolicy retries the whole step.
STAC_RETRIES = Retry(
    total=4,
    backoff_factor=1.0,
    backoff_jitter=1.0,
    status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=None,
    raise_on_status=True,
)
STAC_TIMEOUT = (10.0, 120.0)  # connect, read (seconds): a hung API fails instead of hanging the run


def open_client(
    url: str,
    token: str | None = None,
    timeout: float | tuple[float, float] = STAC_TIMEOUT,
    retries: Retry = STAC_RETRIES,
) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    stac_io = StacApiIO(headers=headers, timeout=timeout, max_retries=retries)
    client = Client.open(url, headers=headers, stac_io=stac_io, timeout=timeout)
    client.add_conforms_to("SORT")  # pgstac sorts, but does not advertise it
    return client


BBOX_PAD_DEGREES = 1e-4  # ~11 m: far more than the densified edges' error, far less than a scene


def area_bbox_4326(spec: MosaicSpec) -> tuple[float, float, float, float]:
    """The spec's area as a lon/lat bbox, for STAC's ``bbox`` parameter.

    The box's edges are densified to 1/1024 of the longer side before projecting (curved edges bulge
    between corners), and the result is padded by ``BBOX_PAD_DEGREES`` for the bulge between those
    points (a continental LAEA box at 1/256 fell ~9 m short; an extra item found is filtered out
    later, a missed one would be nodata). At pixel resolution a continental area would be millions
    of points (measured: 0.43 s per call for a 115 km box, and it runs once per search)."""
    if spec.area.crs == "EPSG:4326":
        return tuple(spec.area.bbox)
    left, bottom, right, top = spec.area.bbox
    step = max(right - left, top - bottom) / 1024
    b = geom.box(left, bottom, right, top, spec.area.crs).to_crs("EPSG:4326", resolution=step).boundingbox
    pad = BBOX_PAD_DEGREES
    return (max(b.left - pad, -180.0), max(b.bottom - pad, -90.0), min(b.right + pad, 180.0), min(b.top + pad, 90.0))


def require_collections(spec: MosaicSpec, client: Client) -> None:
    """An unknown collection is a spec error, not an empty mosaic: say so, naming it."""
    known = {c.id for c in client.get_collections()}
    missing = [c for c in spec.stac.collections if c not in known]
    if missing:
        raise CatalogError(f"stac.collections: {missing} not found at {client.self_href or spec.stac.url}")


def search_items(spec: MosaicSpec, client: Client, datetime_range: str | None = None) -> Iterator[dict]:
    """All items of the spec's collections inside its area (and time range), paged."""
    require_collections(spec, client)
    search = client.search(
        collections=list(spec.stac.collections),
        bbox=area_bbox_4326(spec),
        datetime=datetime_range,
        limit=spec.stac.query_limit,
        sortby=[{"field": "properties.datetime", "direction": "asc"}, {"field": "id", "direction": "asc"}],
    )
    matched, received, pages, promised_more = None, 0, 0, False
    for page in search.pages_as_dicts():
        pages += 1
        features = page.get("features") if isinstance(page, dict) else None
        if not isinstance(features, list):
            raise StacIncompleteError(
                f"STAC API {spec.stac.url}: page {pages} of the search is not a FeatureCollection"
            )
        if matched is None:
            matched = page.get("numberMatched", (page.get("context") or {}).get("matched"))
        promised_more = any(link.get("rel") == "next" for link in page.get("links") or [])
        received += len(features)
        yield from features
    # pystac-client ends paging silently at an empty page, even one that follows a "next" link. That is
    # truncation when the API also said more items matched. (The count alone is no proof: pgstac caches
    # numberMatched per search for up to a day, so it lags items added or deleted since.)
    if promised_more and isinstance(matched, int) and received < matched:
        raise StacIncompleteError(
            f"STAC API {spec.stac.url}: the search matched {matched} items but paging returned {received} "
            f"over {pages} pages, then an empty page behind a 'next' link (truncated mid-paging); nothing was written"
        )


def item_time_key(spec: MosaicSpec, item: dict) -> str | None:
    """The time step an item falls in, or None when it is before the time grid starts."""
    if spec.static:  # whatever its date, or none
        return STATIC_STEP
    when = _item_datetime(item)
    index = step_index(spec.time, when)
    return time_key(step_start(spec.time, index)) if index >= 0 else None


def discover_time_steps(spec: MosaicSpec, client: Client) -> set[str]:
    """Time-step keys that have at least one scene in the area."""
    return {k for item in search_items(spec, client) if (k := item_time_key(spec, item)) is not None}


def search_time_step(
    spec: MosaicSpec, client: Client, step_key: str, catalog_url: str | None = None
) -> gpd.GeoDataFrame:
    """The scene table of one time step. ``catalog_url`` is the URL the client was opened with (it
    decides whether the catalog counts as local for the href policy; never the catalog's own self link)."""
    if spec.static:  # one layer of every item in the area, whatever its date
        window = None
    else:
        index = step_index(spec.time, datetime.fromisoformat(step_key))
        lo, hi = step_bounds(spec.time, index)
        window = f"{lo:%Y-%m-%dT%H:%M:%S}Z/{hi - timedelta(microseconds=1):%Y-%m-%dT%H:%M:%S.%f}Z"
    items = [i for i in search_items(spec, client, window) if item_time_key(spec, i) == step_key]
    return scene_table(spec, items, HrefPolicy.for_spec(spec, catalog_url))


def scene_table(spec: MosaicSpec, items: list[dict], policy: HrefPolicy | None = None) -> gpd.GeoDataFrame:
    """Validate items and tabulate them; raises CatalogError naming the first bad item.

    ``policy`` decides which hrefs may reach GDAL (default: the spec's, see ``HrefPolicy.for_spec``)."""
    policy = policy or HrefPolicy.for_spec(spec)
    signer = _catalog_signer(spec)
    rows = [_scene_row(spec, item, policy, signer(item)) for item in items]
    frame = pd.DataFrame(rows, columns=[*SCENE_COLUMNS, "geometry"])
    return gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")


def _catalog_signer(spec: MosaicSpec) -> Callable[[dict], dict | None]:
    """``stac.modifier`` at catalog time: proves it loads and signs every item (a broken signer fails
    here, naming the key or the item, before anything is written), and gives the signed hrefs that
    ``probe_missing_projection`` reads. The table keeps the unsigned ones."""
    if not spec.stac.modifier:
        return lambda item: None
    try:
        modifier = load_modifier(spec.stac.modifier)
    except ModifierError as exc:
        raise CatalogError(str(exc)) from None

    def sign(item: dict) -> dict:
        try:
            return signed_item(modifier, item)
        except ModifierError as exc:
            raise CatalogError(str(exc)) from None

    return sign


MISSING = "missing"  # an asset entry's key when the item lacks that (mask) asset: the reason, naming both


def scene_assets(table: pd.DataFrame) -> list[dict]:
    """Each scene's assets (asset key -> href, own grid, band metadata). A table from before per-asset
    grids existed gives every asset the item's grid and no band metadata, as it was then read."""
    if "assets" in table.columns:
        return [json.loads(a) for a in table["assets"]]
    return [
        {
            k: {"href": h, "crs": c, "shape": list(s), "transform": list(t), "bands": {}}
            for k, h in json.loads(hs).items()
        }
        for hs, c, s, t in zip(table["hrefs"], table["crs"], table["shape"], table["transform"])
    ]


def declared_scaling(spec: MosaicSpec, table: pd.DataFrame) -> list[tuple[float | None, float | None]]:
    """Each stored band's (scale, offset): the spec's own, else the first a scene of ``table`` declares;
    the count band (``composite.count_band``) has none."""
    found: list[tuple[float | None, float | None]] = []
    assets = scene_assets(table)
    for band in spec.bands:
        declared = (a[band.asset].get("bands", {}).get(str(band.index), {}) for a in assets if band.asset in a)
        pair = next(((d.get("scale"), d.get("offset")) for d in declared if d.get("scale") or d.get("offset")), None)
        found.append(
            (band.scale, band.offset) if band.scale is not None or band.offset is not None else pair or (None, None)
        )
    return found + [(None, None)] * (len(spec.band_names) - len(spec.bands))


def save_scene_table(table: gpd.GeoDataFrame, path: Location) -> None:
    """Write atomically (temp file + rename, or one PUT to an object store) so a crash never leaves half a table."""
    if is_remote(path):
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        write_bytes(path, buffer.getvalue())
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)


def load_scene_table(path: Location) -> gpd.GeoDataFrame:
    return gpd.read_parquet(io.BytesIO(read_bytes(path)) if is_remote(path) else path)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Cloud instance-metadata endpoints by name (their IPs are link-local, refused as such)
_METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.azure.internal", "instance-data"}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def resolved_ips(host: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """Every address ``host`` resolves to now (an IP literal is itself; a name that does not resolve gives
    none: GDAL could not reach it either). Cached per process: a catalog names few hosts."""
    literal = _host_ip(host)
    if literal is not None:
        return (literal,)
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return ()
    return tuple(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    ip = _host_ip(host)
    return host.lower() in _LOOPBACK_NAMES or (ip is not None and ip.is_loopback)


@dataclass(frozen=True)
class HrefPolicy:
    """Which scene hrefs may reach GDAL.

    ``prefixes``: when set, every href must lie under one of them (absolute paths or URL prefixes).
    ``local_catalog``: the STAC API is on loopback, so its items may name local files and private
    hosts; a remote catalog may not (``file:///etc/passwd`` from someone else's catalog is refused).
    Link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata) are refused whatever the policy.
    """

    prefixes: tuple[str, ...] | None = None
    local_catalog: bool = True

    @classmethod
    def for_spec(cls, spec: MosaicSpec, catalog_url: str | None = None) -> HrefPolicy:
        host = urlparse(catalog_url or spec.stac.url).hostname
        return cls(spec.stac.allowed_href_prefixes, _is_loopback_host(host))

    def _under_prefix(self, href: str, local_path: str | None) -> bool:
        for prefix in self.prefixes or ():
            if prefix.startswith(("/", "file://")):
                if local_path is None:
                    continue
                base = prefix.removeprefix("file://").rstrip("/") + "/"
                if local_path.startswith(base):
                    return True
            elif href.startswith(prefix):
                return True
        return False

    def require(self, href: str, item_id: str, local_path: str | None, host: str | None) -> None:
        if self.prefixes is not None:
            if not self._under_prefix(href, local_path):
                raise CatalogError(
                    f"item {item_id}: href {href!r} is outside stac.allowed_href_prefixes {list(self.prefixes)}"
                )
            return
        if self.local_catalog:
            return
        if local_path is not None:
            raise CatalogError(
                f"item {item_id}: href {href!r} is a local file named by a remote catalog; "
                "list its folder in stac.allowed_href_prefixes if that is intended"
            )
        ip = _host_ip(host or "")
        if _is_loopback_host(host) or (ip is not None and not ip.is_global):
            raise CatalogError(
                f"item {item_id}: href {href!r} points at a private or loopback host named by a remote catalog; "
                "list it in stac.allowed_href_prefixes if that is intended"
            )
        private = [str(a) for a in resolved_ips(host or "") if not a.is_global]
        if ip is None and private:  # a public-looking name that resolves inside (DNS rebinding, split horizon)
            raise CatalogError(
                f"item {item_id}: href {href!r}: host {host!r} resolves to private or loopback address "
                f"{', '.join(private)}, named by a remote catalog; list it in stac.allowed_href_prefixes if intended"
            )


def _refuse(href: str, item_id: str, why: str) -> CatalogError:
    return CatalogError(f"item {item_id}: href {href!r} {why}")


def gdal_path(href: str, item_id: str, policy: HrefPolicy | None = None) -> str:
    """Map an asset href to the path GDAL opens; refuse what must never reach GDAL.

    Always refused: control characters, ``..`` segments, GDAL virtual paths (``/vsicurl/...`` disguised
    as a local path), option separators in local paths, file URLs with a host, link-local/metadata
    hosts, schemes we do not read. ``policy`` (default: a local catalog, no prefix list) decides the rest.
    """
    policy = policy or HrefPolicy()
    if not isinstance(href, str) or not href:
        raise CatalogError(f"item {item_id}: asset has no href")
    if _CONTROL.search(href):
        raise _refuse(href, item_id, "contains control characters")
    parsed = urlparse(href)
    segments = unquote(parsed.path).split("/")
    if ".." in segments or "." in segments[1:]:
        raise _refuse(href, item_id, "has '.' or '..' path segments")
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise _refuse(href, item_id, "is a file URL on another host")
        path = unquote(parsed.path) if parsed.scheme == "file" else href
        if not path.startswith("/"):
            raise CatalogError(f"item {item_id}: href {href!r} is a relative path; scenes need absolute hrefs")
        if path.startswith("/vsi") or "?" in path or "&" in path:
            raise _refuse(href, item_id, "looks like a GDAL virtual path or connection string, not a file")
        policy.require(href, item_id, path, None)
        return path
    if parsed.scheme in ("http", "https"):
        host = parsed.hostname
        if not host:
            raise _refuse(href, item_id, "has no host")
        ip = _host_ip(host)
        if host.lower().rstrip(".") in _METADATA_HOSTS or (ip is not None and (ip.is_link_local or ip.is_multicast)):
            raise _refuse(href, item_id, "points at a link-local / cloud metadata address, which is never allowed")
        inside = [str(a) for a in resolved_ips(host) if a.is_link_local or a.is_multicast]
        if inside:
            raise _refuse(href, item_id, f"resolves to link-local / cloud metadata address {', '.join(inside)}")
        policy.require(href, item_id, None, host)
        return f"/vsicurl/{href}"
    if parsed.scheme in VSI_PREFIXES:
        if not parsed.netloc:
            raise _refuse(href, item_id, "has no bucket")
        policy.require(href, item_id, None, None)
        return vsi_path(href)
    raise CatalogError(f"item {item_id}: href {href!r} has scheme {parsed.scheme!r}, which is not allowed")


_BAD_ID = re.compile(r"[\x00-\x1f\x7f/\\]")


def _check_item_id(item: dict) -> str:
    """Item ids end up in logs, metadata and the GTI index; refuse any that could pass for a path."""
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise CatalogError(f"item {item_id!r}: has no usable id")
    if _BAD_ID.search(item_id) or item_id in (".", "..") or len(item_id) > 512:
        raise CatalogError(
            f"item {item_id!r}: id contains a path separator, a control character, is '.'/'..' or too long; refused"
        )
    return item_id


def _item_geometry(item_id: str, raw: dict | None):
    """The item's footprint (lon/lat): repaired when invalid, refused when missing, empty or crossing ±180° unsplit."""
    if not raw:
        raise CatalogError(f"item {item_id}: has no geometry")
    try:
        shape = shapely_shape(raw)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise CatalogError(f"item {item_id}: geometry is malformed ({exc})") from None
    if shape.is_empty:
        raise CatalogError(f"item {item_id}: geometry is empty")
    minx, miny, maxx, maxy = shape.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise CatalogError(f"item {item_id}: geometry bounds {list(shape.bounds)} are outside lon/lat range")
    parts = getattr(shape, "geoms", [shape])
    if any(p.bounds[2] - p.bounds[0] > 180 for p in parts):
        raise CatalogError(
            f"item {item_id}: geometry crosses the antimeridian without being split at ±180° (RFC 7946 §3.1.9); "
            "refused rather than read as a band around the globe"
        )
    return shape if shape.is_valid else make_valid(shape)


def _item_datetime(item: dict) -> datetime:
    props = item.get("properties", {})
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise CatalogError(f"item {item.get('id')}: has no datetime")
    when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _asset_entry(
    spec: MosaicSpec, item: dict, item_id: str, asset_key: str, policy: HrefPolicy, probe_href: str | None
) -> dict:
    """One asset's row of the scene table: GDAL path, own grid, and each spec band's metadata."""
    asset = item.get("assets", {}).get(asset_key)
    bands = [b for b in spec.bands if b.asset == asset_key]
    mask = mask_group(spec)
    if mask is not None and mask.asset == asset_key:
        bands += [b for b in mask.bands if b not in bands]
    if not isinstance(asset, dict):
        needed = f"band {bands[0].name!r}" if bands[0].name != "mask" else "the mask (spec.mask)"
        reason = f"item {item_id}: has no asset {asset_key!r} (needed for {needed})"
        if needed.startswith("the mask"):
            # recorded, not raised: the item's partitions fail naming it (or skip it: bad_scenes: skip),
            # and the other items of the time step are written
            return {MISSING: reason}
        raise CatalogError(reason)
    declared = band_count(asset)
    for band in bands:
        if declared and band.index > declared:
            raise CatalogError(
                f"item {item_id}: asset {asset_key!r} has {declared} bands, "
                f"band {band.name!r} asks for index {band.index}"
            )
    path = gdal_path(asset.get("href"), item_id, policy)
    props = item.get("properties", {})
    if mask is not None and mask.asset == asset_key:
        declared_type = band_metadata(asset, props, mask.bands[0]).data_type
        try:
            check_mask_values(spec.mask, declared_type, f"item {item_id}: asset {asset_key!r}")
        except ValueError as exc:
            raise CatalogError(str(exc)) from None
    try:
        grid = asset_grid(item_id, asset_key, asset, props)
    except MissingProjection:
        if not spec.stac.probe_missing_projection:
            raise
        grid = probe_asset_grid(spec, item_id, asset_key, probe_href or path)
    return {
        "href": path,
        "stac_href": asset.get("href"),  # as the catalog wrote it, unsigned: what stac.modifier signs again
        **grid.to_json(),
        "bands": {str(b.index): band_metadata(asset, props, b).to_json() for b in bands},
    }


def probe_asset_grid(spec: MosaicSpec, item_id: str, asset_key: str, path: str) -> AssetGrid:
    """Read one asset's header (``stac.probe_missing_projection``), under the writers' GDAL config."""
    import rasterio
    from rasterio.errors import RasterioError

    from .gdal_env import gdal_env

    try:
        with gdal_env(stac=spec.stac), rasterio.open(path) as src:
            if src.crs is None:
                raise CatalogError(f"item {item_id}: asset {asset_key!r}: the file has no CRS either")
            return AssetGrid(src.crs.to_wkt(), (src.height, src.width), tuple(src.transform)[:6])
    except RasterioError as exc:
        message = redact_text(str(exc), [path])  # a signed href's token must not reach the message
        raise CatalogError(f"item {item_id}: asset {asset_key!r}: probing its header failed: {message}") from None


def _scene_row(spec: MosaicSpec, item: dict, policy: HrefPolicy, signed: dict | None = None) -> dict:
    """``signed``: the item after ``stac.modifier`` (used only to probe headers; never stored)."""
    item_id = _check_item_id(item)
    props = item.get("properties", {})
    signed_assets = (signed or {}).get("assets", {})
    assets = {}
    try:
        for asset_key in dict.fromkeys([b.asset for b in spec.bands] + ([spec.mask.asset] if spec.mask else [])):
            probe = signed_assets.get(asset_key, {}).get("href") if signed else None
            probe_path = gdal_path(probe, item_id, policy) if probe else None
            assets[asset_key] = _asset_entry(spec, item, item_id, asset_key, policy, probe_path)
    except AssetMetadataError as exc:
        raise CatalogError(str(exc)) from None
    # the item's own grid: its finest asset's (footprints in the GTI, the anchor, the benchmarks)
    present = [a for a in assets.values() if MISSING not in a]
    finest = min(present, key=lambda a: math.hypot(a["transform"][0], a["transform"][3]))
    sort_value = props.get(spec.best_on_top.property)
    when = _item_datetime(item)
    return {
        "item_id": item_id,
        "collection": item.get("collection", ""),
        "datetime": pd.Timestamp(when),
        "time_step": item_time_key(spec, item),
        "updated": props.get("updated", ""),
        "sort_value": float(sort_value) if sort_value is not None else float("nan"),
        "crs": finest["crs"],
        "transform": finest["transform"],
        "shape": finest["shape"],
        "hrefs": json.dumps({k: a["href"] for k, a in assets.items() if MISSING not in a}, sort_keys=True),
        "assets": json.dumps(assets, sort_keys=True),
        "geometry": _item_geometry(item_id, item.get("geometry")),
    }
