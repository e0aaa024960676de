"""``anchor: native``: the scenes' own pixel grid, resolved ONCE into a concrete pixel fraction.

The grid derivation (``MosaicGrid.from_spec``) is pure and runs in many places (assets, checks, sensor,
repair schedule, benchmarks), so it never asks the catalog anything. Instead ``resolve_native`` runs
once where the specs are loaded (``definitions.build_definitions``): it reads the fraction cached in
``<data_root>/work/<name>/anchor.json`` or, the first time, learns it from ONE item of the catalog
and caches it, and returns the spec with ``anchor`` set to that fraction. Everything downstream sees
a concrete ``anchor: [fx, fy]``; a spec with ``edge``, ``center`` or a fraction is returned untouched,
with no I/O at all.

Semantics of a fraction (odc-geo's ``GeoBox.from_bbox(anchor=xy_(fx, fy))``, which odc-stac's
``anchor=`` passes through): pixel edges lie at ``fx * res`` (x) and ``fy * res`` (y) modulo ``res``.
So the native fraction of a scene whose geotransform is (a, b, c, d, e, f) is
``((c / |a|) mod 1, (f / |e|) mod 1)``: Landsat's origin x=399585 at 30 m gives 0.5 (``center``).
(odc-geo's ``GeoBox.anchor`` / ``extract_anchor`` and odc-stac's auto-detected anchor report x as
``1 - fx``: the same only for 0 and 0.5, so the fraction is computed here, not read back from odc-geo.)

``native`` only means something when the scenes are in the mosaic's CRS at its resolution: there,
every mosaic pixel is exactly one scene pixel and a nearest (or any) resampling copies it. Anywhere
else it is a SpecError naming ``anchor`` and what differs.

The cache is keyed by the spec's CRS and resolution (a spec that changes either learns again); it is
never refreshed otherwise, so the grid, and with it the store's fingerprint, stays put once learnt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime

from pyproj import CRS
from pystac_client import Client

from .catalog import area_bbox_4326, open_client
from .layout import MosaicLayout
from .object_store import Location, join, read_bytes, write_bytes
from .spec import Band, MosaicSpec, SpecError
from .stac_meta import AssetMetadataError, asset_grid

ANCHOR_CACHE = "anchor.json"
CACHE_VERSION = 1
EDGE_TOLERANCE = 1e-9  # of a pixel

ClientFactory = Callable[[MosaicSpec], Client]


def _crs_name(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.name


def _res_text(xres: float, yres: float, crs: CRS) -> str:
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    unit = {"metre": "m", "meter": "m", "degree": "°", "US survey foot": "ftUS", "foot": "ft"}.get(unit, unit)
    size = f"{xres:g}" if math.isclose(xres, yres, rel_tol=1e-9) else f"{xres:g} x {yres:g}"
    return f"{size} {unit}".strip()


def _fraction(origin: float, size: float) -> float:
    """Where pixel edges fall as a fraction of a pixel, in [0, 1). Not rounded (odc-geo multiplies it
    back by the pixel size: (c mod size) / size * size is c mod size to an ulp), only snapped to 0 within
    1e-9 pixel of an edge (decimal transforms carry float noise: 29.99999999997 is 0)."""
    frac = (origin % size) / size
    return 0.0 if frac < EDGE_TOLERANCE or frac > 1 - EDGE_TOLERANCE else frac


def _band_at_resolution(spec: MosaicSpec, item: dict) -> Band:
    """The first band whose asset is at the mosaic's resolution (Landsat ARD at 15 m: the panchromatic
    band, wherever the spec lists it), else the first band (whose mismatch the caller then explains)."""
    props = item.get("properties") or {}
    for band in spec.bands:
        asset = (item.get("assets") or {}).get(band.asset)
        try:
            grid = asset_grid(str(item.get("id")), band.asset, asset, props) if isinstance(asset, dict) else None
        except AssetMetadataError:
            continue
        if grid is not None and math.isclose(grid.pixel_size, spec.resolution, rel_tol=1e-9):
            return band
    return spec.bands[0]


def native_fraction(spec: MosaicSpec, item: dict) -> tuple[float, float]:
    """The anchor fraction that puts the mosaic grid's pixel edges on the pixel edges of ``item``'s
    asset at the mosaic's resolution (the first band's when none is): its ``proj:transform`` (the
    asset's, else the item's; 6 or 9 elements) and CRS (``proj:code``/``epsg``/``wkt2``/``projjson``,
    the asset's, else the item's). Pure. SpecError (naming ``anchor``) when the asset is not in the mosaic's CRS at its
    resolution, or lacks the metadata."""
    item_id = item.get("id", "<no id>")
    band = _band_at_resolution(spec, item)
    where = f"mosaic {spec.name}: anchor: native"
    props = item.get("properties") or {}
    asset = (item.get("assets") or {}).get(band.asset)
    if not isinstance(asset, dict):
        raise SpecError(
            f"{where} learns the scenes' pixel grid from the first band's asset, and item {item_id} has no "
            f"asset {band.asset!r} (band {band.name!r})"
        )
    try:  # the catalog's own rule for an asset's grid (asset first, item as fallback)
        grid = asset_grid(item_id, band.asset, asset, props)
    except AssetMetadataError as exc:
        raise SpecError(f"{where} learns the scenes' pixel grid from one item: {exc}; use edge or center") from None
    a, b, c, d, e, f = grid.transform
    if b != 0 or d != 0:
        raise SpecError(
            f"{where}: item {item_id} asset {band.asset!r} has a rotated transform {list(grid.transform)}; "
            "its pixels cannot sit on a north-up grid: use edge or center"
        )
    scene_crs = CRS.from_user_input(grid.crs)
    scene_crs_text = grid.crs if len(grid.crs) < 40 else _crs_name(scene_crs)  # a code as declared, else a name
    mosaic_crs = CRS.from_user_input(spec.crs)
    same_crs = scene_crs.equals(mosaic_crs, ignore_axis_order=True)
    res = spec.resolution
    same_res = math.isclose(abs(a), res, rel_tol=1e-9) and math.isclose(abs(e), res, rel_tol=1e-9)
    if not (same_crs and same_res):
        differs = " and ".join(w for w, same in (("CRS", same_crs), ("resolution", same_res)) if not same)
        raise SpecError(
            f"{where} needs the scenes' CRS and resolution (here the {differs} differ); item {item_id} asset "
            f"{band.asset!r} is {scene_crs_text} at {_res_text(abs(a), abs(e), scene_crs)}, the mosaic "
            f"{spec.crs} at {_res_text(res, res, mosaic_crs)}: use edge or center"
        )
    return _fraction(c, abs(a)), _fraction(f, abs(e))


def anchor_cache(spec: MosaicSpec, data_root: Location) -> Location:
    """Where a mosaic's learnt native anchor is cached: beside its scene tables and GTIs (shared by every
    process and pod that sees the data root)."""
    return join(MosaicLayout(spec, data_root).work_location, ANCHOR_CACHE)


def _read_cache(spec: MosaicSpec, path: Location) -> tuple[float, float] | None:
    """The cached fraction, or None when there is none for this CRS and resolution."""
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        fx, fy = (float(v) for v in doc["anchor"])
        crs, resolution = doc["crs"], float(doc["resolution"])
        if not (0 <= fx < 1 and 0 <= fy < 1):
            raise ValueError(f"fraction {doc['anchor']} is outside [0, 1)")
    except (ValueError, TypeError, KeyError) as exc:
        raise SpecError(
            f"mosaic {spec.name}: anchor: native: the cached anchor {path} is unreadable ({exc}); "
            "delete it to learn the scenes' pixel grid again"
        ) from None
    if crs != spec.crs or not math.isclose(resolution, spec.resolution, rel_tol=1e-12):
        return None  # learnt for another grid: learn again
    return fx, fy


def _first_item(spec: MosaicSpec, client: Client) -> dict | None:
    search = client.search(
        collections=list(spec.stac.collections),
        bbox=area_bbox_4326(spec),
        limit=1,
        max_items=1,
        sortby=[{"field": "properties.datetime", "direction": "asc"}, {"field": "id", "direction": "asc"}],
    )
    return next(iter(search.items_as_dicts()), None)


def _open_spec_client(spec: MosaicSpec) -> Client:
    return open_client(spec.stac.url)


def resolve_native(
    spec: MosaicSpec, data_root: Location, client_factory: ClientFactory = _open_spec_client
) -> MosaicSpec:
    """``spec`` with ``anchor: native`` replaced by the scenes' pixel fraction; any other spec as it is,
    without I/O. The fraction comes from ``<data_root>/work/<name>/anchor.json`` when that was learnt
    for the spec's CRS and resolution; else from ONE item (the earliest by datetime, then id, of the
    spec's collections inside its area: the same item for every process that asks), which is then
    cached. ``client_factory(spec)`` opens the STAC API (the deployment's URL and token)."""
    if spec.anchor != "native":
        return spec
    path = anchor_cache(spec, data_root)
    fraction = _read_cache(spec, path)
    if fraction is None:
        item = _first_item(spec, client_factory(spec))
        if item is None:
            raise SpecError(
                f"mosaic {spec.name}: anchor: native learns the scenes' pixel grid from the catalog and needs at "
                f"least one item, but collections {list(spec.stac.collections)} have none inside the area yet "
                "(or do not exist); use anchor: edge or center (or an [x, y] fraction) until then"
            )
        fraction = native_fraction(spec, item)
        record = {
            "version": CACHE_VERSION,
            "anchor": list(fraction),
            "crs": spec.crs,
            "resolution": spec.resolution,
            "item": item.get("id"),
            "collection": item.get("collection"),
            "asset": spec.bands[0].asset,
            "learnt": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_bytes(path, json.dumps(record, indent=2).encode())
    return spec.model_copy(update={"anchor": fraction})
