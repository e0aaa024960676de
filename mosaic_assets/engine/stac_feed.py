"""Incremental STAC polling that never loses an item.

The position in the feed is ``(updated, id)`` of the last item seen. Items are read in
``(updated, id)`` order with the filter ``updated > U OR (updated = U AND id > I)``, so items
sharing one ``updated`` timestamp (even across a page boundary) are all seen, and an item
re-published with a newer ``updated`` comes round again. A poll does bounded work (item count and
wall time) and hands back where it stopped; the next poll continues from there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pystac_client import Client

from .catalog import area_bbox_4326, require_collections
from .spec import MosaicSpec

EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class FeedPosition:
    """The last (updated, id) consumed; serialised as the sensor cursor."""

    updated: str = EPOCH
    item_id: str = ""

    def to_json(self) -> str:
        return json.dumps({"updated": self.updated, "id": self.item_id})

    @classmethod
    def from_json(cls, raw: str | None) -> FeedPosition:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(_normalise(data["updated"]), str(data["id"]))


@dataclass(frozen=True)
class FeedPage:
    items: list[dict]
    position: FeedPosition
    exhausted: bool  # False when the poll stopped at its bound and more items wait


def _normalise(timestamp: str) -> str:
    """An RFC 3339 UTC timestamp with microseconds, as pgstac compares them as timestamps."""
    when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def after(position: FeedPosition) -> dict:
    """CQL2-JSON: strictly after ``position`` in (updated, id) order."""
    updated = {"property": "updated"}
    ts = {"timestamp": position.updated}
    return {
        "op": "or",
        "args": [
            {"op": ">", "args": [updated, ts]},
            {
                "op": "and",
                "args": [
                    {"op": "=", "args": [updated, ts]},
                    {"op": ">", "args": [{"property": "id"}, position.item_id]},
                ],
            },
        ],
    }


def poll(
    spec: MosaicSpec, client: Client, position: FeedPosition, max_items: int = 10_000, max_seconds: float = 30.0
) -> FeedPage:
    """Items of the spec's collections and area strictly after ``position``, oldest update first."""
    require_collections(spec, client)
    started = time.monotonic()
    search = client.search(
        collections=list(spec.stac.collections),
        bbox=area_bbox_4326(spec),
        filter=after(position),
        filter_lang="cql2-json",
        sortby=[{"field": "properties.updated", "direction": "asc"}, {"field": "id", "direction": "asc"}],
        limit=spec.stac.query_limit,
    )
    items: list[dict] = []
    exhausted = True
    for page in search.pages_as_dicts():
        items.extend(page.get("features", []))
        if len(items) >= max_items or time.monotonic() - started > max_seconds:
            exhausted = False
            break
    if items:
        last = items[-1]
        position = FeedPosition(_normalise(last["properties"]["updated"]), last["id"])
    return FeedPage(items, position, exhausted)
