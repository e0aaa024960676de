"""STAC items in the shapes four public catalogs serve, over small local rasters with exactly the declared grids.

Why: the synthetic demo items are in one tidy shape (``proj:code``, one multi-band asset); real catalogs are not.
Each fixture reproduces one catalog's item layout field by field, written by this module (no item JSON or code
was copied), with hrefs pointing at local files. The shapes followed, checked against public examples:

- ``pc_s2_l2a``, Planetary Computer ``sentinel-2-l2a`` (as in opendatacube/odc-stac
  tests/data/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json): STAC 1.0.0, projection v1.0.0 with
  only ``proj:epsg`` on the item; per asset ``proj:bbox``/``proj:shape``/``proj:transform`` (6 floats; 10, 20
  and 60 m grids differ), ``gsd``, ``eo:bands`` (not on SCL), no ``raster:bands`` (PC declares no scale, offset or
  nodata); asset keys ``B01 B04 B08 B11 SCL``; the SCL title's "classfication" typo; ``s2:*`` properties.
- ``es_s2_l2a``, Earth Search v1 ``sentinel-2-l2a`` (as in geopython/eodm tests/data/test_data.py, 2023 items):
  lower-case keys ``coastal red nir swir16 scl``; ``proj:epsg`` on the item (projection v1.0.0; no
  ``proj:code`` in the items seen); per asset ``proj:shape`` and an *integer* 6-element ``proj:transform``;
  ``raster:bands`` with ``nodata: 0``, ``data_type``, ``bits_per_sample: 15``, ``spatial_resolution`` and
  ``scale: 0.0001``/``offset: -0.1`` on reflectance (not on scl); ``-jp2`` twins on ``s3://sentinel-s2-l2a``
  (requester pays; no local file); ``mgrs:*``, ``grid:code``, ``earthsearch:*`` properties.
- ``landsat_c2_l2``, Planetary Computer ``landsat-c2-l2`` (as stactools-packages/landsat
  examples/landsat-c2-l2/LC09_L2SP_010065_20220129_02_T1 builds it): ``proj:epsg``/``proj:shape``/
  ``proj:transform`` on the item only (all assets on one 30 m grid, pixel edges at 15 mod 30, so centres on
  multiples of 30); ``raster:bands`` scale 2.75e-05, offset -0.2, nodata 0 on SR bands; ``qa_pixel`` uint16,
  nodata 1 (the fill bit), ``classification:bitfields``. The files say ``AREA_OR_POINT=Point`` as USGS's do.
- ``landsat_ard``, Digital Earth Australia ``ga_ls8c_ard_3`` (as opendatacube/eo-datasets
  tests/integration/data/tostac/ga_ls8c_ard_3-1-0_088080_2020-05-25_final.stac-item_expected.json and
  opendatacube/datacube-explorer integration_tests/test_eo3_support.py show it): UUID ids, projection v1.1.0,
  ``proj:epsg`` on item and assets, 9-element ``proj:transform``, northern-hemisphere UTM codes with negative
  northings, ``nbart_*`` int16 with nodata -999 declared only in the files (no ``raster:bands``), ``oa_fmask``
  uint8, and ``nbart_panchromatic`` on its own 15 m grid (origin +7.5 m, shape 2n-1) next to the 30 m one.

Every raster is full size (10980² for a Sentinel-2 tile, ~7800² for a Landsat scene) but SPARSE: tiled 512,
DEFLATE, ``SPARSE_OK``, internal overviews, with pixels only in a window around the fixture's test area, so
files hold exactly the declared shapes and transforms yet stay small. Subsets of each catalog's assets are
generated (those a mosaic uses, plus a 60 m band); assets without a local file are non-raster or ``s3://``
twins, as in the real items, and appear only in the item, never in ``files``.

Scenes (``items[0]``'s UTC day always holds at least two overlapping scenes; the lowest ``eo:cloud_cover`` is
always the scene with a nodata edge in the area, so a mask bug shows as the wrong scene's pixels):

- Sentinel-2 (both shapes): tiles 32TQT and 33TTN of one 2024-06-12 datatake (R022), whose swath ends east of
  the area's middle: on that day two zones overlap over ~77 % of the area and the rest is nodata. A 2024-06-15
  pass (R065, 33TTN, least cloudy) covers the area's east ~70 %: a monthly mosaic is covered, z-ordered.
- Landsat C2: path 193, rows 027 and 028 of one pass, one zone (the same 30 m lattice); row 028's frame edge
  runs through the area.
- Landsat ARD: path 089, rows 083 (zone 56) and 084 (zone 55) of one pass; row 084's frame edge runs through it.

Content is textured (multi-scale fields + grain), reflectance-like, the same ground seen by every band of a
scene (coarser bands are area averages of it), with class bands that agree with it (clouds bright and SCL 8/9,
QA_PIXEL 22280, fmask 2; shadows dark and 3 / 23888 / 3). Deterministic: fixed seeds.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.polygon import orient

from mosaic_assets.demo.scenes import _field, collection_document
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items

FIXTURE_NAMES = ("pc_s2_l2a", "es_s2_l2a", "landsat_c2_l2", "landsat_ard")
GENERATOR_VERSION = 1  # bump when the same name makes other files or items (cached fixtures are rebuilt)
REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SPECS = {
    "pc_s2_l2a": REPO / "specs" / "planetary_computer_s2_l2a.yaml",
    "es_s2_l2a": REPO / "specs" / "earth_search_s2_l2a.yaml",
    "landsat_c2_l2": REPO / "specs" / "landsat_c2_l2.yaml",
}
# An equal-area CRS in each fixture's region, for reprojection tests: EPSG:3035 (LAEA Europe) is meaningless for
# the Australian scenes (a 3.9 x 3 km area becomes a 16 x 4 km sliver), DEA's own is Australian Albers.
EQUAL_AREA_CRS = {
    "pc_s2_l2a": "EPSG:3035",
    "es_s2_l2a": "EPSG:3035",
    "landsat_c2_l2": "EPSG:3035",
    "landsat_ard": "EPSG:3577",
}
WINDOW_MARGIN_M = 1500.0  # pixels exist this far around the test area: room for reprojection and resampling kernels
BLOCK = 512
GDAL_CACHE_MB = 64  # creating overviews reads every (sparse) block: GDAL's default cache then grew to 400+ MB
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass(frozen=True)
class CatalogFixture:
    """One public catalog's items over local files, plus what a test needs to mosaic them."""

    name: str  # "pc_s2_l2a" | "es_s2_l2a" | "landsat_c2_l2" | "landsat_ard"
    collection: str  # the collection id as the public catalog names it
    items: list[dict]  # STAC items in the public catalog's shape, hrefs = absolute local paths
    collection_doc: dict  # a STAC collection covering the items
    bands: list[dict]  # spec ``bands:`` entries for a reasonable mosaic of this catalog
    native_crs: str
    native_resolution: float  # the finest band's resolution
    area_native: tuple[float, float, float, float]  # test area in native_crs, aligned to its pixel edges
    files: dict[str, dict[str, str]]  # item id -> asset key -> local path


def make_fixture(name: str, folder: Path) -> CatalogFixture:
    """Write fixture ``name`` into ``folder/name`` (reused when an identical generation is already there)."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown catalog fixture {name!r}; known: {FIXTURE_NAMES}")
    out = Path(folder).resolve() / name
    cached = _load_cached(out)
    if cached is not None:
        return cached
    out.mkdir(parents=True, exist_ok=True)
    fixture = _BUILDERS[name](out)
    (out / "fixture.json").write_text(json.dumps({"version": GENERATOR_VERSION, "fixture": asdict(fixture)}))
    return fixture


def load_fixture(api_url: str, fixture: CatalogFixture, collection_id: str | None = None) -> str:
    """Upsert the fixture's collection and items into a running STAC API; returns the collection id used.

    ``collection_id`` loads them under another id (both Sentinel-2 fixtures are ``sentinel-2-l2a``, as their
    catalogs name them, so they cannot share one API under their own id). The fixture itself is not changed."""
    cid = collection_id or fixture.collection
    upsert_collection(api_url, {**copy.deepcopy(fixture.collection_doc), "id": cid})
    items = [{**copy.deepcopy(item), "collection": cid} for item in fixture.items]
    upsert_items(api_url, cid, items)
    return cid


def example_spec_for(name: str) -> Path:
    """The example spec in ``specs/`` for the public catalog fixture ``name`` mimics (landsat_ard has none)."""
    if name not in EXAMPLE_SPECS:
        raise LookupError(f"no example spec for catalog fixture {name!r}; there are for {sorted(EXAMPLE_SPECS)}")
    return EXAMPLE_SPECS[name]


def _load_cached(out: Path) -> CatalogFixture | None:
    stamp = out / "fixture.json"
    if not stamp.exists():
        return None
    saved = json.loads(stamp.read_text())
    if saved.get("version") != GENERATOR_VERSION:
        return None
    raw = saved["fixture"]
    fixture = CatalogFixture(**{**raw, "area_native": tuple(raw["area_native"])})
    paths = [Path(p) for assets in fixture.files.values() for p in assets.values()]
    return fixture if all(p.exists() for p in paths) else None


# --------------------------------------------------------------------------------------------- rasters


@dataclass(frozen=True)
class Raster:
    """One asset file as its catalog declares it: grid, dtype, nodata, and what it shows."""

    key: str
    filename: str
    kind: str  # a reflectance kind of SIGNATURES, or a class encoder's name ("scl", "qa_pixel", "fmask")
    transform: Affine
    shape: tuple[int, int]
    dtype: str
    nodata: float
    point: bool = False  # AREA_OR_POINT=Point, as USGS writes Landsat (GDAL still reports the corner transform)

    @property
    def resolution(self) -> float:
        return self.transform.a


@dataclass(frozen=True)
class Scene:
    """One item to generate: where it is, which files it has, how cloudy its window is."""

    item_id: str
    epsg: int
    footprint: Polygon  # valid data, in the scene's CRS
    rasters: tuple[Raster, ...]
    cloud_fraction: float
    seed: int
    meta: dict = field(default_factory=dict)  # catalog-specific facts for the item builder


@dataclass(frozen=True)
class Product:
    """How a catalog encodes reflectance and classes as pixels."""

    to_dn: Callable[[np.ndarray], np.ndarray]
    classes: dict[str, Callable[[dict[str, np.ndarray], np.random.Generator], np.ndarray]]


@dataclass(frozen=True)
class Signature:
    """Reflectance of surfaces in one band: vegetation dark in red, bright in nir; snow dark in swir."""

    base: float
    bright: float
    veg: float
    water: float
    snow: float
    cloud: float


SIGNATURES = {
    "coastal": Signature(0.075, 0.015, -0.010, 0.080, 0.85, 0.62),
    "blue": Signature(0.065, 0.020, -0.015, 0.070, 0.85, 0.60),
    "green": Signature(0.085, 0.025, 0.010, 0.060, 0.82, 0.58),
    "red": Signature(0.095, 0.030, -0.035, 0.040, 0.80, 0.57),
    "nir": Signature(0.260, 0.035, 0.090, 0.020, 0.72, 0.58),
    "swir16": Signature(0.220, 0.040, -0.025, 0.010, 0.10, 0.40),
    "swir22": Signature(0.150, 0.035, -0.030, 0.008, 0.06, 0.30),
    "pan": Signature(0.090, 0.030, -0.020, 0.050, 0.80, 0.57),
}
GRAIN = 0.004  # per-pixel noise in reflectance units, at every band's own resolution: a one-pixel shift shows


def _field_hw(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return _field(rng, max(height, width))[:height, :width].astype(np.float32)


def _ground(rng: np.random.Generator, height: int, width: int, resolution: float, cloud_fraction: float) -> dict:
    """What the ground and the sky look like on the finest grid: the fields every band is derived from."""
    brightness, vegetation, wetness = (_field_hw(rng, height, width) for _ in range(3))
    water = (wetness > np.quantile(wetness, 0.94)).astype(np.float32)
    snow = ((brightness > np.quantile(brightness, 0.985)) & (water == 0)).astype(np.float32)
    shift = max(1, round(300.0 / resolution))  # shadows fall ~300 m north-west of their clouds
    sky = _field_hw(rng, height + shift, width + shift)
    cloud, cast = sky[shift:, shift:], sky[:height, :width]
    threshold = np.quantile(cloud, 1.0 - cloud_fraction)
    alpha = np.clip((cloud - threshold) / 0.6, 0.0, 1.0)
    shadow = np.clip((cast - threshold) / 0.6, 0.0, 1.0) * (1.0 - alpha)
    cirrus_field = _field_hw(rng, height, width)
    cirrus = np.clip((cirrus_field - np.quantile(cirrus_field, 1.0 - cloud_fraction / 2)) / 0.8, 0.0, 1.0)
    return {
        "brightness": brightness,
        "vegetation": vegetation,
        "water": water,
        "snow": snow,
        "alpha": alpha,
        "shadow": shadow,
        "cirrus": cirrus,
    }


def _reflectance(ground: dict, kind: str) -> np.ndarray:
    s = SIGNATURES[kind]
    surface = s.base + s.bright * ground["brightness"] + s.veg * ground["vegetation"]
    surface = np.where(ground["water"] > 0, s.water + 0.004 * ground["brightness"], surface)
    surface = np.where(ground["snow"] > 0, s.snow, np.maximum(surface, 0.002))  # dark, never negative
    seen = (1.0 - ground["alpha"]) * surface + ground["alpha"] * s.cloud
    return (seen * (1.0 - 0.6 * ground["shadow"]) + 0.05 * ground["cirrus"]).astype(np.float32)


def _resample(values: np.ndarray, src: Affine, dst: Affine, shape: tuple[int, int], crs: str) -> np.ndarray:
    """Area-average fine values onto a coarser grid in the same CRS (exact, partial pixels weighted)."""
    if src == dst and values.shape == shape:
        return values
    out = np.empty(shape, dtype=np.float32)
    rasterio.warp.reproject(
        values,
        out,
        src_transform=src,
        src_crs=crs,
        dst_transform=dst,
        dst_crs=crs,
        resampling=Resampling.average,
    )
    return out


def _window(transform: Affine, shape: tuple[int, int], bounds: tuple[float, ...]) -> Window:
    """The whole pixels of a (north-up) grid that ``bounds`` touches, clipped to the grid."""
    (c0, r0), (c1, r1) = ~transform * (bounds[0], bounds[3]), ~transform * (bounds[2], bounds[1])
    col0, row0 = max(0, math.floor(c0)), max(0, math.floor(r0))
    col1, row1 = min(shape[1], math.ceil(c1)), min(shape[0], math.ceil(r1))
    return Window(col0, row0, col1 - col0, row1 - row0)


def _overview_factors(shape: tuple[int, int]) -> list[int]:
    """Halve until an overview fits one block, as GDAL's COG driver does with OVERVIEWS=AUTO."""
    factors, factor = [], 2
    while math.ceil(max(shape) / (factor // 2)) > BLOCK:
        factors.append(factor)
        factor *= 2
    return factors


def _write_sparse(path: Path, raster: Raster, crs: str, window: Window, data: np.ndarray) -> None:
    """Full-size tiled GeoTIFF holding only ``window``: unwritten blocks stay sparse (read back as nodata).

    The overview levels are created while the raster is still empty (GDAL then writes no block), and only the
    window's part of each is computed, here: GDAL's own averaging walks all 10980² pixels (measured 0.8-1.5 s
    per file against ~0.15 s this way; the bulk of generating a fixture)."""
    profile = {
        "driver": "GTiff",
        "width": raster.shape[1],
        "height": raster.shape[0],
        "count": 1,
        "dtype": raster.dtype,
        "crs": crs,
        "transform": raster.transform,
        "nodata": raster.nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "DEFLATE",
        "predictor": 3 if np.dtype(raster.dtype).kind == "f" else 2,
        "sparse_ok": True,
    }
    factors = _overview_factors(raster.shape)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        with rasterio.open(path, "w", **profile) as dst:
            if raster.point:
                dst.update_tags(AREA_OR_POINT="Point")
            dst.build_overviews(factors, Resampling.nearest)
            dst.write(data, 1, window=window)
        for level in range(1, len(factors) + 1):
            _write_overview(path, level, raster, crs, window, data)


def _write_overview(path: Path, level: int, raster: Raster, crs: str, window: Window, data: np.ndarray) -> None:
    """Overview ``level``'s pixels over ``window``: nodata-aware area averages (classes: the nearest pixel).

    Equal to gdaladdo's AVERAGE at exact ratios (x2 checked); at 10980 -> 1373 and deeper levels GDAL rounds
    pixel boundaries and works level from level, so its values differ there. Either way they are averages
    that full-resolution reads never return, which is what ``use_overviews`` tests need."""
    resampling = Resampling.average if raster.kind in SIGNATURES else Resampling.nearest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # an overview directory has no georeferencing
        with rasterio.open(f"GTIFF_DIR:{level + 1}:{path}", "r+") as ovr:
            shape = ovr.shape
            transform = raster.transform * Affine.scale(raster.shape[1] / shape[1], raster.shape[0] / shape[0])
            target = _window(transform, shape, rasterio.windows.bounds(window, raster.transform))
            out = np.full((int(target.height), int(target.width)), raster.nodata, dtype=raster.dtype)
            rasterio.warp.reproject(
                data,
                out,
                src_transform=rasterio.windows.transform(window, raster.transform),
                src_crs=crs,
                src_nodata=raster.nodata,
                dst_transform=rasterio.windows.transform(target, transform),
                dst_crs=crs,
                dst_nodata=raster.nodata,
                resampling=resampling,
            )
            ovr.write(out, 1, window=target)


def _valid(footprint: Polygon, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the footprint."""
    return rasterio.features.geometry_mask([mapping(footprint)], shape, transform, invert=True)


def _render_scene(scene: Scene, product: Product, bounds: tuple[float, float, float, float], out: Path) -> dict:
    """Write the scene's files; returns {"files": {key: path}, key: class pixels (valid ones)} for the item."""
    crs = f"EPSG:{scene.epsg}"
    rng = np.random.default_rng(scene.seed)
    fine = min(scene.rasters, key=lambda r: r.resolution)
    coarsest = max(r.resolution for r in scene.rasters)
    pad = (bounds[0] - coarsest, bounds[1] - coarsest, bounds[2] + coarsest, bounds[3] + coarsest)
    fine_window = _window(fine.transform, fine.shape, pad)
    fine_tf = rasterio.windows.transform(fine_window, fine.transform)
    ground = _ground(rng, int(fine_window.height), int(fine_window.width), fine.resolution, scene.cloud_fraction)
    folder = out / scene.item_id
    folder.mkdir(parents=True, exist_ok=True)
    result: dict = {"files": {}}
    for raster in scene.rasters:
        window = _window(raster.transform, raster.shape, bounds)
        tf = rasterio.windows.transform(window, raster.transform)
        shape = (int(window.height), int(window.width))
        if raster.kind in SIGNATURES:
            refl = _resample(_reflectance(ground, raster.kind), fine_tf, tf, shape, crs)
            data = product.to_dn(refl + rng.normal(0.0, GRAIN, shape).astype(np.float32))
        else:
            fields = {k: _resample(v, fine_tf, tf, shape, crs) for k, v in ground.items()}
            data = product.classes[raster.kind](fields, rng)
        valid = _valid(scene.footprint, tf, shape)
        data = np.where(valid, data, raster.nodata).astype(raster.dtype)
        path = folder / raster.filename
        _write_sparse(path, raster, crs, window, data)
        result["files"][raster.key] = str(path)
        if raster.kind not in SIGNATURES:
            result[raster.key] = data[valid]
    return result


# --------------------------------------------------------------------------------------------- classes

SCL_NAMES = {
    0: "no_data",
    1: "saturated_defective_pixel",
    2: "dark_features",  # "dark area pixels"
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "medium_proba_clouds",
    9: "high_proba_clouds",
    10: "thin_cirrus",
    11: "snow_ice",
}


def _scl(f: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Sentinel-2 L2A scene classification: later rules win, as clouds hide what is under them."""
    scl = np.where(f["vegetation"] > -0.3, 4, 5).astype(np.uint8)
    scl[f["brightness"] < np.quantile(f["brightness"], 0.02)] = 2
    scl[f["snow"] > 0.5] = 11
    scl[f["water"] > 0.5] = 6
    scl[f["shadow"] > 0.35] = 3
    scl[f["cirrus"] > 0.35] = 10
    scl[f["alpha"] > 0.15] = 8
    scl[f["alpha"] > 0.6] = 9
    sprinkle = rng.random(scl.shape)
    scl[sprinkle < 0.002] = 7
    scl[sprinkle < 0.0001] = 1
    return scl


def qa_pixel_value(
    *,
    fill: bool = False,
    dilated: bool = False,
    cirrus: bool = False,
    cloud: bool = False,
    shadow: bool = False,
    snow: bool = False,
    water: bool = False,
    cloud_conf: int = 1,
    shadow_conf: int = 1,
    snow_conf: int = 1,
    cirrus_conf: int = 1,
) -> int:
    """Landsat Collection 2 QA_PIXEL (OLI) from its bits: e.g. clear land 21824, high-confidence cloud 22280."""
    if fill:
        return 1
    clear = not (cloud or dilated)
    bits = [(dilated, 1), (cirrus, 2), (cloud, 3), (shadow, 4), (snow, 5), (clear, 6), (water, 7)]
    value = sum(1 << bit for flag, bit in bits if flag)
    return value | cloud_conf << 8 | shadow_conf << 10 | snow_conf << 12 | cirrus_conf << 14


QA = {
    "clear": qa_pixel_value(),  # 21824
    "water": qa_pixel_value(water=True),  # 21952
    "cloud_medium": qa_pixel_value(cloud_conf=2),  # 22080: clear, medium cloud confidence
    "cloud": qa_pixel_value(cloud=True, cloud_conf=3),  # 22280
    "dilated": qa_pixel_value(dilated=True),  # 21762
    "shadow": qa_pixel_value(shadow=True, shadow_conf=3),  # 23888
    "snow": qa_pixel_value(snow=True, snow_conf=3),  # 30048
    "cirrus": qa_pixel_value(cirrus=True, cirrus_conf=3),  # 54596
}


def _qa_pixel(f: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    qa = np.full(f["alpha"].shape, QA["clear"], dtype=np.uint16)
    qa[f["water"] > 0.5] = QA["water"]
    qa[f["snow"] > 0.5] = QA["snow"]
    qa[f["shadow"] > 0.35] = QA["shadow"]
    qa[f["cirrus"] > 0.35] = QA["cirrus"]
    qa[f["alpha"] > 0.15] = QA["cloud_medium"]
    cloud = f["alpha"] > 0.5
    qa[_dilate(cloud, 2) & ~cloud] = QA["dilated"]
    qa[cloud] = QA["cloud"]
    return qa


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a mask by ``radius`` pixels (a square neighbourhood), as USGS dilates clouds."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


FMASK_NAMES = {0: "nodata", 1: "clear", 2: "cloud", 3: "cloud_shadow", 4: "snow", 5: "water"}


def _fmask(f: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    fmask = np.ones(f["alpha"].shape, dtype=np.uint8)
    fmask[f["water"] > 0.5] = 5
    fmask[f["snow"] > 0.5] = 4
    fmask[f["shadow"] > 0.35] = 3
    fmask[f["alpha"] > 0.3] = 2
    return fmask


def _s2_dn(refl: np.ndarray) -> np.ndarray:
    """L2A digital numbers since processing baseline 04.00: reflectance x 10000 + 1000 (BOA_ADD_OFFSET)."""
    return np.clip(np.rint(refl * 10000 + 1000), 1, 10000).astype(np.uint16)


def _landsat_c2_dn(refl: np.ndarray) -> np.ndarray:
    """Collection 2 surface reflectance: reflectance = DN x 2.75e-05 - 0.2."""
    return np.clip(np.rint((refl + 0.2) / 2.75e-05), 1, 65535).astype(np.uint16)


def _ard_dn(refl: np.ndarray) -> np.ndarray:
    """DEA NBART: reflectance x 10000 as int16 (-999 is nodata)."""
    return np.clip(np.rint(refl * 10000), 1, 10000).astype(np.int16)


S2_PRODUCT = Product(_s2_dn, {"scl": _scl})
LANDSAT_C2_PRODUCT = Product(_landsat_c2_dn, {"qa_pixel": _qa_pixel})
ARD_PRODUCT = Product(_ard_dn, {"fmask": _fmask})


# --------------------------------------------------------------------------------------------- geometry


def _to_crs(geometry, src_epsg: int, dst_epsg: int):
    transformer = Transformer.from_crs(src_epsg, dst_epsg, always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _lonlat(footprint: Polygon, epsg: int) -> dict:
    """The footprint as GeoJSON in lon/lat, ~16 vertices per edge, counter-clockwise (RFC 7946)."""
    minx, miny, maxx, maxy = footprint.bounds
    dense = shapely.segmentize(footprint, max(maxx - minx, maxy - miny) / 16)
    lonlat = orient(_to_crs(dense, epsg, 4326), 1.0)
    return json.loads(json.dumps(mapping(lonlat)))


def _bbox(geometry: dict) -> list[float]:
    return list(shapely.geometry.shape(geometry).bounds)


def _area_in(area: tuple[float, float, float, float], src_epsg: int, dst_epsg: int) -> tuple[float, ...]:
    """The test area's bounds in another CRS, plus the margin where pixels are written."""
    poly = shapely.segmentize(box(*area), 100.0) if src_epsg != dst_epsg else box(*area)
    b = _to_crs(poly, src_epsg, dst_epsg).bounds
    m = WINDOW_MARGIN_M
    return (b[0] - m, b[1] - m, b[2] + m, b[3] + m)


def _area_around(lon: float, lat: float, epsg: int, half: tuple[float, float], step: float, phase: float):
    """A test area centred near (lon, lat), its edges on ``phase`` mod ``step`` metres."""
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    cx = round((x - phase) / step) * step + phase
    cy = round((y - phase) / step) * step + phase
    return (cx - half[0], cy - half[1], cx + half[0], cy + half[1])


def _rotated_frame(center: tuple[float, float], half_across: float, half_along: float, degrees: float) -> Polygon:
    """A Landsat scene frame: a rectangle along a descending track, its north end shifted east."""
    t = math.radians(degrees)
    corners = [(-half_across, half_along), (half_across, half_along), (half_across, -half_along)]
    corners.append((-half_across, -half_along))
    pts = [
        (center[0] + u * math.cos(t) + v * math.sin(t), center[1] - u * math.sin(t) + v * math.cos(t))
        for u, v in corners
    ]
    return Polygon(pts)


def _frame_center(anchor: tuple[float, float], across: float, along: float, degrees: float) -> tuple[float, float]:
    """Centre of a scene frame in which ``anchor`` sits ``across``/``along`` metres from the centre."""
    t = math.radians(degrees)
    dx = across * math.cos(t) + along * math.sin(t)
    dy = -across * math.sin(t) + along * math.cos(t)
    return (anchor[0] - dx, anchor[1] - dy)


def _swath_side(point: tuple[float, float], degrees: float, east: bool) -> Polygon:
    """The half-plane on one side of a swath edge through ``point`` running NNE (``degrees`` from north)."""
    t = math.radians(degrees)
    d = np.array([math.sin(t), math.cos(t)]) * 400_000.0
    n = np.array([math.cos(t), -math.sin(t)]) * (400_000.0 if east else -400_000.0)
    p = np.array(point)
    return Polygon([tuple(p - d), tuple(p + d), tuple(p + d + n), tuple(p - d + n)])


def _snap(value: float, step: float, phase: float, rounding: Callable[[float], int]) -> float:
    return rounding((value - phase) / step) * step + phase


def _snap_out(bounds: tuple[float, ...], step: float, phase: float) -> tuple[float, float, float, float]:
    """Bounds grown to the lattice ``phase + k * step``."""
    left, bottom = (_snap(v, step, phase, math.floor) for v in bounds[:2])
    right, top = (_snap(v, step, phase, math.ceil) for v in bounds[2:])
    return (left, bottom, right, top)


def _grid_over(footprint: Polygon, resolution: float, margin: float) -> tuple[Affine, tuple[int, int]]:
    """A Landsat-style grid around a frame: edges at resolution/2 mod resolution (centres on multiples)."""
    b = footprint.buffer(margin, join_style="mitre").bounds
    left, bottom, right, top = _snap_out(b, resolution, resolution / 2)
    shape = (round((top - bottom) / resolution), round((right - left) / resolution))
    return Affine(resolution, 0.0, left, 0.0, -resolution, top), shape


def _proj_transform(t: Affine, nine: bool = False, integers: bool = False) -> list:
    values = [t.a, t.b, t.c, t.d, t.e, t.f] + ([0.0, 0.0, 1.0] if nine else [])
    return [int(v) if integers and float(v).is_integer() else float(v) for v in values]


def _hex_id(text: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, text).hex


def _iso(when: datetime, timespec: str = "microseconds") -> str:
    return when.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _percent(values: np.ndarray, classes: set[int]) -> float:
    return round(100.0 * float(np.isin(values, list(classes)).mean()), 6) if values.size else 0.0


def _render(scenes: list[Scene], product: Product, area: tuple, area_epsg: int, out: Path) -> list[dict]:
    return [_render_scene(s, product, _area_in(area, area_epsg, s.epsg), out) for s in scenes]


def _check_order(items: list[dict], expected: list[str]) -> None:
    """The designed z-order (best = lowest cloud cover = the scene with the nodata edge) must hold."""
    ranked = [i["id"] for i in sorted(items, key=lambda i: i["properties"]["eo:cloud_cover"])]
    if ranked != expected:
        raise AssertionError(f"fixture cloud cover order {ranked} is not the designed {expected}")


# --------------------------------------------------------------------------------------------- Sentinel-2

S2_TILE_PIXELS = 10980  # at 10 m: 109.8 km
S2_AREA_LONLAT = (11.97, 47.12)  # on the UTM 32/33 border, like the demo scenes
S2_AREA_HALF = (1920.0, 1500.0)  # 3.84 x 3.0 km; edges on multiples of 60 m, so whole pixels at 10, 20 and 60 m


@dataclass(frozen=True)
class S2Band:
    band: str  # B04
    es_key: str  # red
    common_name: str
    pc_description: str
    es_description: str
    center: float
    fwhm: float
    resolution: int


S2_BANDS = (
    S2Band("B01", "coastal", "coastal", "Coastal aerosol", "Coastal aerosol (band 1)", 0.443, 0.027, 60),
    S2Band("B04", "red", "red", "Red", "Red (band 4)", 0.665, 0.038, 10),
    S2Band("B08", "nir", "nir", "NIR", "NIR 1 (band 8)", 0.842, 0.145, 10),
    S2Band("B11", "swir16", "swir16", "SWIR (1.6)", "SWIR 1 (band 11)", 1.61, 0.143, 20),
)


@dataclass(frozen=True)
class S2Acquisition:
    """One tile of one datatake, as both catalogs index it."""

    tile: str  # 32TQT
    origin: tuple[float, float]  # the tile's upper-left corner in its UTM zone
    satellite: str  # "A" | "B"
    sensed: datetime
    relative_orbit: int
    absolute_orbit: int
    cloud_fraction: float
    swath_edge: tuple[float, float]  # a lon/lat point on the swath edge that runs through the test area
    data_east: bool  # which side of that edge the swath (the data) is


# R022's swath ends east of the area's middle (both its tiles lose their east part), R065's begins west of it:
# a daily mosaic of 2024-06-12 has two zones overlapping and nodata east of the edge; a monthly one is covered.
R022_EDGE = (S2_AREA_LONLAT[0] + 0.014, S2_AREA_LONLAT[1])  # ~77 % of the area is west of it
R065_EDGE = (S2_AREA_LONLAT[0] - 0.010, S2_AREA_LONLAT[1])  # ~70 % of the area is east of it
S2_ACQUISITIONS = (
    S2Acquisition(
        "32TQT",
        (699960.0, 5300040.0),
        "A",
        datetime(2024, 6, 12, 10, 10, 31, 24000, UTC),
        22,
        46793,
        0.15,
        R022_EDGE,
        False,
    ),
    S2Acquisition(
        "33TTN",
        (199980.0, 5300040.0),
        "A",
        datetime(2024, 6, 12, 10, 10, 31, 24000, UTC),
        22,
        46793,
        0.05,
        R022_EDGE,
        False,
    ),
    S2Acquisition(
        "33TTN",
        (199980.0, 5300040.0),
        "B",
        datetime(2024, 6, 15, 10, 20, 29, 24000, UTC),
        65,
        37941,
        0.01,
        R065_EDGE,
        True,
    ),
)
S2_BASELINE = "05.10"


def _s2_epsg(tile: str) -> int:
    return 32600 + int(tile[:2])


def _s2_tile_box(acq: S2Acquisition) -> Polygon:
    x0, y0 = acq.origin
    return box(x0, y0 - S2_TILE_PIXELS * 10, x0 + S2_TILE_PIXELS * 10, y0)


def _s2_footprint(acq: S2Acquisition) -> Polygon:
    """The tile's part inside the swath (Sentinel-2 tracks run NNE, about 12 degrees from north here)."""
    point = Transformer.from_crs(4326, _s2_epsg(acq.tile), always_xy=True).transform(*acq.swath_edge)
    return _s2_tile_box(acq).intersection(_swath_side(point, 12.0, east=acq.data_east))


def _s2_grid(acq: S2Acquisition, resolution: int) -> tuple[Affine, tuple[int, int]]:
    n = S2_TILE_PIXELS * 10 // resolution
    return Affine(resolution, 0.0, acq.origin[0], 0.0, -resolution, acq.origin[1]), (n, n)


def _s2_names(acq: S2Acquisition) -> dict[str, str]:
    """The product, granule and datastrip names ESA gives one tile of a datatake."""
    sat, t = f"S2{acq.satellite}", acq.sensed
    generated = t + timedelta(hours=4, minutes=11, seconds=24)
    g = f"{generated:%Y%m%dT%H%M%S}"
    baseline = S2_BASELINE.replace(".", "")
    return {
        "sat": sat,
        "generated": _iso(generated),
        "product_uri": f"{sat}_MSIL2A_{t:%Y%m%dT%H%M%S}_N{baseline}_R{acq.relative_orbit:03d}_T{acq.tile}_{g}.SAFE",
        "pc_id": f"{sat}_MSIL2A_{t:%Y%m%dT%H%M%S}_R{acq.relative_orbit:03d}_T{acq.tile}_{g}",
        "es_id": f"{sat}_{acq.tile}_{t:%Y%m%d}_0_L2A",
        "datatake_id": f"G{sat}_{t:%Y%m%dT%H%M%S}_{acq.absolute_orbit:06d}_N{S2_BASELINE}",
        "granule_id": f"{sat}_OPER_MSI_L2A_TL_2{acq.satellite}PS_{g}_A{acq.absolute_orbit:06d}_T{acq.tile}"
        f"_N{S2_BASELINE}",
        "datastrip_id": f"{sat}_OPER_MSI_L2A_DS_2{acq.satellite}PS_{g}_S{t:%Y%m%dT%H%M%S}_N{S2_BASELINE}",
    }


@dataclass(frozen=True)
class S2Naming:
    """How one catalog names Sentinel-2 assets, files and items."""

    key: Callable[[S2Band], str]
    scl_key: str
    filename: Callable[[S2Acquisition, str, int], str]
    item_id: Callable[[dict], str]


def _s2_rasters(acq: S2Acquisition, naming: S2Naming) -> tuple[Raster, ...]:
    rasters = []
    for band in S2_BANDS:
        transform, shape = _s2_grid(acq, band.resolution)
        filename = naming.filename(acq, band.band, band.resolution)
        rasters.append(Raster(naming.key(band), filename, band.es_key, transform, shape, "uint16", 0))
    transform, shape = _s2_grid(acq, 20)
    rasters.append(Raster(naming.scl_key, naming.filename(acq, "SCL", 20), "scl", transform, shape, "uint8", 0))
    return tuple(rasters)


def _s2_class_properties(scl: np.ndarray, footprint: Polygon, acq: S2Acquisition) -> dict:
    """The s2:* percentages of the L2A metadata, taken from the generated window's SCL."""
    pct = {name: _percent(scl, {code}) for code, name in SCL_NAMES.items() if code}
    nodata = 100.0 * (1.0 - footprint.area / _s2_tile_box(acq).area)
    props = {f"s2:{name}_percentage": value for name, value in pct.items()}
    props["s2:nodata_pixel_percentage"] = round(nodata, 6)
    props["s2:degraded_msi_data_percentage"] = 0.0
    props["eo:cloud_cover"] = round(sum(pct[n] for n in ("medium_proba_clouds", "high_proba_clouds", "thin_cirrus")), 6)
    return props


def _s2_area() -> tuple[float, float, float, float]:
    return _area_around(*S2_AREA_LONLAT, 32632, S2_AREA_HALF, 60.0, 0.0)


def _s2_scenes(naming: S2Naming, seed: int) -> list[Scene]:
    scenes = []
    for k, acq in enumerate(S2_ACQUISITIONS):
        names = _s2_names(acq)
        rasters = _s2_rasters(acq, naming)
        meta = {"acq": acq, "names": names}
        footprint = _s2_footprint(acq)
        scenes.append(
            Scene(naming.item_id(names), _s2_epsg(acq.tile), footprint, rasters, acq.cloud_fraction, seed + k, meta)
        )
    return scenes


def _sun(when: datetime) -> dict:
    """Plausible solar angles for a June morning at 47 N (the catalogs carry them; mosaics do not read them)."""
    return {"azimuth": 145.0 + when.minute * 0.1, "zenith": 26.0 + when.minute * 0.05}


# Planetary Computer ---------------------------------------------------------------------------------


def _pc_s2_filename(acq: S2Acquisition, band: str, resolution: int) -> str:
    return f"T{acq.tile}_{acq.sensed:%Y%m%dT%H%M%S}_{band}_{resolution}m.tif"


def _pc_s2_asset(raster: Raster, href: str) -> dict:
    band = next((b for b in S2_BANDS if b.band == raster.key), None)
    t, (h, w) = raster.transform, raster.shape
    asset: dict = {"href": href, "type": COG_TYPE}
    if band is None:  # SCL: no eo:bands, a float gsd and PC's own spelling
        asset.update({"title": "Scene classfication map (SCL)", "gsd": float(raster.resolution)})
    else:
        number = int(band.band[1:])
        asset.update(
            {
                "title": f"Band {number} - {band.pc_description} - {band.resolution}m",
                "gsd": band.resolution,
                "eo:bands": [
                    {
                        "name": band.band,
                        "common_name": band.common_name,
                        "description": f"Band {number} - {band.pc_description}",
                        "center_wavelength": band.center,
                        "full_width_half_max": band.fwhm,
                    }
                ],
            }
        )
    asset["proj:bbox"] = [t.c, t.f + t.e * h, t.c + t.a * w, t.f]
    asset["proj:shape"] = [h, w]
    asset["proj:transform"] = _proj_transform(t)
    asset["roles"] = ["data"]
    return asset


def _pc_s2_item(scene: Scene, rendered: dict) -> dict:
    acq, names = scene.meta["acq"], scene.meta["names"]
    geometry = _lonlat(scene.footprint, scene.epsg)
    sun = _sun(acq.sensed)
    props = {
        "datetime": _iso(acq.sensed),
        "platform": f"Sentinel-2{acq.satellite}",
        "proj:epsg": scene.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": acq.tile,
        "constellation": "Sentinel 2",
        "s2:granule_id": names["granule_id"],
        "s2:datatake_id": names["datatake_id"],
        "s2:product_uri": names["product_uri"],
        "s2:datastrip_id": names["datastrip_id"],
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": names["generated"],
        "sat:relative_orbit": acq.relative_orbit,
        "s2:mean_solar_zenith": sun["zenith"],
        "s2:mean_solar_azimuth": sun["azimuth"],
        "s2:processing_baseline": S2_BASELINE,
        "s2:reflectance_conversion_factor": 0.970045,
    }
    props.update(_s2_class_properties(rendered["SCL"], scene.footprint, acq))
    data_api = "https://planetarycomputer.microsoft.com/api/data/v1/item"
    query = f"collection=sentinel-2-l2a&item={scene.item_id}&assets=visual&asset_bidx=visual%7C1%2C2%2C3&nodata=0"
    assets = {r.key: _pc_s2_asset(r, rendered["files"][r.key]) for r in scene.rasters}
    assets["tilejson"] = {
        "href": f"{data_api}/tilejson.json?{query}&format=png",
        "type": "application/json",
        "title": "TileJSON with default rendering",
        "roles": ["tiles"],
    }
    assets["rendered_preview"] = {
        "href": f"{data_api}/preview.png?{query}&format=png",
        "type": "image/png",
        "title": "Rendered preview",
        "rel": "preview",
        "roles": ["overview"],
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": scene.item_id,
        "properties": props,
        "geometry": geometry,
        "links": [
            {
                "rel": "license",
                "href": "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice",
            }
        ],
        "assets": assets,
        "bbox": _bbox(geometry),
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
        ],
        "collection": "sentinel-2-l2a",
    }


def _build_pc_s2(out: Path) -> CatalogFixture:
    scenes = _s2_scenes(S2Naming(lambda b: b.band, "SCL", _pc_s2_filename, lambda n: n["pc_id"]), seed=2101)
    return _s2_fixture("pc_s2_l2a", scenes, _pc_s2_item, out, "SCL", {"red": "B04", "nir": "B08", "swir16": "B11"})


def _s2_fixture(name: str, scenes: list[Scene], item_of, out: Path, scl: str, bands: dict) -> CatalogFixture:
    area = _s2_area()
    rendered = _render(scenes, S2_PRODUCT, area, 32632, out)
    items = [item_of(s, r) for s, r in zip(scenes, rendered)]
    _check_order(items, [scenes[2].item_id, scenes[1].item_id, scenes[0].item_id])
    spec_bands = [{"name": n, "asset": a, "index": 1} for n, a in bands.items()]
    spec_bands.append({"name": "scl", "asset": scl, "index": 1, "resampling": "nearest"})
    return CatalogFixture(
        name=name,
        collection="sentinel-2-l2a",
        items=items,
        collection_doc=_collection(
            "sentinel-2-l2a", items, f"Sentinel-2 Level-2A as {name} serves it (test fixture)", "proprietary"
        ),
        bands=spec_bands,
        native_crs="EPSG:32632",
        native_resolution=10.0,
        area_native=area,
        files={s.item_id: r["files"] for s, r in zip(scenes, rendered)},
    )


# Earth Search ---------------------------------------------------------------------------------------


def _es_s2_filename(acq: S2Acquisition, band: str, resolution: int) -> str:
    return f"{band}.tif"


def _es_band_entry(band: S2Band) -> dict:
    return {
        "name": band.es_key,
        "common_name": band.common_name,
        "description": band.es_description,
        "center_wavelength": band.center,
        "full_width_half_max": band.fwhm,
    }


def _es_s2_asset(raster: Raster, href: str, jp2: bool = False) -> dict:
    band = next((b for b in S2_BANDS if b.es_key == raster.key), None)
    res = int(raster.resolution)
    asset: dict = {"href": href, "type": "image/jp2" if jp2 else COG_TYPE}
    if band is None:
        asset["title"] = "Scene classification map (SCL)"
        raster_band = {"nodata": 0, "data_type": "uint8", "spatial_resolution": res}
    else:
        asset["title"] = f"{band.es_description} - {band.resolution}m"
        asset["eo:bands"] = [_es_band_entry(band)]
        asset["gsd"] = band.resolution
        raster_band = {
            "nodata": 0,
            "data_type": "uint16",
            "bits_per_sample": 15,
            "spatial_resolution": res,
            "scale": 0.0001,
            "offset": -0.1,
        }
    asset["proj:shape"] = list(raster.shape)
    asset["proj:transform"] = _proj_transform(raster.transform, integers=True)
    asset["raster:bands"] = [raster_band]
    asset["roles"] = ["data", "reflectance"]
    return asset


def _es_s2_item(scene: Scene, rendered: dict) -> dict:
    acq, names = scene.meta["acq"], scene.meta["names"]
    geometry = _lonlat(scene.footprint, scene.epsg)
    sun = _sun(acq.sensed)
    zone, band_letter, square = acq.tile[:2], acq.tile[2], acq.tile[3:]
    t = acq.sensed
    prefix = f"sentinel-s2-l2a-cogs/{zone}/{band_letter}/{square}/{t.year}/{t.month}/{scene.item_id}"
    created = _iso(t + timedelta(hours=5, minutes=31, seconds=12, microseconds=537000), "milliseconds")
    props = {
        "created": created,
        "platform": f"sentinel-2{acq.satellite.lower()}",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "proj:epsg": scene.epsg,
        "mgrs:utm_zone": int(zone),
        "mgrs:latitude_band": band_letter,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{acq.tile}",
        "view:sun_azimuth": sun["azimuth"],
        "view:sun_elevation": 90.0 - sun["zenith"],
    }
    props.update(_s2_class_properties(rendered["scl"], scene.footprint, acq))
    props.update(
        {
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": S2_BASELINE,
            "s2:product_uri": names["product_uri"],
            "s2:generation_time": names["generated"],
            "s2:datatake_id": names["datatake_id"],
            "s2:datatake_type": "INS-NOBS",
            "s2:datastrip_id": names["datastrip_id"],
            "s2:granule_id": names["granule_id"],
            "s2:reflectance_conversion_factor": 0.970045,
            "datetime": _iso(acq.sensed + timedelta(seconds=6, microseconds=95000)),
            "s2:sequence": "0",
            "earthsearch:s3_path": f"s3://sentinel-cogs/{prefix}",
            "earthsearch:payload_id": f"roda-sentinel2/workflow-sentinel2-to-stac/{_hex_id(prefix)}",
            "earthsearch:boa_offset_applied": True,
            "processing:software": {"sentinel2-to-stac": "0.1.1"},
            "updated": created,
        }
    )
    assets = {r.key: _es_s2_asset(r, rendered["files"][r.key]) for r in scene.rasters}
    tiles = f"s3://sentinel-s2-l2a/tiles/{zone}/{band_letter}/{square}/{t.year}/{t.month}/{t.day}/0"
    for r in scene.rasters:
        source = "SCL" if r.key == "scl" else next(b.band for b in S2_BANDS if b.es_key == r.key)
        assets[f"{r.key}-jp2"] = _es_s2_asset(r, f"{tiles}/{source}.jp2", jp2=True)
    assets["thumbnail"] = {
        "href": f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/{prefix}/thumbnail.jpg",
        "type": "image/jpeg",
        "title": "Thumbnail image",
        "roles": ["thumbnail"],
    }
    es = "https://earth-search.aws.element84.com/v1"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": scene.item_id,
        "properties": props,
        "geometry": geometry,
        "links": [
            {
                "rel": "license",
                "href": "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice",
            },
            {
                "rel": "derived_from",
                "href": f"{es}/collections/sentinel-2-l1c/items/{scene.item_id.replace('L2A', 'L1C')}",
                "type": "application/geo+json",
            },
        ],
        "assets": assets,
        "bbox": _bbox(geometry),
        "stac_extensions": [
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
        ],
        "collection": "sentinel-2-l2a",
    }


def _build_es_s2(out: Path) -> CatalogFixture:
    scenes = _s2_scenes(S2Naming(lambda b: b.es_key, "scl", _es_s2_filename, lambda n: n["es_id"]), seed=3101)
    return _s2_fixture("es_s2_l2a", scenes, _es_s2_item, out, "scl", {"red": "red", "nir": "nir", "swir16": "swir16"})


# --------------------------------------------------------------------------------------------- Landsat C2 L2

LANDSAT_TILT = 12.0  # degrees: a descending track heads SSW, so a scene's north end lies east of its south end
LANDSAT_HALF = (92_500.0, 90_000.0)  # half the frame across and along track
LANDSAT_MARGIN = 4_500.0  # fill around the frame inside the grid, as USGS grids have
LANDSAT_AREA_HALF = (1950.0, 1500.0)  # 3.9 x 3.0 km, edges at 15 mod 30 like the scenes' pixels


@dataclass(frozen=True)
class LandsatBand:
    key: str
    kind: str  # the reflectance signature
    file_band: str  # SR_B4
    eo_name: str  # OLI_B4
    title: str
    description: str
    center: float
    fwhm: float


LANDSAT_BANDS = (
    LandsatBand("red", "red", "SR_B4", "OLI_B4", "Red Band", "Visible red", 0.65, 0.04),
    LandsatBand("nir08", "nir", "SR_B5", "OLI_B5", "Near Infrared Band 0.8", "Near infrared", 0.87, 0.03),
    LandsatBand(
        "swir16", "swir16", "SR_B6", "OLI_B6", "Short-wave Infrared Band 1.6", "Short-wave infrared", 1.61, 0.09
    ),
)
QA_BITFIELDS = (  # (name, description, offset, length, class names by value)
    ("fill", "Image or fill data", 0, 1, ("not_fill", "fill")),
    ("dilated_cloud", "Dilated cloud", 1, 1, ("not_dilated", "dilated")),
    ("cirrus", "Cirrus mask", 2, 1, ("not_cirrus", "cirrus")),
    ("cloud", "Cloud mask", 3, 1, ("not_cloud", "cloud")),
    ("cloud_shadow", "Cloud shadow mask", 4, 1, ("not_shadow", "shadow")),
    ("snow", "Snow/Ice mask", 5, 1, ("not_snow", "snow")),
    ("clear", "Clear mask", 6, 1, ("not_clear", "clear")),
    ("water", "Water mask", 7, 1, ("not_water", "water")),
    ("cloud_confidence", "Cloud confidence levels", 8, 2, ("not_set", "low", "medium", "high")),
    ("cloud_shadow_confidence", "Cloud shadow confidence levels", 10, 2, ("not_set", "low", "reserved", "high")),
    ("snow_confidence", "Snow/Ice confidence levels", 12, 2, ("not_set", "low", "reserved", "high")),
    ("cirrus_confidence", "Cirrus confidence levels", 14, 2, ("not_set", "low", "reserved", "high")),
)


@dataclass(frozen=True)
class LandsatAcquisition:
    platform: int  # 8 | 9
    path: int
    row: int
    sensed: datetime
    processed: datetime
    across: float  # where the test area's centre sits in the frame, metres from its centre
    along: float
    cloud_fraction: float


LANDSAT_ACQUISITIONS = (
    LandsatAcquisition(
        9, 193, 27, datetime(2024, 6, 12, 10, 4, 11, 532118, UTC), datetime(2024, 6, 13), 50_000.0, -75_600.0, 0.12
    ),
    # row 028's north edge runs through the area (0.6 km north of its centre): the best scene is cut there
    LandsatAcquisition(
        9, 193, 28, datetime(2024, 6, 12, 10, 4, 35, 419304, UTC), datetime(2024, 6, 13), 50_000.0, 89_400.0, 0.02
    ),
)


def _landsat_ids(acq: LandsatAcquisition) -> tuple[str, str]:
    """(the PC item id, USGS's product id naming the files): PC drops the processing date."""
    base = f"LC{acq.platform:02d}_L2SP_{acq.path:03d}{acq.row:03d}_{acq.sensed:%Y%m%d}"
    return f"{base}_02_T1", f"{base}_{acq.processed:%Y%m%d}_02_T1"


def _landsat_frame(anchor: tuple[float, float], across: float, along: float) -> Polygon:
    center = _frame_center(anchor, across, along, LANDSAT_TILT)
    return _rotated_frame(center, *LANDSAT_HALF, LANDSAT_TILT)


def _landsat_c2_scenes(area: tuple[float, ...], epsg: int) -> list[Scene]:
    anchor = ((area[0] + area[2]) / 2, (area[1] + area[3]) / 2)
    scenes = []
    for k, acq in enumerate(LANDSAT_ACQUISITIONS):
        item_id, product_id = _landsat_ids(acq)
        footprint = _landsat_frame(anchor, acq.across, acq.along)
        transform, shape = _grid_over(footprint, 30.0, LANDSAT_MARGIN)
        rasters = [
            Raster(b.key, f"{product_id}_{b.file_band}.TIF", b.kind, transform, shape, "uint16", 0, point=True)
            for b in LANDSAT_BANDS
        ]
        rasters.append(
            Raster("qa_pixel", f"{product_id}_QA_PIXEL.TIF", "qa_pixel", transform, shape, "uint16", 1, True)
        )
        meta = {"acq": acq, "product_id": product_id, "transform": transform, "shape": shape}
        scenes.append(Scene(item_id, epsg, footprint, tuple(rasters), acq.cloud_fraction, 4101 + k, meta))
    return scenes


def _qa_bitfields() -> list[dict]:
    fields = []
    for name, description, offset, length, classes in QA_BITFIELDS:
        entries = [
            {"value": v, "name": c, "description": f"{description}: {c.replace('_', ' ')}"}
            for v, c in enumerate(classes)
        ]
        fields.append(
            {"name": name, "description": description, "offset": offset, "length": length, "classes": entries}
        )
    return fields


def _landsat_sr_asset(band: LandsatBand, href: str) -> dict:
    return {
        "href": href,
        "type": COG_TYPE,
        "title": band.title,
        "description": f"Collection 2 Level-2 {band.title} ({band.file_band}) Surface Reflectance",
        "eo:bands": [
            {
                "name": band.eo_name,
                "common_name": band.key,
                "description": band.description,
                "center_wavelength": band.center,
                "full_width_half_max": band.fwhm,
            }
        ],
        "raster:bands": [
            {"nodata": 0, "data_type": "uint16", "spatial_resolution": 30, "scale": 2.75e-05, "offset": -0.2}
        ],
        "roles": ["data", "reflectance"],
    }


def _landsat_qa_asset(href: str) -> dict:
    return {
        "href": href,
        "type": COG_TYPE,
        "title": "Pixel Quality Assessment Band",
        "description": "Collection 2 Level-1 Pixel Quality Assessment Band (QA_PIXEL)",
        "classification:bitfields": _qa_bitfields(),
        "raster:bands": [{"nodata": 1, "data_type": "uint16", "spatial_resolution": 30, "unit": "bit index"}],
        "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
    }


def _landsat_c2_item(scene: Scene, rendered: dict) -> dict:
    acq, transform, shape = scene.meta["acq"], scene.meta["transform"], scene.meta["shape"]
    geometry = _lonlat(scene.footprint, scene.epsg)
    qa = rendered["qa_pixel"]
    cloud = _percent(qa, {QA["cloud"], QA["dilated"]})
    sun = _sun(acq.sensed)
    props = {
        "platform": f"landsat-{acq.platform}",
        "instruments": ["oli", "tirs"],
        "created": _iso(acq.processed + timedelta(hours=14, minutes=7)),
        "gsd": 30,
        "description": "Landsat Collection 2 Level-2",
        "eo:cloud_cover": round(cloud, 2),
        "view:off_nadir": 0,
        "view:sun_elevation": 90.0 - sun["zenith"],
        "view:sun_azimuth": sun["azimuth"],
        "proj:epsg": scene.epsg,
        "proj:shape": list(shape),
        "proj:transform": _proj_transform(transform),
        "landsat:cloud_cover_land": round(cloud, 2),
        "landsat:wrs_type": "2",
        "landsat:wrs_path": f"{acq.path:03d}",
        "landsat:wrs_row": f"{acq.row:03d}",
        "landsat:collection_category": "T1",
        "landsat:collection_number": "02",
        "landsat:correction": "L2SP",
        "landsat:scene_id": f"LC{acq.platform}{acq.path:03d}{acq.row:03d}{acq.sensed:%Y%j}LGN00",
        "sci:doi": "10.5066/P9OGBGM6",
        "datetime": _iso(acq.sensed),
    }
    files = rendered["files"]
    assets = {b.key: _landsat_sr_asset(b, files[b.key]) for b in LANDSAT_BANDS}
    assets["qa_pixel"] = _landsat_qa_asset(files["qa_pixel"])
    data_api = "https://planetarycomputer.microsoft.com/api/data/v1/item"
    query = f"collection=landsat-c2-l2&item={scene.item_id}&assets=red&assets=green&assets=blue&nodata=0"
    assets["tilejson"] = {
        "href": f"{data_api}/tilejson.json?{query}&format=png",
        "type": "application/json",
        "title": "TileJSON with default rendering",
        "roles": ["tiles"],
    }
    assets["rendered_preview"] = {
        "href": f"{data_api}/preview.png?{query}&format=png",
        "type": "image/png",
        "title": "Rendered preview",
        "rel": "preview",
        "roles": ["overview"],
    }
    usgs = "https://landsatlook.usgs.gov/stac-server/collections/landsat-c2l2-sr/items"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": scene.item_id,
        "properties": props,
        "geometry": geometry,
        "links": [
            {
                "rel": "cite-as",
                "href": "https://doi.org/10.5066/P9OGBGM6",
                "title": "Landsat 8-9 OLI/TIRS Collection 2 Level-2",
            },
            {
                "rel": "via",
                "href": f"{usgs}/{scene.meta['product_id']}_SR",
                "type": "application/json",
                "title": "USGS STAC Item",
            },
        ],
        "assets": assets,
        "bbox": _bbox(geometry),
        "stac_extensions": [
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            "https://stac-extensions.github.io/landsat/v2.0.0/schema.json",
            "https://stac-extensions.github.io/classification/v1.0.0/schema.json",
            "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
        ],
        "collection": "landsat-c2-l2",
    }


def _build_landsat_c2(out: Path, epsg: int = 32632, name: str = "landsat_c2_l2") -> CatalogFixture:
    """``epsg`` 32633: the same pass gridded in the zone of the scenes' centres (they lie ~50 km east of the
    area, past 12 E), as USGS grids them; the area is then on zone 33's 30 m lattice."""
    area = _area_around(*S2_AREA_LONLAT, epsg, LANDSAT_AREA_HALF, 30.0, 15.0)
    scenes = _landsat_c2_scenes(area, epsg)
    rendered = _render(scenes, LANDSAT_C2_PRODUCT, area, epsg, out)
    items = [_landsat_c2_item(s, r) for s, r in zip(scenes, rendered)]
    _check_order(items, [scenes[1].item_id, scenes[0].item_id])
    bands = [{"name": n, "asset": n, "index": 1} for n in ("red", "nir08", "swir16")]
    bands.append({"name": "qa_pixel", "asset": "qa_pixel", "index": 1, "resampling": "nearest"})
    return CatalogFixture(
        name=name,
        collection="landsat-c2-l2",
        items=items,
        collection_doc=_collection(
            "landsat-c2-l2", items, "Landsat Collection 2 Level-2 (test fixture)", "proprietary"
        ),
        bands=bands,
        native_crs=f"EPSG:{epsg}",
        native_resolution=30.0,
        area_native=area,
        files={s.item_id: r["files"] for s, r in zip(scenes, rendered)},
    )


# --------------------------------------------------------------------------------------------- Copernicus DEM

DEM_ARCSEC = 1.0 / 3600.0  # GLO-30 below 50 degrees latitude: 1 arc second both ways, 3600 x 3600 per tile
DEM_NODATA = -32767.0  # in the files only, as the tiles declare no raster:bands


def _dem_tile_name(lat: int, lon: int) -> str:
    return f"Copernicus_DSM_COG_10_N{lat:02d}_00_E{lon:03d}_00_DEM"


def _dem_transform(lat: int, lon: int) -> Affine:
    """Pixel centres on whole arc seconds from the tile's south-west corner: edges half a pixel outside."""
    return Affine(DEM_ARCSEC, 0.0, lon - DEM_ARCSEC / 2, 0.0, -DEM_ARCSEC, lat + 1 + DEM_ARCSEC / 2)


def _dem_item(lat: int, lon: int, href: str) -> dict:
    """A Planetary Computer ``cop-dem-glo-30`` item: projection v1.0.0 on the item (EPSG:4326), one
    ``data`` COG, a fixed 2021-04-22 datetime for every tile, no raster:bands."""
    name = _dem_tile_name(lat, lon)
    transform = _dem_transform(lat, lon)
    edge = DEM_ARCSEC / 2
    footprint = box(lon - edge, lat - edge, lon + 1 + edge, lat + 1 + edge)
    data_api = "https://planetarycomputer.microsoft.com/api/data/v1/item"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": name,
        "properties": {
            "gsd": 30,
            "datetime": "2021-04-22T00:00:00Z",
            "platform": "TanDEM-X",
            "proj:epsg": 4326,
            "proj:shape": [3600, 3600],
            "proj:transform": _proj_transform(transform),
        },
        "geometry": mapping(orient(footprint)),
        "links": [],
        "assets": {
            "data": {"href": href, "type": COG_TYPE, "roles": ["data"], "title": f"N{lat}_00_E{lon:03d}_00"},
            "tilejson": {
                "href": f"{data_api}/tilejson.json?collection=cop-dem-glo-30&item={name}&assets=data",
                "type": "application/json",
                "title": "TileJSON with default rendering",
                "roles": ["tiles"],
            },
        },
        "bbox": list(footprint.bounds),
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
        "collection": "cop-dem-glo-30",
    }


def _build_cop_dem(out: Path) -> CatalogFixture:
    """Copernicus DEM GLO-30 as Planetary Computer serves it: the test area (the Sentinel-2 one) straddles
    12 E, so two 1-degree tiles; float32 heights, one terrain continuous across the tile edge."""
    area = _area_around(*S2_AREA_LONLAT, 32632, S2_AREA_HALF, 60.0, 0.0)
    lon0, lat0, lon1, lat1 = _to_crs(box(*area), 32632, 4326).buffer(0.03).bounds
    tiles = [(47, lon) for lon in (11, 12)]
    # one lattice for both tiles: column 0 at 11 E + half a pixel, the terrain drawn once over the window
    whole = _dem_transform(47, 11)
    rows = (math.floor((whole.f - lat1) / DEM_ARCSEC), math.ceil((whole.f - lat0) / DEM_ARCSEC))
    cols = (math.floor((lon0 - whole.c) / DEM_ARCSEC), math.ceil((lon1 - whole.c) / DEM_ARCSEC))
    rng = np.random.default_rng(4401)
    height, width = rows[1] - rows[0], cols[1] - cols[0]
    terrain = 1400.0 + 450.0 * _field_hw(rng, height, width) + rng.normal(0.0, 0.8, (height, width))
    terrain = terrain.astype(np.float32)
    items, files = [], {}
    for lat, lon in tiles:
        name = _dem_tile_name(lat, lon)
        shift = (lon - 11) * 3600  # this tile's column 0 on the shared lattice
        lo, hi = max(cols[0], shift), min(cols[1], shift + 3600)
        window = Window(lo - shift, rows[0], hi - lo, height)
        raster = Raster(
            "data", f"{name}.tif", "elevation", _dem_transform(lat, lon), (3600, 3600), "float32", DEM_NODATA
        )
        path = out / f"{name}.tif"
        _write_sparse(path, raster, "EPSG:4326", window, terrain[:, lo - cols[0] : hi - cols[0]])
        items.append(_dem_item(lat, lon, str(path)))
        files[name] = {"data": str(path)}
    doc = _collection("cop-dem-glo-30", items, "Copernicus DEM GLO-30 (test fixture)", "proprietary")
    return CatalogFixture(
        name="cop_dem_glo_30",
        collection="cop-dem-glo-30",
        items=items,
        collection_doc=doc,
        bands=[{"name": "elevation", "asset": "data", "index": 1}],
        native_crs="EPSG:4326",
        native_resolution=DEM_ARCSEC,
        area_native=_to_crs(box(*area), 32632, 4326).bounds,
        files=files,
    )


# --------------------------------------------------------------------------------------------- DEA Landsat ARD

ARD_AREA_LONLAT = (149.97, -34.45)  # on the UTM 55/56 border, New South Wales
ARD_VERSION = "3-2-1"


@dataclass(frozen=True)
class ArdAcquisition:
    path: int
    row: int
    epsg: int  # the scene's own zone; DEA uses the northern codes, so northings are negative
    sensed: datetime
    across: float
    along: float
    cloud_fraction: float


ARD_ACQUISITIONS = (
    ArdAcquisition(89, 83, 32656, datetime(2024, 6, 11, 23, 48, 10, 116004, UTC), -45_000.0, -75_000.0, 0.10),
    # row 084, in zone 55, is the best scene; its north edge runs through the area
    ArdAcquisition(89, 84, 32655, datetime(2024, 6, 11, 23, 48, 34, 220871, UTC), 10_000.0, 89_400.0, 0.02),
)
ARD_BANDS = (  # asset key, file suffix, kind, resolution
    ("nbart_red", "nbart", "band04", "red", 30.0),
    ("nbart_nir", "nbart", "band05", "nir", 30.0),
    ("nbart_swir_1", "nbart", "band06", "swir16", 30.0),
    ("nbart_panchromatic", "nbart", "band08", "pan", 15.0),
    ("oa_fmask", "oa", "fmask", "fmask", 30.0),
)


def _ard_label(acq: ArdAcquisition, product: str = "ard") -> str:
    return f"ga_ls8c_{product}_{ARD_VERSION}_{acq.path:03d}{acq.row:03d}_{acq.sensed:%Y-%m-%d}_final"


def _ard_grids(footprint: Polygon) -> dict[float, tuple[Affine, tuple[int, int]]]:
    """The 30 m grid (edges at 15 mod 30) and the panchromatic one: origin +7.5 m, shape 2n-1, centres shared."""
    ms, (h, w) = _grid_over(footprint, 30.0, LANDSAT_MARGIN)
    pan = Affine(15.0, 0.0, ms.c + 7.5, 0.0, -15.0, ms.f - 7.5)
    return {30.0: (ms, (h, w)), 15.0: (pan, (2 * h - 1, 2 * w - 1))}


def _ard_scenes(area: tuple[float, ...], area_epsg: int) -> list[Scene]:
    scenes = []
    for k, acq in enumerate(ARD_ACQUISITIONS):
        centre = box(*area).centroid
        anchor = Transformer.from_crs(area_epsg, acq.epsg, always_xy=True).transform(centre.x, centre.y)
        footprint = _landsat_frame(anchor, acq.across, acq.along)
        grids = _ard_grids(footprint)
        rasters = []
        for key, product, suffix, kind, res in ARD_BANDS:
            transform, shape = grids[res]
            dtype, nodata = ("uint8", 0) if kind == "fmask" else ("int16", -999)
            filename = f"{_ard_label(acq, product)}_{suffix}.tif"
            rasters.append(Raster(key, filename, kind, transform, shape, dtype, nodata))
        item_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://explorer.dea.ga.gov.au/{_ard_label(acq)}"))
        meta = {"acq": acq, "grids": grids}
        scenes.append(Scene(item_id, acq.epsg, footprint, tuple(rasters), acq.cloud_fraction, 5101 + k, meta))
    return scenes


def _ard_asset(raster: Raster, href: str, epsg: int) -> dict:
    return {
        "href": href,
        "type": COG_TYPE,
        "title": raster.key,
        "eo:bands": [{"name": raster.key}],
        "proj:epsg": epsg,
        "proj:shape": list(raster.shape),
        "proj:transform": _proj_transform(raster.transform, nine=True),
        "roles": ["data"],
    }


def _ard_item(scene: Scene, rendered: dict) -> dict:
    acq = scene.meta["acq"]
    ms_transform, ms_shape = scene.meta["grids"][30.0]
    geometry = _lonlat(scene.footprint, scene.epsg)
    fmask = rendered["oa_fmask"]
    shares = {name: _percent(fmask, {code}) for code, name in FMASK_NAMES.items() if code}
    label = _ard_label(acq)
    region, level1_processed = f"{acq.path:03d}{acq.row:03d}", acq.sensed + timedelta(days=8)
    props = {
        "title": label,
        "platform": "landsat-8",
        "instruments": ["oli", "tirs"],
        "gsd": 15.0,
        "datetime": _iso(acq.sensed),
        "start_datetime": _iso(acq.sensed - timedelta(seconds=14, microseconds=930000)),
        "end_datetime": _iso(acq.sensed + timedelta(seconds=14, microseconds=810000)),
        "created": _iso(acq.sensed + timedelta(days=9, hours=3)),
        "cubedash:region_code": f"{acq.path:03d}{acq.row:03d}",
        "dea:dataset_maturity": "final",
        "eo:cloud_cover": shares["cloud"],
        **{f"fmask:{name}": value for name, value in shares.items()},
        "landsat:collection_category": "T1",
        "landsat:collection_number": 2,
        "landsat:landsat_product_id": f"LC08_L1TP_{region}_{acq.sensed:%Y%m%d}_{level1_processed:%Y%m%d}_02_T1",
        "landsat:landsat_scene_id": f"LC8{acq.path:03d}{acq.row:03d}{acq.sensed:%Y%j}LGN00",
        "landsat:wrs_path": acq.path,
        "landsat:wrs_row": acq.row,
        "odc:dataset_version": ARD_VERSION.replace("-", "."),
        "odc:file_format": "GeoTIFF",
        "odc:processing_datetime": _iso(acq.sensed + timedelta(days=9, hours=3)),
        "odc:producer": "ga.gov.au",
        "odc:product": "ga_ls8c_ard_3",
        "odc:product_family": "ard",
        "odc:region_code": f"{acq.path:03d}{acq.row:03d}",
        "proj:epsg": scene.epsg,
        "proj:shape": list(ms_shape),
        "proj:transform": _proj_transform(ms_transform, nine=True),
        "view:sun_azimuth": 32.5,
        "view:sun_elevation": 28.9,
    }
    files = rendered["files"]
    assets = {r.key: _ard_asset(r, files[r.key], scene.epsg) for r in scene.rasters}
    base = f"https://data.dea.ga.gov.au/baseline/ga_ls8c_ard_3/{acq.path:03d}/{acq.row:03d}/{acq.sensed:%Y/%m/%d}"
    assets["thumbnail:nbart"] = {
        "href": f"{base}/{_ard_label(acq, 'nbart')}_thumbnail.jpg",
        "type": "image/jpeg",
        "title": "Thumbnail image",
        "roles": ["thumbnail"],
    }
    explorer = "https://explorer.dea.ga.gov.au"
    return {
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
        ],
        "type": "Feature",
        "id": scene.item_id,
        "collection": "ga_ls8c_ard_3",
        "bbox": _bbox(geometry),
        "geometry": geometry,
        "properties": props,
        "links": [
            {
                "rel": "odc_yaml",
                "href": f"{base}/{label}.odc-metadata.yaml",
                "type": "text/yaml",
                "title": "ODC Dataset YAML",
            },
            {
                "rel": "product_overview",
                "href": f"{explorer}/product/ga_ls8c_ard_3",
                "type": "text/html",
                "title": "ODC Product Overview",
            },
            {
                "rel": "alternative",
                "href": f"{explorer}/dataset/{scene.item_id}",
                "type": "text/html",
                "title": "ODC Dataset Overview",
            },
        ],
        "assets": assets,
    }


def _build_landsat_ard(out: Path) -> CatalogFixture:
    area_epsg = ARD_ACQUISITIONS[0].epsg
    area = _area_around(*ARD_AREA_LONLAT, area_epsg, LANDSAT_AREA_HALF, 30.0, 15.0)
    scenes = _ard_scenes(area, area_epsg)
    rendered = _render(scenes, ARD_PRODUCT, area, area_epsg, out)
    items = [_ard_item(s, r) for s, r in zip(scenes, rendered)]
    _check_order(items, [scenes[1].item_id, scenes[0].item_id])
    bands = [
        {"name": "red", "asset": "nbart_red", "index": 1},
        {"name": "nir", "asset": "nbart_nir", "index": 1},
        {"name": "swir16", "asset": "nbart_swir_1", "index": 1},
        {"name": "pan", "asset": "nbart_panchromatic", "index": 1},
        {"name": "fmask", "asset": "oa_fmask", "index": 1, "resampling": "nearest"},
    ]
    return CatalogFixture(
        name="landsat_ard",
        collection="ga_ls8c_ard_3",
        items=items,
        collection_doc=_collection(
            "ga_ls8c_ard_3", items, "Geoscience Australia Landsat 8 ARD (test fixture)", "CC-BY-4.0"
        ),
        bands=bands,
        native_crs=f"EPSG:{area_epsg}",
        native_resolution=15.0,
        area_native=area,
        files={s.item_id: r["files"] for s, r in zip(scenes, rendered)},
    )


# --------------------------------------------------------------------------------------------- collections


def _collection(collection: str, items: list[dict], title: str, license_: str) -> dict:
    """demo.scenes' collection document (extent over the items), titled for the catalog it stands in for."""
    doc = collection_document(collection, items)
    doc.update({"title": title, "description": f"{title}: items in the public catalog's shape over local files"})
    doc["license"] = license_
    doc["extent"]["temporal"]["interval"] = [[_earliest(items), _latest(items)]]
    return doc


def _earliest(items: list[dict]) -> str:
    return min(i["properties"].get("start_datetime") or i["properties"]["datetime"] for i in items)


def _latest(items: list[dict]) -> str:
    return max(i["properties"].get("end_datetime") or i["properties"]["datetime"] for i in items)


_BUILDERS: dict[str, Callable[[Path], CatalogFixture]] = {
    "pc_s2_l2a": _build_pc_s2,
    "es_s2_l2a": _build_es_s2,
    "landsat_c2_l2": _build_landsat_c2,
    "landsat_ard": _build_landsat_ard,
    # not in FIXTURE_NAMES (no public-catalog shape test of their own): the cube's other sources
    "landsat_c2_l2_utm33": functools.partial(_build_landsat_c2, epsg=32633, name="landsat_c2_l2_utm33"),
    "cop_dem_glo_30": _build_cop_dem,
}
