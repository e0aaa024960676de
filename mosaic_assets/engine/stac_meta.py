"""What a STAC item says about each asset's grid and bands, resolved the way the public catalogs write it.

Projection (extension v1 and v2): each key is looked up on the asset first, then on the item:
Planetary Computer and Earth Search put ``proj:shape`` / ``proj:transform`` on each asset (Sentinel-2's
10, 20 and 60 m bands differ) and only ``proj:epsg`` / ``proj:code`` on the item; Landsat Collection 2
puts everything on the item. The CRS comes from ``proj:code`` (v2), ``proj:epsg`` (v1), ``proj:wkt2`` or
``proj:projjson``; a transform has 6 elements or 9 (the affine's last row, which must be 0, 0, 1).

Bands: ``raster:bands`` (STAC 1.0) or ``bands`` (STAC 1.1, whose raster fields are ``raster:scale`` /
``raster:offset``), then the asset's own fields, then the item's: ``nodata``, ``data_type``,
``scale``, ``offset``. A spec band's own ``nodata`` / ``scale`` / ``offset`` win over all of them.

Nothing here opens a file: a missing projection is reported (``MissingProjection``) and the catalog
decides whether to probe the header (``stac.probe_missing_projection``) or fail.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

from pyproj import CRS
from pyproj.exceptions import CRSError

from .spec import Band

PROJECTION_KEYS = ("proj:code", "proj:epsg", "proj:wkt2", "proj:projjson")


class AssetMetadataError(ValueError):
    """An asset's STAC metadata is unusable; the message names item, asset and key."""


class MissingProjection(AssetMetadataError):
    """Neither the asset nor the item carries this projection metadata (``missing`` names the keys)."""

    def __init__(self, message: str, missing: tuple[str, ...]):
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class AssetGrid:
    """An asset's own pixel grid: CRS (as the catalog wrote it), (height, width), GDAL-order affine
    (a, b, c, d, e, f) as rasterio writes it: x = a*col + b*row + c."""

    crs: str
    shape: tuple[int, int]
    transform: tuple[float, float, float, float, float, float]

    @property
    def pixel_size(self) -> float:
        return math.hypot(self.transform[0], self.transform[3])

    def to_json(self) -> dict:
        return {"crs": self.crs, "shape": list(self.shape), "transform": list(self.transform)}


@dataclass(frozen=True)
class BandMetadata:
    """What the catalog (or the spec) declares about one band of an asset; None where nothing does."""

    nodata: float | None = None
    data_type: str | None = None
    scale: float | None = None
    offset: float | None = None

    def to_json(self) -> dict:
        return {
            "nodata": _json_number(self.nodata),
            "data_type": self.data_type,
            "scale": self.scale,
            "offset": self.offset,
        }

    @classmethod
    def from_json(cls, raw: dict) -> BandMetadata:
        nodata = raw.get("nodata")
        return cls(_number(nodata), raw.get("data_type"), raw.get("scale"), raw.get("offset"))


def _json_number(value: float | None) -> float | str | None:
    """NaN and infinities as strings: JSON has no literal for them (``raster:bands`` writes "nan")."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # float("nan"), float("-inf") parse the strings catalogs write
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=1024)
def _parse_crs(text: str) -> str:
    CRS.from_user_input(text)
    return text


def _crs_of(where: dict) -> str | None:
    """The CRS a dict (asset or item properties) declares, as text pyproj parses; None when none."""
    if where.get("proj:code"):
        return str(where["proj:code"])
    if where.get("proj:epsg"):
        return f"EPSG:{int(where['proj:epsg'])}"
    if where.get("proj:wkt2"):
        return str(where["proj:wkt2"])
    if where.get("proj:projjson"):
        return json.dumps(where["proj:projjson"], sort_keys=True)
    return None


def asset_grid(item_id: str, asset_key: str, asset: dict, properties: dict) -> AssetGrid:
    """The asset's grid, each key from the asset first and the item as fallback."""
    crs = _crs_of(asset) or _crs_of(properties)
    shape = asset.get("proj:shape") or properties.get("proj:shape")
    transform = asset.get("proj:transform") or properties.get("proj:transform")
    missing = tuple(
        key
        for key, value in (("proj:code", crs), ("proj:shape", shape), ("proj:transform", transform))
        if value is None
    )
    where = f"item {item_id}: asset {asset_key!r}"
    if missing:
        raise MissingProjection(
            f"{where}: lacks projection metadata {list(missing)} on the asset and the item; the GTI needs it so "
            "GDAL never opens a scene to learn its shape (or set stac.probe_missing_projection: true)",
            missing,
        )
    try:
        crs = _parse_crs(crs)
    except CRSError:
        raise AssetMetadataError(
            f"{where}: unknown projection {crs[:200]!r} (proj:code / proj:epsg / proj:wkt2)"
        ) from None
    return AssetGrid(crs, _shape(where, shape), _transform(where, transform))


def _shape(where: str, raw) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in raw[:2]) if len(raw) == 2 else (None, None)
    except (TypeError, ValueError):
        height = width = None
    if not height or not width or height <= 0 or width <= 0:
        raise AssetMetadataError(f"{where}: proj:shape {raw!r} is not [height, width] of positive integers")
    return height, width


def _transform(where: str, raw) -> tuple[float, float, float, float, float, float]:
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (6, 9) or not all(math.isfinite(v) for v in values):
        raise AssetMetadataError(f"{where}: proj:transform {raw!r} must have 6 or 9 finite numbers")
    if len(values) == 9 and values[6:] != [0.0, 0.0, 1.0]:
        raise AssetMetadataError(f"{where}: proj:transform {raw!r}: the last row of a 9-element affine must be 0, 0, 1")
    a, b, c, d, e, f = values[:6]
    if a * e - b * d == 0:
        raise AssetMetadataError(f"{where}: proj:transform {raw!r} is degenerate (zero pixel size)")
    return a, b, c, d, e, f


def _declared_bands(asset: dict) -> list:
    return asset.get("raster:bands") or asset.get("bands") or asset.get("eo:bands") or []


def band_count(asset: dict) -> int | None:
    """How many bands the asset declares (``raster:bands``, ``bands`` or ``eo:bands``), if any."""
    declared = _declared_bands(asset)
    return len(declared) if isinstance(declared, list) and declared else None


def band_metadata(asset: dict, properties: dict, band: Band) -> BandMetadata:
    """The band's nodata, data type, scale and offset: spec band, declared band, asset, item."""
    declared = _declared_bands(asset)
    entry = declared[band.index - 1] if isinstance(declared, list) and len(declared) >= band.index else {}
    entry = entry if isinstance(entry, dict) else {}

    def first(*keys: str):
        for where in (entry, asset, properties):
            for key in keys:
                if where.get(key) is not None:
                    return where[key]
        return None

    nodata = band.nodata if band.nodata is not None else _number(first("nodata", "raster:nodata"))
    scale = band.scale if band.scale is not None else _number(first("scale", "raster:scale"))
    offset = band.offset if band.offset is not None else _number(first("offset", "raster:offset"))
    data_type = first("data_type", "raster:data_type")
    return BandMetadata(nodata, str(data_type) if data_type else None, scale, offset)
