"""STAC search -> scene table: one row per scene with everything the GTI needs, so no scene is probed.

The scene table is a GeoDataFrame (footprints in EPSG:4326) saved as GeoParquet. The href policy
(which schemes may reach GDAL, and how they map to GDAL paths) lives here too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import geopandas as gpd
import pandas as pd
from odc.geo import geom
from pystac_client import Client
from shapely.geometry import shape as shapely_shape

from .keys import time_key
from .object_store import VSI_PREFIXES, Location, is_remote, read_bytes, vsi_path, write_bytes
from .spec import MosaicSpec
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
)


class CatalogError(ValueError):
    """A STAC item cannot be used; the message names the item and what is wrong."""


def open_client(url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = Client.open(url, headers=headers)
    client.add_conforms_to("SORT")  # pgstac sorts, but does not advertise it
    return client


def area_bbox_4326(spec: MosaicSpec) -> tuple[float, float, float, float]:
    """The spec's area as a lon/lat bbox, for STAC's ``bbox`` parameter."""
    box = geom.box(*spec.area.bbox, spec.area.crs)
    if spec.area.crs != "EPSG:4326":
        box = box.to_crs("EPSG:4326", resolution=spec.resolution)
    b = box.boundingbox
    return (b.left, b.bottom, b.right, b.top)


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
    yield from search.items_as_dicts()


def item_time_key(spec: MosaicSpec, item: dict) -> str | None:
    """The time step an item falls in, or None when it is before the time grid starts."""
    when = _item_datetime(item)
    index = step_index(spec.time, when)
    return time_key(step_start(spec.time, index)) if index >= 0 else None


def discover_time_steps(spec: MosaicSpec, client: Client) -> set[str]:
    """Time-step keys that have at least one scene in the area."""
    return {k for item in search_items(spec, client) if (k := item_time_key(spec, item)) is not None}


def search_time_step(spec: MosaicSpec, client: Client, step_key: str) -> gpd.GeoDataFrame:
    """The scene table of one time step."""
    index = step_index(spec.time, datetime.fromisoformat(step_key))
    lo, hi = step_bounds(spec.time, index)
    window = f"{lo:%Y-%m-%dT%H:%M:%S}Z/{hi - timedelta(microseconds=1):%Y-%m-%dT%H:%M:%S.%f}Z"
    items = [i for i in search_items(spec, client, window) if item_time_key(spec, i) == step_key]
    return scene_table(spec, items)


def scene_table(spec: MosaicSpec, items: list[dict]) -> gpd.GeoDataFrame:
    """Validate items and tabulate them; raises CatalogError naming the first bad item."""
    rows = [_scene_row(spec, item) for item in items]
    frame = pd.DataFrame(rows, columns=[*SCENE_COLUMNS, "geometry"])
    return gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")


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


def gdal_path(href: str, item_id: str) -> str:
    """Map an asset href to the path GDAL opens; refuse schemes we do not read."""
    parsed = urlparse(href)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else href
        if not path.startswith("/"):
            raise CatalogError(f"item {item_id}: href {href!r} is a relative path; scenes need absolute hrefs")
        return path
    if parsed.scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if parsed.scheme in VSI_PREFIXES:
        return vsi_path(href)
    raise CatalogError(f"item {item_id}: href {href!r} has scheme {parsed.scheme!r}, which is not allowed")


def _item_datetime(item: dict) -> datetime:
    props = item.get("properties", {})
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise CatalogError(f"item {item.get('id')}: has no datetime")
    when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _scene_row(spec: MosaicSpec, item: dict) -> dict:
    item_id = item.get("id", "<no id>")
    props = item.get("properties", {})
    missing = [k for k in ("proj:transform", "proj:shape") if k not in props]
    crs = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else props.get("proj:wkt2"))
    if missing or not crs:
        raise CatalogError(
            f"item {item_id}: lacks projection metadata {missing or ['proj:code']}; "
            "the GTI needs it so GDAL never has to open a scene to learn its shape"
        )
    hrefs = {}
    for band in spec.bands:
        asset = item.get("assets", {}).get(band.asset)
        if asset is None:
            raise CatalogError(f"item {item_id}: has no asset {band.asset!r} (needed for band {band.name!r})")
        declared = asset.get("eo:bands") or asset.get("raster:bands") or asset.get("bands")
        if declared and band.index > len(declared):
            raise CatalogError(
                f"item {item_id}: asset {band.asset!r} has {len(declared)} bands, "
                f"band {band.name!r} asks for index {band.index}"
            )
        hrefs[band.asset] = gdal_path(asset["href"], item_id)
    sort_value = props.get(spec.best_on_top.property)
    when = _item_datetime(item)
    return {
        "item_id": item_id,
        "collection": item.get("collection", ""),
        "datetime": pd.Timestamp(when),
        "time_step": item_time_key(spec, item),
        "updated": props.get("updated", ""),
        "sort_value": float(sort_value) if sort_value is not None else float("nan"),
        "crs": crs,
        "transform": [float(v) for v in props["proj:transform"][:6]],
        "shape": [int(v) for v in props["proj:shape"][:2]],
        "hrefs": json.dumps(hrefs, sort_keys=True),
        "geometry": shapely_shape(item["geometry"]) if item.get("geometry") else None,
    }
