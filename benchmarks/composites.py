"""``python -m benchmarks.composites``: a masked monthly median against odc-stac, and what a mask costs a mosaic.

The figures behind the "Cloud-free composites" issue's benchmark line:

- a monthly median with >= 8 observations per pixel, ours (``composite.method: median``, SCL mask) against
  ``odc.stac.load`` + xarray ``.where(~scl.isin(exclude)).median("time")`` with the same mask on the same
  data: ours should be >= 3 x faster at a lower peak RSS;
- a masked ``first_valid`` (the scene-by-scene path, ``engine.composite_read``) within 1.2 x of today's
  unmasked mosaic (one GTI read per read group) on the same data.

What it does, self-contained (no STAC API, no Dagster):

1. Generates (once, cached under ``.local/bench-composites/`` keyed on ``GENERATOR_VERSION`` and the layout)
   one month of Sentinel-2-shaped acquisitions over one area across the UTM 32/33 boundary at 12°E: two fixed
   tiles (one per zone, overlapping in the middle) on each of ``dates`` days, per-band DEFLATE COGs (B02 B03
   B04 B08 at 10 m, SCL uint8 at 20 m), items in Planetary Computer's shape. The surface is one landscape
   seen on every date (with phenology and sensor grain); each date has its own clouds (SCL 8/9), cirrus (10)
   and their shadows (3), shared by the date's two tiles, over ``cloud_fractions`` of the pixels; two dates'
   west tiles are cut by a swath edge (nodata), which leaves >= 8 observations everywhere.
2. Builds each case's scene table and GTI with the engine (``scene_table`` -> ``build_gti``), items passed
   directly (the items' own JSON for odc-stac, with ``raster:bands`` added in memory).
3. Times, each run in its own measured process, repeated with the methods' order reversed every repeat:
   ``median`` / ``first_valid`` / ``mosaic``: ``write_block`` over every block on a pool of 2 forked
   processes (``engine.workers``, batches as ``build`` sizes its ranged runs), into a template made untimed;
   ``odc``: ``odc.stac.load`` onto our grid's GeoBox, masked, ``.median("time")``, rounded half to even to
   uint16 and written to Zarr with our chunks and codec, on dask's threaded scheduler with 2 threads.
4. Compares the medians pixel by pixel, prints the table and writes ``benchmarks/results/composites.json``.

Conventions as in ``benchmarks/README.md``: the timed work excludes imports, item parsing and the template;
CPU is user + system of the run's process and every child it waited for; peak RSS is the largest process of
the tree (also the sum of the pool's processes, an upper bound of what the tree held at once); a ratio is the
median of the same repeat's ratios. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

from benchmarks.mixed_resolution import S2_BANDS, _cpu_ticks, _write_cog, machine, wait_for, wait_quiet

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".local" / "bench-composites"
RESULTS = Path(__file__).resolve().parent / "results" / "composites.json"
GENERATOR_VERSION = 1  # bump when the same layout makes other scenes or items (the cache keys on it)
COLLECTION = "sentinel-2-l2a"
STEP = "2024-06-01"  # the one monthly time step
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
BANDS = ("B02", "B03", "B04", "B08")
NAMES = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
SCL_EXCLUDE = [0, 1, 3, 8, 9, 10]  # no data, saturated, cloud shadow, cloud medium / high, thin cirrus
SPEEDUP_TARGET = 3.0  # odc / ours median, wall
MASK_TARGET = 1.2  # masked first_valid / plain mosaic, wall
ODC_CHUNK = 1024
WRITER_ENV = "BENCH_COMPOSITES_WRITER"  # how our cases write: "step" (one writer step) or "runs" (run build)


# ------------------------------------------------------------------------------------------------ scenes


@dataclass(frozen=True)
class Layout:
    """The grid (``width`` x ``height`` px at 10 m on UTM 32N, centred on the zone boundary) and its scenes:
    on each of ``dates`` days a UTM 32 tile over the west ``west_stop`` of the grid and a UTM 33 tile over
    the east from ``east_start``, both ``margin`` px beyond the grid's other edges; ``cut_dates`` cut their
    west tile by a swath edge (nodata west of it)."""

    center_lon: float = 12.0
    center_lat: float = 47.1
    width: int = 4096
    height: int = 3072
    dates: tuple[int, ...] = (1, 4, 6, 9, 11, 14, 16, 19, 21, 24)  # June 2024
    cloud_fractions: tuple[float, ...] = (0.22, 0.36, 0.26, 0.38, 0.20, 0.31, 0.24, 0.35, 0.28, 0.30)
    west_stop: float = 0.6
    east_start: float = 0.4
    margin: int = 96  # px, a multiple of 6 (the 10, 20 and 60 m lattices nest)
    cut_dates: tuple[int, ...] = (2, 6)  # indexes into ``dates``
    grain: float = 45.0  # DN of per-date sensor grain
    seed: int = 2406


WORLD_PAD = 600  # px around the grid that the generated landscape covers (a multiple of 6)
SCL_CLEAR = {"dark": 2, "vegetation": 4, "not_vegetated": 5, "water": 6, "unclassified": 7}


def scenes_folder(layout: Layout) -> Path:
    digest = hashlib.sha256(json.dumps(asdict(layout), sort_keys=True).encode()).hexdigest()[:10]
    return ROOT / f"scenes-v{GENERATOR_VERSION}-{digest}"


def grid_bbox(layout: Layout) -> list[float]:
    """The grid's bbox in EPSG:32632: centred on the layout's centre, edges on multiples of 60 m."""
    from pyproj import Transformer

    cx, cy = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(
        layout.center_lon, layout.center_lat
    )
    x0, y0 = round((cx - layout.width * 5) / 60) * 60, round((cy - layout.height * 5) / 60) * 60
    return [x0, y0, x0 + layout.width * 10, y0 + layout.height * 10]


def scene_items(layout: Layout) -> list[dict]:
    """The scenes' STAC items, generating the COGs first unless an identical generation is cached."""
    folder = scenes_folder(layout)
    manifest = folder / "items.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        hrefs = [a["href"] for item in saved["items"] for a in item["assets"].values()]
        if saved.get("version") == GENERATOR_VERSION and all(Path(h).exists() for h in hrefs):
            return saved["items"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    items = _generate(folder, layout)
    manifest.write_text(json.dumps({"version": GENERATOR_VERSION, "layout": asdict(layout), "items": items}))
    print(f"  generated {len(items)} scenes in {time.perf_counter() - started:.0f} s into {folder}", flush=True)
    return items


@dataclass(frozen=True)
class _Tile:
    name: str  # MGRS-like
    epsg: int
    x0: float  # upper-left corner, own CRS, multiples of 60 m
    y0: float
    shape: tuple[int, int]  # (rows, cols) at 10 m; 20 m is half
    rows10: np.ndarray | None  # world index of each 10 m pixel centre (None: the tile is on the world lattice)
    cols10: np.ndarray | None
    rows20: np.ndarray | None
    cols20: np.ndarray | None


def _tiles(layout: Layout, world_x0: float, world_y0: float) -> list[_Tile]:
    """The two fixed tiles: the west one on the world's own lattice (UTM 32), the east one in UTM 33 with the
    world index of each of its pixels (nearest: its pixels are the landscape's, resampled once)."""
    from odc.geo import geom
    from pyproj import Transformer

    x0, y0, x1, y1 = grid_bbox(layout)
    m = layout.margin * 10
    west_cols = math.ceil((layout.west_stop * layout.width + layout.margin) / 6) * 6
    west = _Tile("32TQT", 32632, x0 - m, y1 + m, (layout.height + 2 * layout.margin, west_cols), None, None, None, None)

    east32 = geom.box(x0 + math.floor(layout.east_start * layout.width / 6) * 60, y0 - m, x1 + m, y1 + m, "EPSG:32632")
    left, bottom, right, top = east32.to_crs("EPSG:32633", resolution=100).boundingbox
    ex0, ey0 = math.floor(left / 60) * 60, math.ceil(top / 60) * 60
    shape = (math.ceil((ey0 - bottom) / 60) * 6, math.ceil((right - ex0) / 60) * 6)
    to32 = Transformer.from_crs("EPSG:32633", "EPSG:32632", always_xy=True)
    index = {}
    for res in (10, 20):
        rows, cols = shape[0] * 10 // res, shape[1] * 10 // res
        xs = ex0 + (np.arange(cols) + 0.5) * res
        ys = ey0 - (np.arange(rows) + 0.5) * res
        wr, wc = np.empty((rows, cols), np.int32), np.empty((rows, cols), np.int32)
        for r in range(rows):
            wx, wy = to32.transform(xs, np.full(cols, ys[r]))
            wc[r] = np.floor((np.asarray(wx) - world_x0) / res)
            wr[r] = np.floor((world_y0 - np.asarray(wy)) / res)
        if wr.min() < 0 or wc.min() < 0:
            raise ValueError("the UTM 33 tile reaches beyond the generated landscape: raise WORLD_PAD")
        index[res] = (wr, wc)
    east = _Tile("33TUN", 32633, ex0, ey0, shape, *index[10], *index[20])
    return [west, east]


def _cut(shape: tuple[int, int], corners: tuple[float, float]) -> np.ndarray:
    """Valid pixels (by centre) east of a tilted swath edge from (top, bottom) fractions of the width."""
    rows, cols = shape
    y = (np.arange(rows, dtype=np.float32)[:, None] + 0.5) / rows
    x = (np.arange(cols, dtype=np.float32)[None, :] + 0.5) / cols
    return x >= corners[0] + (corners[1] - corners[0]) * y


def _world_classes(rng: np.random.Generator, fields: dict, window: tuple[slice, slice], cloud_fraction: float) -> dict:
    """One date's SCL on the world's 20 m lattice, and the cloud field that brightens the bands: clouds (8, 9),
    their shadows (3) and thin cirrus (10) over ``cloud_fraction`` of the grid's ``window``."""
    from mosaic_assets.demo.scenes import _field

    bright, veg = fields["bright20"], fields["veg20"]
    shape = bright.shape
    side = max(shape)
    clouds = _field(rng, side)[: shape[0], : shape[1]].astype(np.float32)
    cirrus = _field(rng, side)[: shape[0], : shape[1]].astype(np.float32)
    scl = np.full(shape, SCL_CLEAR["not_vegetated"], dtype=np.uint8)
    scl[veg > 0.2] = SCL_CLEAR["vegetation"]
    scl[bright < np.quantile(bright, 0.05)] = SCL_CLEAR["water"]
    noise = rng.random(shape, dtype=np.float32)
    scl[noise < 0.01] = SCL_CLEAR["unclassified"]
    scl[(noise >= 0.01) & (noise < 0.014)] = SCL_CLEAR["dark"]
    scl[noise > 0.9998] = 1  # saturated

    def masks(share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        opaque = clouds > np.quantile(clouds[window], 1 - share)
        dy, dx = 14, -22  # shadows 280 m south, 440 m west of their clouds (sun from the south-east)
        shadow = np.zeros(shape, dtype=bool)
        shadow[dy:, : shape[1] + dx] = opaque[:-dy, -dx:]
        thin = cirrus > np.quantile(cirrus[window], 1 - 0.08 * cloud_fraction)
        return opaque, shadow & ~opaque, thin & ~opaque

    share = 0.7 * cloud_fraction
    for _ in range(4):  # the opaque share that makes clouds + shadows + cirrus the date's fraction
        opaque, shadow, thin = masks(share)
        share *= cloud_fraction / float((opaque | shadow | thin)[window].mean())
    opaque, shadow, thin = masks(share)
    scl[shadow] = 3
    scl[thin] = 10
    scl[opaque] = 8
    scl[clouds > np.quantile(clouds[window], 1 - 0.45 * share)] = 9
    return {"scl": scl, "clouds": clouds}


def _world_bands(
    rng: np.random.Generator, layout: Layout, d: int, fields: dict, classes: dict
) -> dict[str, np.ndarray]:
    """One date's four 10 m bands on the world lattice (uint16), clouds bright, shadows dark."""
    up = lambda a: np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)  # noqa: E731 (20 m -> 10 m)
    scl = up(classes["scl"])
    cloud = up(classes["clouds"])
    pheno = 0.85 + 0.3 * d / max(1, len(layout.dates) - 1)  # June greening
    out = {}
    for band in (b for b in S2_BANDS if b.key in BANDS):
        values = band.base + band.bright * fields["bright10"] + band.veg * pheno * fields["veg10"]
        values += layout.grain * rng.standard_normal(values.shape, dtype=np.float32) + 25 * (d % 3)
        values = np.where(scl == 3, 0.45 * values, values)
        values = np.where(scl == 10, values + 700, values)
        opaque = (scl == 8) | (scl == 9)
        values = np.where(opaque, 3800 + 900 * np.clip(cloud, -1, 3) + 0.2 * values, values)
        out[band.key] = np.clip(np.rint(values), 1, 65535).astype(np.uint16)
    return out


def _sample(world: np.ndarray, tile: _Tile, res: int, offset: tuple[int, int]) -> np.ndarray:
    """The tile's pixels out of a world array (10 or 20 m)."""
    rows, cols = tile.shape[0] * 10 // res, tile.shape[1] * 10 // res
    if tile.rows10 is None:
        r0, c0 = offset[0] * 10 // res, offset[1] * 10 // res
        return world[r0 : r0 + rows, c0 : c0 + cols]
    wr, wc = (tile.rows10, tile.cols10) if res == 10 else (tile.rows20, tile.cols20)
    return world[wr, wc]


def _generate(folder: Path, layout: Layout) -> list[dict]:
    from affine import Affine

    from mosaic_assets.demo.scenes import _field

    rng = np.random.default_rng(layout.seed)
    x0, _, _, y1 = grid_bbox(layout)
    world_x0, world_y0 = x0 - WORLD_PAD * 10, y1 + WORLD_PAD * 10
    shape20 = ((layout.height + 2 * WORLD_PAD) // 2, (layout.width + 2 * WORLD_PAD) // 2)
    side = max(shape20)
    bright20 = _field(rng, side)[: shape20[0], : shape20[1]].astype(np.float32)
    veg20 = _field(rng, side)[: shape20[0], : shape20[1]].astype(np.float32)
    up = lambda a: np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)  # noqa: E731
    fields = {"bright20": bright20, "veg20": veg20, "bright10": up(bright20), "veg10": up(veg20)}
    pad20 = WORLD_PAD // 2
    window = (slice(pad20, pad20 + layout.height // 2), slice(pad20, pad20 + layout.width // 2))  # the grid
    tiles = _tiles(layout, world_x0, world_y0)
    west_offset = ((WORLD_PAD - layout.margin), (WORLD_PAD - layout.margin))  # the west tile in the world (px)
    items = []
    for d, day in enumerate(layout.dates):
        classes = _world_classes(rng, fields, window, layout.cloud_fractions[d])
        bands = _world_bands(rng, layout, d, fields, classes)
        orbit = (22, 65)[d % 2]
        sensed = datetime(2024, 6, day, 10, 10 if orbit == 22 else 20, 31, tzinfo=UTC)  # one datatake: both tiles
        for tile in tiles:
            cut = (0.22, 0.34) if (d in layout.cut_dates and tile.epsg == 32632) else None
            item_id = f"S2{'AB'[d % 2]}_MSIL2A_{sensed:%Y%m%dT%H%M%S}_R{orbit:03d}_T{tile.name}_{sensed:%Y%m%d}T180000"
            out = folder / item_id
            out.mkdir()
            assets = {}
            for key in BANDS:
                pixels = np.ascontiguousarray(_sample(bands[key], tile, 10, west_offset))
                if cut is not None:
                    pixels = np.where(_cut(pixels.shape, cut), pixels, 0).astype(np.uint16)
                transform = Affine(10, 0, tile.x0, 0, -10, tile.y0)
                href = out / f"T{tile.name}_{sensed:%Y%m%dT%H%M%S}_{key}_10m.tif"
                _write_cog(href, pixels, tile.epsg, transform, "AVERAGE")
                assets[key] = _asset(key, href, transform, pixels.shape)
            scl = np.ascontiguousarray(_sample(classes["scl"], tile, 20, west_offset))
            if cut is not None:
                scl = np.where(_cut(scl.shape, cut), scl, 0).astype(np.uint8)
            transform = Affine(20, 0, tile.x0, 0, -20, tile.y0)
            href = out / f"T{tile.name}_{sensed:%Y%m%dT%H%M%S}_SCL_20m.tif"
            _write_cog(href, scl, tile.epsg, transform, "NEAREST")
            assets["SCL"] = _asset(None, href, transform, scl.shape)
            inside = scl != 0
            excluded = float(np.isin(scl[inside], SCL_EXCLUDE).mean())
            classes_pct = {str(c): round(100 * float((scl[inside] == c).mean()), 3) for c in (1, 3, 8, 9, 10)}
            items.append(_item(item_id, tile, orbit, sensed, cut, assets, excluded, classes_pct))
            print(
                f"  scene {len(items)}/{2 * len(layout.dates)}: {item_id} ({100 * excluded:.0f} % masked)", flush=True
            )
    return items


def _asset(key: str | None, href: Path, transform, shape: tuple[int, int]) -> dict:
    """One asset as Planetary Computer's sentinel-2-l2a items write it (no raster:bands, no nodata)."""
    t = transform
    asset: dict = {"href": str(href.resolve()), "type": COG_TYPE}
    if key is None:
        asset.update({"title": "Scene classfication map (SCL)", "gsd": 20.0})  # PC's own spelling
    else:
        band = next(b for b in S2_BANDS if b.key == key)
        number = int(key[1:])
        asset.update(
            {
                "title": f"Band {number} - {band.description} - 10m",
                "gsd": 10.0,
                "eo:bands": [
                    {
                        "name": key,
                        "common_name": band.common_name,
                        "description": f"Band {number} - {band.description}",
                        "center_wavelength": band.center,
                        "full_width_half_max": band.fwhm,
                    }
                ],
            }
        )
    rows, cols = shape
    asset["proj:bbox"] = [t.c, t.f + t.e * rows, t.c + t.a * cols, t.f]
    asset["proj:shape"] = [rows, cols]
    asset["proj:transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    asset["roles"] = ["data"]
    return asset


def _item(item_id, tile: _Tile, orbit, sensed, cut, assets, excluded, classes_pct) -> dict:
    from odc.geo import geom
    from shapely.geometry import Polygon

    rows, cols = tile.shape
    corners = [(0, 0), (cols, 0), (cols, rows), (0, rows)]
    if cut is not None:
        corners = [(cut[0] * cols, 0), (cols, 0), (cols, rows), (cut[1] * cols, rows)]
    world = [(tile.x0 + 10 * x, tile.y0 - 10 * y) for x, y in corners]
    footprint = geom.Geometry(Polygon(world), f"EPSG:{tile.epsg}").to_crs("EPSG:4326", resolution=cols * 10 / 16)
    bounds = footprint.boundingbox
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
        ],
        "id": item_id,
        "collection": COLLECTION,
        "geometry": json.loads(json.dumps(footprint.json)),
        "bbox": [bounds.left, bounds.bottom, bounds.right, bounds.top],
        "properties": {
            "datetime": sensed.isoformat().replace("+00:00", ".024000Z"),
            "platform": f"Sentinel-2{item_id[2]}",
            "proj:epsg": tile.epsg,
            "instruments": ["msi"],
            "s2:mgrs_tile": tile.name,
            "constellation": "Sentinel 2",
            "eo:cloud_cover": round(100 * excluded, 4),
            "s2:product_type": "S2MSI2A",
            "sat:orbit_state": "descending",
            "sat:relative_orbit": orbit,
            "s2:processing_baseline": "05.10",
            "s2:nodata_pixel_percentage": 0.0 if cut is None else round(100 * (cut[0] + cut[1]) / 2, 4),
            "s2:cloud_shadow_percentage": classes_pct["3"],
            "s2:medium_proba_clouds_percentage": classes_pct["8"],
            "s2:high_proba_clouds_percentage": classes_pct["9"],
            "s2:thin_cirrus_percentage": classes_pct["10"],
            "s2:saturated_defective_pixel_percentage": classes_pct["1"],
        },
        "assets": assets,
        "links": [],
    }


# ------------------------------------------------------------------------------------------------ cases

METHODS = ("median", "odc", "first_valid", "mosaic")  # the default run
ALL_METHODS = (*METHODS, "odc_day")  # odc_day: odc-stac grouping a day's tiles first (not the same median)
ENGINE_CASES = {
    # method: (composite, masked)
    "median": ({"method": "median"}, True),
    "first_valid": ({"method": "first_valid"}, True),
    "mosaic": ({"method": "first_valid"}, False),  # no mask: today's single-GTI-read path
    "scaling_mosaic": ({"method": "first_valid"}, False),  # benchmarks.scaling's plain mosaic
}


def spec_document(case: str, bbox: list[float], partition_bytes: str) -> dict:
    # a case's own name, or a known case's with a suffix (benchmarks.scaling's other partition sizes)
    known = ENGINE_CASES.get(case) or next((v for k, v in ENGINE_CASES.items() if case.startswith(f"{k}_")), None)
    composite, masked = known or ({"method": "median"}, True)
    mosaic = {
        "name": f"composites_{case}",
        "stac": {"url": "http://127.0.0.1:1", "collections": [COLLECTION]},  # never contacted
        "bands": [{"name": NAMES[b], "asset": b, "nodata": 0} for b in BANDS],
        "area": {"bbox": bbox, "crs": "EPSG:32632"},
        "crs": "EPSG:32632",
        "resolution": 10,
        "time": {"start": STEP, "step": "monthly"},
        "dtype": "uint16",
        "nodata": 0,
        "resampling": "nearest",
        "use_overviews": False,
        "chunks": {"y": 1024, "x": 1024},
        "partition_bytes": partition_bytes,
        "composite": composite,
    }
    if masked:
        mosaic["mask"] = {"asset": "SCL", "exclude": SCL_EXCLUDE}  # no dilation, so odc-stac can match it
    return {"mosaics": [mosaic]}


@cache
def _engine(job_path: str):
    """Spec, grid, GTI files and store of a job file (once per process: pool workers inherit it)."""
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles
    from mosaic_assets.engine.spec import parse_specs

    job = json.loads(Path(job_path).read_text())
    (spec,) = parse_specs(job["spec"])
    return spec, MosaicGrid.from_spec(spec), GtiFiles.for_step(Path(job["gti"]), STEP), job["store"]


def prepare(case: str, items: list[dict], bbox: list[float], partition_bytes: str) -> dict:
    """An engine case's scene table and GTI, or odc-stac's items; returns the job (written next to them)."""
    from mosaic_assets.engine.catalog import scene_table
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles, build_gti, priorities
    from mosaic_assets.engine.spec import parse_specs

    folder = ROOT / "work" / case
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    document = spec_document(case, bbox, partition_bytes)
    (spec,) = parse_specs(document)
    grid = MosaicGrid.from_spec(spec)
    job = {"case": case, "spec": document, "store": str(folder / "store.zarr"), "blocks": grid.block_keys()}
    table = scene_table(spec, items)
    if case.startswith("odc"):
        # best first (odc-stac fuses first-valid-wins; irrelevant to a median, kept as the harness does)
        rank = dict(zip(table["item_id"], priorities(spec, table).tolist()))
        ordered = sorted(items, key=lambda i: -rank[i["id"]])
        (folder / "items.json").write_text(json.dumps([_as_odc_item(i) for i in ordered]))
        job["items"] = str(folder / "items.json")
    else:
        job["gti"] = str(folder / "gti")
        job["tiles"] = build_gti(spec, grid, table, GtiFiles.for_step(folder / "gti", STEP))
    (folder / "job.json").write_text(json.dumps(job, indent=1))
    return job


def _as_odc_item(item: dict) -> dict:
    """odc-stac reads band dtype and nodata from ``raster:bands``, which Planetary Computer does not write."""
    assets = {}
    for key, asset in item["assets"].items():
        dtype = "uint8" if key == "SCL" else "uint16"
        assets[key] = {**asset, "raster:bands": [{"data_type": dtype, "nodata": 0}]}
    return {**item, "assets": assets, "links": []}


# ------------------------------------------------------------------------------------------------ one run


def _write_batch(job_path: str, keys: list[str]) -> dict:
    """Consecutive blocks in one task, as a ranged run writes them; and this worker's peak RSS so far."""
    from benchmarks.measure import own_peak_rss_mb
    from mosaic_assets.engine.keys import BlockIndex
    from mosaic_assets.engine.writer import write_block

    spec, grid, files, store = _engine(job_path)
    results = [asdict(write_block(spec, grid, store, files, 0, grid.block(BlockIndex.parse(k)))) for k in keys]
    return {"pid": os.getpid(), "peak_rss_mb": own_peak_rss_mb(), "results": results}


def step_child(job_path: str, workers: int) -> dict:
    """Every block as one chunk-writer step with ``workers`` CPUs writes a ranged run's partitions
    (``engine.parallel_write.write_blocks``: pieces, per-worker memory and GDAL thread shares)."""
    from benchmarks.measure import Section, peak_rss_mb
    from mosaic_assets.engine.parallel_write import BlockTask, write_blocks

    spec, grid, files, store = _engine(job_path)
    tasks = [BlockTask(b.key, files, 0, b) for b in grid.blocks()]
    with Section() as section:
        outcomes = write_blocks(spec, grid, store, tasks, cpus=workers)
    failed = [o.error for o in outcomes if o.error]
    if failed:
        raise RuntimeError(failed[0])
    results = [o.result for o in outcomes]
    return {
        "wall_s": section.wall_s,
        "cpu_s": section.cpu_s,
        "peak_rss_mb": peak_rss_mb(),
        "sum_rss_mb": peak_rss_mb() * workers,  # an upper bound: every worker at the largest's peak
        "workers_rss_mb": [],
        "blocks": len(results),
        "batch_size": len(results),
        "scenes_per_block": statistics.fmean(r.scenes for r in results),
        "valid_pixels": sum(r.valid_pixels for r in results),
        "chunks_written": sum(r.chunks_written for r in results),
    }


def engine_child(job_path: str, workers: int) -> dict:
    from benchmarks.measure import Section, own_peak_rss_mb, peak_rss_mb
    from mosaic_assets.engine import writer  # noqa: F401 (loaded before the fork: workers start with it)
    from mosaic_assets.engine.build_order import batch_size
    from mosaic_assets.engine.workers import worker_pool

    spec, grid, files, store = _engine(job_path)
    keys = grid.block_keys()
    size = batch_size(len(keys), workers, spec.operations.partitions_per_run)
    batches = [keys[i : i + size] for i in range(0, len(keys), size)]
    pool = worker_pool(workers)  # forked now, while this process has one thread
    with Section() as section:
        futures = [pool.submit(_write_batch, job_path, b) for b in batches]
        outcomes = [f.result() for f in futures]
        pool.shutdown(wait=True)  # workers reaped: their CPU is in RUSAGE_CHILDREN
    results = [r for o in outcomes for r in o["results"]]
    per_worker: dict[int, float] = {}
    for o in outcomes:
        per_worker[o["pid"]] = max(per_worker.get(o["pid"], 0.0), o["peak_rss_mb"])
    return {
        "wall_s": section.wall_s,
        "cpu_s": section.cpu_s,
        "peak_rss_mb": peak_rss_mb(),
        "sum_rss_mb": own_peak_rss_mb() + sum(per_worker.values()),
        "workers_rss_mb": sorted(per_worker.values()),
        "blocks": len(results),
        "batch_size": size,
        "scenes_per_block": statistics.fmean(r["scenes"] for r in results),
        "valid_pixels": sum(r["valid_pixels"] for r in results),
        "chunks_written": sum(r["chunks_written"] for r in results),
    }


def odc_load(items: list, geobox, chunks: dict | None, groupby="item"):
    import odc.stac

    return odc.stac.load(
        items,
        bands=[*BANDS, "SCL"],
        geobox=geobox,
        chunks=chunks,
        groupby=(lambda item, parsed, idx: item.id) if groupby == "item" else groupby,
        resampling={"*": "nearest"},
        fail_on_error=True,
    )


def odc_median(ds):
    """(band, y, x) float32: the masked median, NaN where no observation is usable. Same rule as ours: a pixel
    is an observation where its SCL class is not excluded and any band holds data (``spec.valid_mask``)."""
    data = ds[list(BANDS)].to_dataarray("band")
    usable = ~ds["SCL"].isin(SCL_EXCLUDE) & (data != 0).any("band")
    return data.where(usable).median("time")


def odc_child(job_path: str, workers: int, groupby: str = "item") -> dict:
    import dask
    import pystac
    import xarray as xr

    from benchmarks.measure import Section, peak_rss_mb
    from mosaic_assets.engine.store import VARIABLE, compressors

    job = json.loads(Path(job_path).read_text())
    spec, grid = _spec_grid(job["spec"])
    items = [pystac.Item.from_dict(i) for i in json.loads(Path(job["items"]).read_text())]
    cy, cx = grid.chunk_shape
    with Section() as section:
        ds = odc_load(items, grid.geobox, {"x": ODC_CHUNK, "y": ODC_CHUNK}, groupby)
        median = odc_median(ds)
        # round half to even (numpy's, as ours), then uint16 with 0 where nothing was usable
        out = median.round().fillna(0).astype("uint16").transpose("band", "y", "x").expand_dims(time=[0])
        out = xr.Dataset({VARIABLE: out.chunk({"band": len(BANDS), "y": cy, "x": cx}).drop_vars("spatial_ref")})
        encoding = {VARIABLE: {"chunks": (1, len(BANDS), cy, cx), "compressors": compressors(spec)}}
        with dask.config.set(scheduler="threads", num_workers=workers):
            out.to_zarr(job["store"], mode="w", encoding=encoding, zarr_format=3, consolidated=False)
    return {
        "wall_s": section.wall_s,
        "cpu_s": section.cpu_s,
        "peak_rss_mb": peak_rss_mb(),
        "sum_rss_mb": peak_rss_mb(),
        "items": len(items),
        "time_slices": int(ds.sizes["time"]),
    }


def _spec_grid(document: dict):
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.spec import parse_specs

    (spec,) = parse_specs(document)
    return spec, MosaicGrid.from_spec(spec)


# (file suffix, function) -> label; "own" is the function's own time (its numpy work), "cum" with what it calls
PROFILED = {
    ("composite_read.py", "group"): ("cum", "GTI open + read, one scene's group (composite path)"),
    ("gti_cache.py", "read"): ("cum", "GTI read, all scenes of a group (kept GTI, plain path)"),
    ("rasterio/__init__.py", "open"): ("own", "rasterio.open (every open: GTIs, scene headers)"),
    ("masks.py", "usable"): ("cum", "masks.usable (np.isin over int64 codes)"),
    ("composite.py", "median"): ("cum", "composite.median (per band and strip)"),
    ("~", "<method 'sort' of 'numpy.ndarray' objects>"): ("own", "np.sort (the median's sort along observations)"),
    ("composite_read.py", "_median"): ("own", "_median's own numpy (stacking, mask bits)"),
    ("composite_read.py", "_streamed"): ("own", "_streamed's own numpy (boolean copies)"),
    ("writer.py", "verify_scenes"): ("cum", "verify_scenes (headers)"),
    ("writer.py", "block_scenes"): ("cum", "block_scenes (index query)"),
    ("writer.py", "write_region"): ("cum", "write_region (zarr)"),
}


def profile_child(case: str, job_path: str, key: str) -> dict:
    """One block written in this process under cProfile: where ``write_block``'s time goes."""
    import cProfile
    import pstats

    from mosaic_assets.engine.keys import BlockIndex
    from mosaic_assets.engine.store import ensure_template
    from mosaic_assets.engine.writer import write_block

    spec, grid, files, _ = _engine(job_path)
    store = str(Path(job_path).parent / "profile.zarr")
    shutil.rmtree(store, ignore_errors=True)
    ensure_template(spec, grid, store, 1)
    block = grid.block(BlockIndex.parse(key))
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = write_block(spec, grid, store, files, 0, block)
    profiler.disable()
    wall = time.perf_counter() - started
    shutil.rmtree(store, ignore_errors=True)
    found = {}
    for (path, _, name), (_, calls, own, cum, _) in pstats.Stats(profiler).stats.items():
        for (suffix, function), (kind, label) in PROFILED.items():
            if name == function and path.endswith(suffix):
                entry = found.setdefault(label, {"calls": 0, "s": 0.0})
                entry["calls"] += calls
                entry["s"] += own if kind == "own" else cum
    return {"block": key, "scenes": result.scenes, "write_block_s": wall, "parts": found}


def child(case: str, job_path: str, arg: str, result_path: str) -> None:
    """One measured run (``arg``: the worker count), or one profiled block (``arg``: its key)."""
    if case.startswith("profile:"):
        outcome = profile_child(case.removeprefix("profile:"), job_path, arg)
    elif case.startswith("odc"):
        outcome = odc_child(job_path, int(arg), "solar_day" if case == "odc_day" else "item")
    elif os.environ.get(WRITER_ENV, "step") == "step":
        outcome = step_child(job_path, int(arg))
    else:
        outcome = engine_child(job_path, int(arg))
    Path(result_path).write_text(json.dumps(outcome))


def run_profile(job: dict, key: str) -> dict:
    """``profile_child`` in its own process (fresh GDAL caches), after the timed runs."""
    import subprocess

    folder = ROOT / "work" / job["case"]
    result_path = folder / "profile.json"
    cmd = [sys.executable, "-m", "benchmarks.composites", "--child", f"profile:{job['case']}"]
    subprocess.run([*cmd, str(folder / "job.json"), key, str(result_path)], cwd=str(REPO), check=True)
    return json.loads(result_path.read_text())


def _warm_page_cache(folder: Path) -> float:
    """Read every scene file (untimed) before each run: this machine's page cache drops them within
    minutes even with memory free (a cold read of the 1.2 GB took 8 s, a warm one 0.2 s), and whichever
    method ran after an eviction paid the disk. Seconds it took: a large figure says one was evicted."""
    started = time.perf_counter()
    for path in folder.rglob("*.tif"):
        path.read_bytes()
    return time.perf_counter() - started


def run_once(job: dict, workers: int, args: argparse.Namespace) -> dict:
    """One run of a case in its own measured process, into a fresh store (an engine case's template made
    first, untimed); redone (up to ``args.retries`` times) when others took more than ``args.disturbed``
    cores meanwhile (the discarded runs are kept, under ``disturbed``)."""
    from benchmarks.measure import run_measured
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.spec import parse_specs
    from mosaic_assets.engine.store import ensure_template

    folder = ROOT / "work" / job["case"]
    (spec,) = parse_specs(job["spec"])
    result_path = folder / "result.json"
    cmd = [sys.executable, "-m", "benchmarks.composites", "--child", job["case"], str(folder / "job.json")]
    cmd += [str(workers), str(result_path)]
    discarded = []
    for attempt in range(args.retries + 1):
        shutil.rmtree(job["store"], ignore_errors=True)
        if not job["case"].startswith("odc"):
            ensure_template(spec, MosaicGrid.from_spec(spec), job["store"], 1)
        result_path.unlink(missing_ok=True)
        warmed_s = _warm_page_cache(scenes_folder(Layout(width=args.width, height=args.height)))
        busy_before, waited = wait_quiet(args.quiet, args.quiet_timeout)
        load_before = os.getloadavg()[0]
        ticks_before = _cpu_ticks()
        stats = run_measured(cmd, cwd=str(REPO), timeout_s=1800)
        ticks_after = _cpu_ticks()
        if stats.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"{job['case']} failed (exit {stats.returncode})")
        busy_s = (ticks_after[1] - ticks_before[1]) / os.sysconf("SC_CLK_TCK")
        result = {
            **json.loads(result_path.read_text()),
            "process_wall_s": stats.wall_s,
            "process_cpu_s": stats.cpu_s,
            "load_1m_before": load_before,
            "others_cores_before": round(busy_before, 3),
            "quiet_wait_s": round(waited, 1),
            "page_cache_warm_s": round(warmed_s, 2),
            "others_cores_during": round(max(0.0, busy_s - stats.cpu_s) / stats.wall_s, 3),
            "attempt": attempt,
        }
        if result["others_cores_during"] <= args.disturbed or attempt == args.retries:
            return {**result, "disturbed": discarded}
        print(f"    disturbed ({result['others_cores_during']:.2f} cores of others): again", flush=True)
        discarded.append(result)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------ checks


def _zone33_area(items: list[dict], grid) -> np.ndarray:
    """(y, x) bool: grid pixels inside a UTM 33 scene's footprint (reprojected by both sides)."""
    from odc.geo import geom
    from rasterio.features import rasterize

    shapes = [
        geom.Geometry(i["geometry"], "EPSG:4326").to_crs(grid.geobox.crs, resolution=100).geom
        for i in items
        if i["properties"]["proj:epsg"] == 32633
    ]
    return rasterize(shapes, out_shape=grid.shape, transform=grid.geobox.affine, fill=0, default_value=1).astype(bool)


def coverage(items: list[dict], grid, step: int = 8) -> dict:
    """Observations per pixel (scenes with data there) and usable ones (SCL not excluded), on every
    ``step``-th pixel of the grid, read from the scenes' own SCL (nearest, as both sides read it)."""
    import rasterio
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import Resampling

    geobox = grid.geobox.zoom_out(step)
    observed = np.zeros(geobox.shape, dtype=np.int32)
    usable = np.zeros(geobox.shape, dtype=np.int32)
    for item in items:
        with rasterio.open(item["assets"]["SCL"]["href"]) as src:
            options = dict(crs=str(geobox.crs), transform=geobox.affine, width=geobox.shape.x, height=geobox.shape.y)
            with WarpedVRT(src, resampling=Resampling.nearest, nodata=0, **options) as vrt:
                scl = vrt.read(1)
        observed += scl != 0
        usable += ~np.isin(scl, SCL_EXCLUDE)
    pct = lambda a: {f"p{q}": float(np.percentile(a, q)) for q in (0, 5, 50, 95, 100)}  # noqa: E731
    return {
        "sampled_every_px": step,
        "observations": {**pct(observed), "mean": float(observed.mean()), "share_ge_8": float((observed >= 8).mean())},
        "usable": {**pct(usable), "mean": float(usable.mean()), "share_0": float((usable == 0).mean())},
        "masked_share": float(1 - usable.sum() / observed.sum()),
    }


def agreement(jobs: dict[str, dict], items: list[dict], grid) -> dict:
    """Ours (median) against odc-stac's, per pixel and per value; and masked first_valid against the plain mosaic."""
    import zarr

    out: dict = {}
    read = lambda case: zarr.open_array(jobs[case]["store"], path="mosaic", mode="r")[0]  # noqa: E731
    zone33 = _zone33_area(items, grid)
    for other in ("odc", "odc_day"):
        if {"median", other} <= jobs.keys():
            out[f"median_vs_{other}"] = compare(read("median"), read(other), zone33)
    if "median_vs_odc" in out:
        out["median_vs_odc"]["rounding"] = rounding_check(jobs["odc"], grid, read("median"), zone33)
    if {"first_valid", "mosaic"} <= jobs.keys():
        masked, plain = read("first_valid"), read("mosaic")
        same = np.all(masked == plain, axis=0)
        out["first_valid_vs_mosaic"] = {"equal": float(same.mean()), "changed_by_the_mask": float(1 - same.mean())}
    if {"median", "first_valid"} <= jobs.keys():
        a, b = read("median"), read("first_valid")
        out["median_nodata_equals_first_valid_nodata"] = bool(np.array_equal(np.all(a == 0, axis=0), np.all(b == 0, 0)))
    return out


def compare(ours: np.ndarray, theirs: np.ndarray, zone33: np.ndarray) -> dict:
    """Two (band, y, x) medians: pixels equal on every band, values within 1 DN, where they differ."""
    equal = np.all(ours == theirs, axis=0)
    diff = np.abs(ours.astype(np.int32) - theirs)
    data = np.any(ours != 0, axis=0) | np.any(theirs != 0, axis=0)
    one_nodata = np.any(ours != 0, axis=0) != np.any(theirs != 0, axis=0)
    differing = ~equal & data & ~one_nodata
    return {
        "pixels": int(equal.size),
        "equal": float(equal.mean()),
        "equal_valid": float(equal[data].mean()),
        "values_within_1dn": float((diff <= 1).mean()),
        "pixels_within_1dn": float(np.all(diff <= 1, axis=0).mean()),
        "equal_utm32_only": float(equal[~zone33].mean()),
        "equal_utm33_covered": float(equal[zone33].mean()),
        "mask_edge_pixels": int(one_nodata.sum()),
        "differing_pixels": int(differing.sum()),
        "differing_in_utm33_area": float(zone33[differing].mean()) if differing.any() else None,
        "abs_diff_of_differing_values": _percentiles(diff[:, differing]),
        "bands_differing_per_differing_pixel": float((diff[:, differing] > 0).sum(axis=0).mean())
        if differing.any()
        else None,
        "nodata_pixels_ours": float((~np.any(ours != 0, axis=0)).mean()),
    }


def _busiest_block(jobs: dict[str, dict], grid) -> str:
    from mosaic_assets.engine.writer import scenes_in_block

    job = next(j for j in jobs.values() if "gti" in j)
    _, _, files, _ = _engine(str(ROOT / "work" / job["case"] / "job.json"))
    return max(grid.blocks(), key=lambda b: len(scenes_in_block(grid, files, b))).key


def _percentiles(values: np.ndarray) -> dict | None:
    if values.size == 0:
        return None
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99, 100)}


def rounding_check(job: dict, grid, ours: np.ndarray, zone33: np.ndarray) -> dict:
    """odc-stac's median is float32 (xarray promotes uint16 under ``where``): an even count's median is the
    mean of the two middle values, x.5 for an odd sum. Untimed, on two 1024² windows (UTM 32 only; UTM 33
    covered): how many pixels end in .5 (``.astype("uint16")`` would truncate them, 1 DN under ours), and
    whether rounding half to even reproduces our values."""
    import pystac

    items = [pystac.Item.from_dict(i) for i in json.loads(Path(job["items"]).read_text())]
    height, width = grid.shape
    windows = {"utm32_only": None, "utm33_covered": None}
    for name in windows:
        want = zone33 if name == "utm33_covered" else ~zone33
        for y in range(0, height - 1023, 1024):
            for x in range(0, width - 1023, 1024):
                if want[y : y + 1024, x : x + 1024].all():
                    windows[name] = (y, x)
                    break
            if windows[name]:
                break
    result = {}
    for name, corner in windows.items():
        if corner is None:
            continue
        y, x = corner
        box = grid.geobox[y : y + 1024, x : x + 1024]
        values = odc_median(odc_load(items, box, None)).values  # (band, y, x) float32, numpy
        mine = ours[:, y : y + 1024, x : x + 1024]
        seen = ~np.isnan(values)
        half = seen & (np.abs(values - np.floor(values) - 0.5) < 1e-6)
        rounded = np.where(seen, np.rint(np.nan_to_num(values)), 0).astype(np.uint16)
        truncated = np.where(seen, np.nan_to_num(values), 0).astype(np.uint16)
        result[name] = {
            "window": [y, x],
            "values_ending_in_half": float(half.mean()),
            "rint_equals_ours": float((rounded == mine).mean()),
            "truncation_equals_ours": float((truncated == mine).mean()),
        }
    return result


# ------------------------------------------------------------------------------------------------ report

LABELS = {
    "median": "ours median (mask)",
    "odc": "odc-stac median (mask)",
    "odc_day": "odc-stac, solar_day groups",
    "first_valid": "ours first_valid (mask)",
    "mosaic": "ours mosaic (no mask)",
}


def summarise(runs: list[dict], methods: list[str]) -> dict:
    figures = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        figures[method] = {
            "wall_s": statistics.median(r["wall_s"] for r in mine),
            "cpu_s": statistics.median(r["cpu_s"] for r in mine),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in mine),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
            "sum_rss_mb": statistics.median(r["sum_rss_mb"] for r in mine),
            "process_s": statistics.median(r["process_wall_s"] for r in mine),
            "wall_s_range": [min(r["wall_s"] for r in mine), max(r["wall_s"] for r in mine)],
        }
    ratios = {}
    pairs = {
        "odc/median (speed-up)": ("odc", "median", SPEEDUP_TARGET, ">="),
        "odc_day/median": ("odc_day", "median", None, ""),
        "first_valid/mosaic": ("first_valid", "mosaic", MASK_TARGET, "<="),
        "median/mosaic": ("median", "mosaic", None, ""),
    }
    for label, (num, den, target, sense) in pairs.items():
        if not {num, den} <= set(methods):
            continue
        for what in ("wall_s", "cpu_s", "peak_rss_mb"):
            per_repeat = []
            for repeat in sorted({r["repeat"] for r in runs}):
                pair = {r["method"]: r[what] for r in runs if r["repeat"] == repeat}
                if {num, den} <= pair.keys():
                    per_repeat.append(pair[num] / pair[den])
            value = statistics.median(per_repeat)
            entry = {"median": value, "repeats": [round(x, 4) for x in per_repeat]}
            if target is not None and what == "wall_s":
                entry.update(target=f"{sense}{target}", met=value >= target if sense == ">=" else value <= target)
            if label.startswith("odc/") and what == "peak_rss_mb":
                entry.update(target=">1 (ours lower)", met=value > 1)
            ratios[f"{label} {what}"] = entry
    return {"figures": figures, "ratios": ratios}


def table(report: dict) -> str:
    s = report["sizes"]
    cov = report["coverage"]
    lines = [
        f"composites: grid {s['grid'][1]}x{s['grid'][0]} at 10 m on UTM 32N ({s['output_mpx']:.1f} Mpx, "
        "4 bands uint16), "
        f"{s['blocks']} blocks of {s['block'][1]}x{s['block'][0]}, {s['scenes']} scenes over {s['dates']} dates "
        f"(UTM 32 and 33; {s['disk_gb']:.2f} GB of COGs), {report['machine']['nproc']} cores, "
        f"medians of {report['repeats']}",
        f"  observations per pixel: min {cov['observations']['p0']:.0f}, median {cov['observations']['p50']:.0f}, "
        f"max {cov['observations']['p100']:.0f}; usable after the mask: median {cov['usable']['p50']:.0f} "
        f"(p5 {cov['usable']['p5']:.0f}); SCL masks {100 * cov['masked_share']:.1f} % of observations",
        "",
        f"{'method':<26} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12} {'sum RSS MB':>11} {'process s':>10}",
    ]
    for method, f in report["figures"].items():
        lines.append(
            f"{LABELS[method]:<26} {f['wall_s']:8.2f} {f['cpu_s']:8.2f} {f['peak_rss_mb']:12.0f} "
            f"{f['sum_rss_mb']:11.0f} {f['process_s']:10.2f}"
        )
    lines += ["", f"{'ratio (same repeat)':<34} {'median':>7}  {'target':>8}  status   repeats"]
    for key, r in report["ratios"].items():
        status = ("met" if r["met"] else "MISSED") if "met" in r else ""
        lines.append(f"{key:<34} {r['median']:7.3f}  {r.get('target', ''):>8}  {status:<7}  {r['repeats']}")
    runs = report["runs"]
    lines.append(
        f"\nothers' CPU during the timed runs: mean {statistics.fmean(r['others_cores_during'] for r in runs):.2f}, "
        f"max {max(r['others_cores_during'] for r in runs):.2f} cores; "
        f"{sum(len(r['disturbed']) for r in runs)} disturbed run(s) redone"
    )
    agree = report.get("agreement", {}).get("median_vs_odc")
    if agree:
        lines += [
            "",
            f"median, ours vs odc-stac: pixels equal {agree['equal']:.5f} (valid {agree['equal_valid']:.5f}), "
            f"within 1 DN {agree['pixels_within_1dn']:.5f} (values {agree['values_within_1dn']:.5f}); "
            f"equal where only UTM 32 scenes {agree['equal_utm32_only']:.5f}, under UTM 33 scenes "
            f"{agree['equal_utm33_covered']:.5f}; {agree['differing_pixels']} differing pixels "
            f"({100 * (agree['differing_in_utm33_area'] or 0):.1f} % under UTM 33), {agree['mask_edge_pixels']} "
            f"nodata on one side only",
        ]
        for name, r in agree["rounding"].items():
            lines.append(
                f"  odc float median, 1024² window {name}: {100 * r['values_ending_in_half']:.1f} % of values "
                f"end in .5; rounded half to even = ours {r['rint_equals_ours']:.5f}, "
                f"truncated = ours {r['truncation_equals_ours']:.5f}"
            )
    day = report.get("agreement", {}).get("median_vs_odc_day")
    if day:
        lines.append(
            f"median, ours vs odc-stac solar_day: pixels equal {day['equal']:.5f}; where only UTM 32 scenes "
            f"{day['equal_utm32_only']:.5f}, under UTM 33 scenes {day['equal_utm33_covered']:.5f} (a day's two tiles "
            "fused first: one observation per day where they overlap, ours counts both)"
        )
    fv = report.get("agreement", {}).get("first_valid_vs_mosaic")
    if fv:
        lines.append(
            f"first_valid with the mask changes {100 * fv['changed_by_the_mask']:.1f} % of the mosaic's pixels"
        )
    for case, p in report.get("profiles", {}).items():
        head = f"where write_block's time goes, {case}, block {p['block']} ({p['scenes']} scenes, one process)"
        lines.append(f"\n{head}: {p['write_block_s']:.2f} s")
        for label, part in p["parts"].items():
            lines.append(f"  {label:<56} {part['s']:7.2f} s  {part['calls']:5d} calls")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(ALL_METHODS)}")
    parser.add_argument("--workers", type=int, default=2, help="engine processes / dask threads (default 2)")
    parser.add_argument("--width", type=int, default=Layout.width, help="grid width, px at 10 m")
    parser.add_argument("--height", type=int, default=Layout.height, help="grid height, px at 10 m")
    parser.add_argument("--partition-bytes", default="32MiB", help="the spec's partition_bytes (default 32MiB)")
    parser.add_argument("--generate-only", action="store_true", help="make (or find) the scenes and stop")
    parser.add_argument("--wait-for", help="before timing, wait for a line starting with --wait-prefix in this file")
    parser.add_argument("--wait-prefix", default="rc=")
    parser.add_argument("--wait-timeout", type=float, default=25 * 60, help="seconds (default 25 min)")
    parser.add_argument("--quiet", type=float, default=0.3, help="before each run, wait until others use fewer cores")
    parser.add_argument("--quiet-timeout", type=float, default=300)
    parser.add_argument("--disturbed", type=float, default=0.3, help="others' mean cores during a run that redo it")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="then cProfile one block of each engine case")
    parser.add_argument("--profile-block", help="the block to profile (default: the one with the most scenes)")
    parser.add_argument(
        "--writer",
        choices=["step", "runs"],
        default="step",
        help="ours as one chunk-writer step with --workers CPUs (parallel_write.write_blocks, default), or as"
        " ranged runs side by side on a pool, one block after another in each (what run build does locally)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=4, metavar=("CASE", "JOB", "ARG", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    os.environ[WRITER_ENV] = args.writer  # the measured children inherit it

    started = datetime.now(UTC)
    layout = Layout(width=args.width, height=args.height)
    methods = [m for m in ALL_METHODS if m in args.methods.split(",")]
    print(f"scenes: {2 * len(layout.dates)} Sentinel-2-shaped, cached in {scenes_folder(layout)}", flush=True)
    items = scene_items(layout)
    disk_gb = sum(f.stat().st_size for f in scenes_folder(layout).rglob("*.tif")) / 1e9
    if args.generate_only:
        print(f"{len(items)} items, {disk_gb:.2f} GB")
        return
    bbox = grid_bbox(layout)
    jobs = {m: prepare(m, items, bbox, args.partition_bytes) for m in methods}
    waited = wait_for(args.wait_for, args.wait_prefix, args.wait_timeout)
    for path in scenes_folder(layout).rglob("*.tif"):  # the page cache, for every method alike
        path.read_bytes()

    runs: list[dict] = []
    for repeat in range(args.repeats):
        order = methods if repeat % 2 == 0 else methods[::-1]
        for method in order:
            result = {"method": method, "repeat": repeat, **run_once(jobs[method], args.workers, args)}
            runs.append(result)
            (ROOT / "runs-in-progress.json").write_text(json.dumps(runs, default=str))
            print(
                f"  repeat {repeat + 1} {method:<12} wall {result['wall_s']:6.2f} s  cpu {result['cpu_s']:6.2f} s  "
                f"RSS {result['peak_rss_mb']:5.0f} MB (sum {result['sum_rss_mb']:5.0f})  "
                f"load {result['load_1m_before']:.1f}  others {result['others_cores_during']:.2f}",
                flush=True,
            )

    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.spec import parse_specs

    (spec,) = parse_specs(next(iter(jobs.values()))["spec"])
    grid = MosaicGrid.from_spec(spec)
    print("agreement and coverage (untimed) ...", flush=True)
    agree = agreement(jobs, items, grid)
    cover = coverage(items, grid)
    report = {
        "benchmark": "composites",
        "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "repeats": args.repeats,
        "workers": args.workers,
        "config": {
            "layout": asdict(layout),
            "generator_version": GENERATOR_VERSION,
            "bbox_utm32": bbox,
            "partition_bytes": args.partition_bytes,
            "writer": args.writer,
            "chunks": list(grid.chunk_shape),
            "odc_chunks": ODC_CHUNK,
            "mask": {"asset": "SCL", "exclude": SCL_EXCLUDE, "dilate_pixels": 0},
            "odc": "odc.stac.load(groupby=item id, resampling nearest, chunks 1024) -> where(usable) -> "
            "median('time') -> round() -> fillna(0) -> uint16 -> to_zarr (same chunks, blosc-lz4), "
            f"dask threads={args.workers}",
            "methods": {m: jobs[m]["spec"]["mosaics"][0].get("composite") for m in methods if "gti" in jobs[m]},
        },
        "sizes": {
            "grid": list(grid.shape),
            "output_mpx": grid.shape[0] * grid.shape[1] / 1e6,
            "blocks": len(grid.block_keys()),
            "block": list(grid.block_shape),
            "scenes": len(items),
            "dates": len(layout.dates),
            "disk_gb": disk_gb,
            "tiles": {i["properties"]["s2:mgrs_tile"]: i["assets"]["B02"]["proj:shape"] for i in items},
            "input_mpx_10m_bands": sum(math.prod(i["assets"][b]["proj:shape"]) for i in items for b in BANDS) / 1e6,
            "scenes_per_block": {
                m: next(r["scenes_per_block"] for r in runs if r["method"] == m) for m in methods if "gti" in jobs[m]
            },
            "excluded_share_per_scene": {i["id"]: i["properties"]["eo:cloud_cover"] for i in items},
        },
        "coverage": cover,
        **waited,
        **summarise(runs, methods),
        "agreement": agree,
        "profiles": {},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")  # the figures, before any profile
    if args.profile:
        key = args.profile_block or _busiest_block(jobs, grid)
        print(f"profiling block {key} of each engine case, one process (untimed) ...", flush=True)
        report["profiles"] = {m: run_profile(jobs[m], key) for m in methods if "gti" in jobs[m]}
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    for job in jobs.values():  # the stores (~0.1 GB each): the scenes alone stay cached
        shutil.rmtree(job["store"], ignore_errors=True)
    print()
    print(table(report))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
