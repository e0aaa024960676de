"""``python -m benchmarks.mixed_resolution``: does a mixed-resolution Sentinel-2 mosaic cost more per output pixel?

The figure behind the "Real catalogs" issue's benchmark line: a mosaic of 2 bands at 10 m and 2 at 20 m
(B04 B08 B11 SCL, Planetary Computer's asset layout: one COG per band, each on its own grid) should cost
within 1.15 x per output pixel of a single-resolution one (B02 B03 B04 B08, all 10 m) on the same grid.
Both have one GTI per band (``engine.bandgroups``: one read group per asset and resampling), so what
differs is what each group reads: a 20 m asset has a quarter of the source pixels, upsampled onto the grid.

What it does, self-contained (no STAC API, no Dagster):

1. Generates (once, cached under ``.local/bench-mixed/`` keyed on ``GENERATOR_VERSION`` and the layout)
   Sentinel-2-shaped scenes: 10 m bands (B02 B03 B04 B08) at ``size_10m``², 20 m bands (B11 B12, and SCL
   as uint8 classes) at half that, same footprint, DEFLATE COGs with 512 tiles and overviews, in UTM 32
   and 33 around 12°E 47.1°N (as ``demo.scenes`` does), with items shaped like Planetary Computer's
   (``proj:epsg`` on the item, ``proj:shape`` / ``proj:transform`` / ``proj:bbox`` per asset).
2. Builds each case's GTI with the engine (``scene_table`` -> ``build_gti``), items passed directly.
3. Times ``write_block`` over every block of the grid, in one process and over a pool of processes
   (``engine.workers``, batches sized as ``build`` sizes its ranged runs), each run in its own measured
   process, repeated with the two cases alternating (and their order flipped every repeat).
4. Prints the table and writes ``benchmarks/results/mixed_resolution.json``.

Conventions as in ``benchmarks/README.md``: the timed work excludes imports and the template; CPU is
user + system of the run's process and every child it waited for; peak RSS is the largest process of
the tree; a ratio is the median of the same repeat's ratios. A figure, never an assertion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".local" / "bench-mixed"
RESULTS = Path(__file__).resolve().parent / "results" / "mixed_resolution.json"
GENERATOR_VERSION = 1  # bump when the same config makes other scenes or items (the cache keys on it)
COLLECTION = "sentinel-2-l2a"
STEP = "2024-06-01"  # the one (monthly) time step every scene falls in
TARGET = 1.15
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


# ------------------------------------------------------------------------------------------------ scenes


@dataclass(frozen=True)
class Layout:
    """Where the scenes are: ``columns`` x ``rows`` tiles around the centre, alternating UTM 32 / 33
    like a checkerboard (so half of every block is reprojected), jittered, some cut by a swath edge."""

    center_lon: float = 12.0
    center_lat: float = 47.1
    columns: int = 4
    rows: int = 2
    size_10m: int = 4096  # pixels per side of the 10 m bands; the 20 m bands have half
    column_spacing_m: float = 20_000.0
    row_spacing_m: float = 20_000.0
    jitter_m: float = 1_500.0
    seed: int = 2024


@dataclass(frozen=True)
class S2Band:
    key: str
    common_name: str
    description: str
    resolution: int
    center: float
    fwhm: float
    base: float  # DN of the scene-mean surface
    bright: float  # DN per unit of the brightness field
    veg: float  # DN per unit of the vegetation field


S2_BANDS = (
    S2Band("B02", "blue", "Blue", 10, 0.49, 0.098, 1500, 500, -150),
    S2Band("B03", "green", "Green", 10, 0.56, 0.045, 1800, 600, 100),
    S2Band("B04", "red", "Red", 10, 0.665, 0.038, 2100, 700, -450),
    S2Band("B08", "nir", "NIR 1", 10, 0.842, 0.145, 2400, 800, 900),
    S2Band("B11", "swir16", "SWIR 1", 20, 1.61, 0.143, 2600, 700, -250),
    S2Band("B12", "swir22", "SWIR 2", 20, 2.19, 0.242, 1900, 600, -350),
)
SCL_CLASSES = {"vegetation": 4, "not_vegetated": 5, "water": 6, "unclassified": 7, "cloud_medium": 8, "cloud_high": 9}


def scenes_folder(layout: Layout) -> Path:
    digest = hashlib.sha256(json.dumps(asdict(layout), sort_keys=True).encode()).hexdigest()[:10]
    return ROOT / f"scenes-v{GENERATOR_VERSION}-{digest}"


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
    items = []
    for k in range(layout.columns * layout.rows):
        items.append(_generate_scene(folder, layout, k))
        print(f"  scene {k + 1}/{layout.columns * layout.rows}: {items[-1]['id']}", flush=True)
    manifest.write_text(json.dumps({"version": GENERATOR_VERSION, "layout": asdict(layout), "items": items}))
    print(f"  generated in {time.perf_counter() - started:.0f} s into {folder}", flush=True)
    return items


def _generate_scene(folder: Path, layout: Layout, k: int) -> dict:
    from affine import Affine
    from pyproj import Transformer

    from mosaic_assets.demo.scenes import _field

    rng = np.random.default_rng([layout.seed, k])
    row, column = divmod(k, layout.columns)
    epsg = 32632 + (row + column) % 2
    # the tile's centre, laid out in the grid's zone (32) so the tiles tile the area whatever their own zone
    to32 = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    to_own = Transformer.from_crs("EPSG:32632", f"EPSG:{epsg}", always_xy=True)
    cx, cy = to32.transform(layout.center_lon, layout.center_lat)
    cx += (column - (layout.columns - 1) / 2) * layout.column_spacing_m + rng.uniform(-1, 1) * layout.jitter_m
    cy += (row - (layout.rows - 1) / 2) * layout.row_spacing_m + rng.uniform(-1, 1) * layout.jitter_m
    cx, cy = to_own.transform(cx, cy)
    half = layout.size_10m * 10 / 2
    # Sentinel-2 tile corners lie on multiples of 60 m, so the 10, 20 and 60 m lattices nest
    x0, y0 = round((cx - half) / 60) * 60, round((cy + half) / 60) * 60
    size10, size20 = layout.size_10m, layout.size_10m // 2
    grids = {10: (Affine(10, 0, x0, 0, -10, y0), size10), 20: (Affine(20, 0, x0, 0, -20, y0), size20)}

    # a swath edge (near north-south, tilted like Sentinel-2's) cuts every third tile: nodata west of it
    cut = (rng.uniform(0.15, 0.35), rng.uniform(0.25, 0.45)) if k % 3 == 0 else None
    brightness, vegetation = _field(rng, size10).astype(np.float32), _field(rng, size10).astype(np.float32)
    coarse = {
        "brightness": brightness.reshape(size20, 2, size20, 2).mean(axis=(1, 3)),
        "vegetation": vegetation.reshape(size20, 2, size20, 2).mean(axis=(1, 3)),
    }
    sensed = datetime(2024, 6, 3 + 5 * row + 2 * (column % 2), 10, 10, 29 + column, tzinfo=UTC)
    tile = f"{epsg % 100}T{'PQRS'[column % 4]}{'TS'[row % 2]}"
    item_id = f"S2{'AB'[k % 2]}_MSIL2A_{sensed:%Y%m%dT%H%M%S}_R{22 + 43 * (row % 2):03d}_T{tile}_{sensed:%Y%m%dT%H%M%S}"
    out = folder / item_id
    out.mkdir()
    assets: dict[str, dict] = {}
    for band in S2_BANDS:
        transform, size = grids[band.resolution]
        fields = {"brightness": brightness, "vegetation": vegetation} if band.resolution == 10 else coarse
        values = band.base + band.bright * fields["brightness"] + band.veg * fields["vegetation"]
        values += 120 * rng.standard_normal((size, size), dtype=np.float32) + 37 * k  # grain, scene offset
        pixels = np.clip(np.rint(values), 1, 65535).astype("uint16")
        pixels[~_valid(size, cut)] = 0
        href = out / f"T{tile}_{sensed:%Y%m%dT%H%M%S}_{band.key}_{band.resolution}m.tif"
        _write_cog(href, pixels, epsg, transform, "AVERAGE")
        assets[band.key] = _pc_asset(band, href, transform, size)
    scl = _scene_classes(rng, coarse, size20)
    scl[~_valid(size20, cut)] = 0
    href = out / f"T{tile}_{sensed:%Y%m%dT%H%M%S}_SCL_20m.tif"
    _write_cog(href, scl, epsg, grids[20][0], "NEAREST")
    assets["SCL"] = _pc_asset(None, href, grids[20][0], size20)
    return _pc_item(item_id, tile, epsg, sensed, grids[10], cut, assets, float(np.round(rng.uniform(0, 60), 4)))


def _valid(size: int, cut: tuple[float, float] | None) -> np.ndarray:
    """Valid pixels (by their centres) east of the swath edge from (top, bottom) fractions of the width."""
    if cut is None:
        return np.ones((size, size), dtype=bool)
    y = (np.arange(size, dtype=np.float32)[:, None] + 0.5) / size
    x = (np.arange(size, dtype=np.float32)[None, :] + 0.5) / size
    return x >= cut[0] + (cut[1] - cut[0]) * y


def _scene_classes(rng: np.random.Generator, fields: dict, size: int) -> np.ndarray:
    """SCL-like classes that agree with the 20 m content: water dark, clouds bright, vegetation green."""
    brightness, vegetation = fields["brightness"], fields["vegetation"]
    scl = np.full((size, size), SCL_CLASSES["not_vegetated"], dtype=np.uint8)
    scl[vegetation > 0.2] = SCL_CLASSES["vegetation"]
    scl[brightness < np.quantile(brightness, 0.05)] = SCL_CLASSES["water"]
    scl[brightness > np.quantile(brightness, 0.96)] = SCL_CLASSES["cloud_medium"]
    scl[brightness > np.quantile(brightness, 0.99)] = SCL_CLASSES["cloud_high"]
    scl[rng.random((size, size)) < 0.01] = SCL_CLASSES["unclassified"]
    return scl


def _write_cog(path: Path, data: np.ndarray, epsg: int, transform, overview_resampling: str, nodata: float = 0) -> None:
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    profile = dict(
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=str(data.dtype),
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=nodata,
    )
    with rasterio.Env(GDAL_CACHEMAX=256), MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
        with mem.open() as src:
            rasterio.shutil.copy(
                src,
                str(path),
                driver="COG",
                COMPRESS="DEFLATE",
                PREDICTOR=3 if data.dtype.kind == "f" else 2,
                BLOCKSIZE=512,
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING=overview_resampling,
                NUM_THREADS="ALL_CPUS",
            )


def _pc_asset(band: S2Band | None, href: Path, transform, size: int) -> dict:
    """One asset as Planetary Computer's sentinel-2-l2a items write it (no raster:bands, no nodata)."""
    t = transform
    asset: dict = {"href": str(href.resolve()), "type": COG_TYPE}
    if band is None:
        asset.update({"title": "Scene classfication map (SCL)", "gsd": 20.0})  # PC's own spelling
    else:
        number = int(band.key[1:])
        asset.update(
            {
                "title": f"Band {number} - {band.description} - {band.resolution}m",
                "gsd": band.resolution,
                "eo:bands": [
                    {
                        "name": band.key,
                        "common_name": band.common_name,
                        "description": f"Band {number} - {band.description}",
                        "center_wavelength": band.center,
                        "full_width_half_max": band.fwhm,
                    }
                ],
            }
        )
    asset["proj:bbox"] = [t.c, t.f + t.e * size, t.c + t.a * size, t.f]
    asset["proj:shape"] = [size, size]
    asset["proj:transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    asset["roles"] = ["data"]
    return asset


def _pc_item(item_id, tile, epsg, sensed, grid10, cut, assets, cloud_cover) -> dict:
    from odc.geo import geom
    from shapely.geometry import Polygon

    transform, size = grid10
    corners = [(0, 0), (size, 0), (size, size), (0, size)]
    if cut is not None:
        corners = [(cut[0] * size, 0), (size, 0), (size, size), (cut[1] * size, size)]
    world = [transform * (float(x), float(y)) for x, y in corners]
    footprint = geom.Geometry(Polygon(world), f"EPSG:{epsg}").to_crs("EPSG:4326", resolution=size * 10 / 16)
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
            "proj:epsg": epsg,
            "instruments": ["msi"],
            "s2:mgrs_tile": tile,
            "constellation": "Sentinel 2",
            "eo:cloud_cover": cloud_cover,
            "s2:product_type": "S2MSI2A",
            "sat:orbit_state": "descending",
            "sat:relative_orbit": int(item_id.split("_R")[1][:3]),
            "s2:processing_baseline": "05.10",
            "s2:nodata_pixel_percentage": 0.0 if cut is None else round(100 * (cut[0] + cut[1]) / 2, 4),
        },
        "assets": assets,
        "links": [],
    }


# ------------------------------------------------------------------------------------------------ cases

CASES = {
    # all four bands at 10 m
    "single": [
        {"name": "blue", "asset": "B02", "nodata": 0},
        {"name": "green", "asset": "B03", "nodata": 0},
        {"name": "red", "asset": "B04", "nodata": 0},
        {"name": "nir", "asset": "B08", "nodata": 0},
    ],
    # specs/planetary_computer_s2_l2a.yaml's bands: two at 10 m, two at 20 m (the class band nearest)
    "mixed": [
        {"name": "red", "asset": "B04", "nodata": 0},
        {"name": "nir", "asset": "B08", "nodata": 0},
        {"name": "swir16", "asset": "B11", "nodata": 0},
        {"name": "scl", "asset": "SCL", "nodata": 0, "resampling": "nearest"},
    ],
}
SHARED_BANDS = ("red", "nir")  # same asset, same resampling in both cases: must come out identical


def area_bbox(layout: Layout, width: int, height: int) -> list[float]:
    """``width`` x ``height`` px at 10 m on UTM 32N, centred on the layout's centre, edges on the 10 m lattice."""
    from pyproj import Transformer

    cx, cy = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(
        layout.center_lon, layout.center_lat
    )
    x0, y0 = round((cx - width * 5) / 10) * 10, round((cy - height * 5) / 10) * 10
    return [x0, y0, x0 + width * 10, y0 + height * 10]


def spec_document(case: str, bbox: list[float], partition_bytes: str, resampling: str) -> dict:
    return {
        "mosaics": [
            {
                "name": f"mixedres_{case}",
                "stac": {"url": "http://127.0.0.1:1", "collections": [COLLECTION]},  # never contacted
                "bands": CASES[case],
                "area": {"bbox": bbox, "crs": "EPSG:32632"},
                "crs": "EPSG:32632",
                "resolution": 10,
                "time": {"start": STEP, "step": "monthly"},
                "dtype": "uint16",
                "nodata": 0,
                "resampling": resampling,
                "use_overviews": False,
                "chunks": {"y": 1024, "x": 1024},
                "partition_bytes": partition_bytes,
            }
        ]
    }


@cache
def _engine(job_path: str):
    """Spec, grid, GTI files and store of a job file (once per process: pool workers call it too)."""
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles
    from mosaic_assets.engine.spec import parse_specs

    job = json.loads(Path(job_path).read_text())
    (spec,) = parse_specs(job["spec"])
    return spec, MosaicGrid.from_spec(spec), GtiFiles.for_step(Path(job["gti"]), STEP), job["store"]


def prepare_case(case: str, items: list[dict], bbox: list[float], args: argparse.Namespace) -> dict:
    """Scene table and GTI of the case, built by the engine; returns the job (written next to them)."""
    from mosaic_assets.engine.bandgroups import read_groups
    from mosaic_assets.engine.catalog import scene_table
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles, build_gti
    from mosaic_assets.engine.spec import parse_specs

    folder = ROOT / "work" / case
    shutil.rmtree(folder, ignore_errors=True)
    document = spec_document(case, bbox, args.partition_bytes, args.resampling)
    (spec,) = parse_specs(document)
    grid = MosaicGrid.from_spec(spec)
    table = scene_table(spec, items)
    tiles = build_gti(spec, grid, table, GtiFiles.for_step(folder / "gti", STEP))
    job = {
        "case": case,
        "spec": document,
        "gti": str(folder / "gti"),
        "store": str(folder / "store.zarr"),
        "blocks": [b.key for b in grid.blocks()],
        "tiles": tiles,
        "groups": [
            {"asset": g.asset, "resampling": g.resampling, "bands": [b.name for b in g.bands]}
            for g in read_groups(spec)
        ],
    }
    (folder / "job.json").write_text(json.dumps(job, indent=1))
    return job


# ------------------------------------------------------------------------------------------------ one run


def _write_batch(job_path: str, keys: list[str]) -> list[dict]:
    """Consecutive blocks in one task, as a ranged run (or a pool worker of the benchmark's engine) writes them."""
    from mosaic_assets.engine.keys import BlockIndex
    from mosaic_assets.engine.writer import write_block

    spec, grid, files, store = _engine(job_path)
    return [asdict(write_block(spec, grid, store, files, 0, grid.block(BlockIndex.parse(k)))) for k in keys]


class _Phases:
    """Seconds spent in each step of ``write_block`` (profile runs only): the writer's module-level
    functions wrapped with timers, and each GTI read timed per read group. Engine code is unchanged."""

    STEPS = ("staged_locally", "block_scenes", "verify_scenes", "read_block", "write_region")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - started)

        return timed

    def summary(self, write_block_s: float) -> dict:
        steps = {k: round(self.seconds.get(k, 0.0), 3) for k in self.STEPS}
        reads = {
            k: {"s": round(v, 3), "reads": self.calls[k]}
            for k, v in sorted(self.seconds.items())
            if k.startswith("read ")
        }
        # the rest of write_block: the valid mask, counting chunks, the result
        rest = write_block_s - sum(steps.values())
        return {
            "write_block_s": round(write_block_s, 3),
            "steps_s": steps,
            "rest_s": round(rest, 3),
            "gti_reads": reads,
        }


class _TimedGtis:
    """``writer.open_gtis`` with each read timed under its GTI's XML name."""

    def __init__(self, inner, phases: _Phases) -> None:
        self.inner, self.phases = inner, phases

    def read(self, files, window):
        started = time.perf_counter()
        try:
            return self.inner.read(files, window)
        finally:
            self.phases.add(f"read {Path(str(files.xml)).name}", time.perf_counter() - started)

    def close(self) -> None:
        self.inner.close()


def _time_phases() -> _Phases:
    from mosaic_assets.engine import writer

    phases = _Phases()
    for name in _Phases.STEPS:
        setattr(writer, name, phases.wrap(name, getattr(writer, name)))
    writer.open_gtis = _TimedGtis(writer.open_gtis, phases)
    return phases


def child(job_path: str, workers: int, result_path: str, profile: bool) -> None:
    """One measured run: every block of the job written, by this process or by a pool of ``workers``."""
    from benchmarks.measure import Section, peak_rss_mb
    from mosaic_assets.engine.build_order import batch_size
    from mosaic_assets.engine.workers import worker_pool

    spec, grid, files, store = _engine(job_path)
    keys = json.loads(Path(job_path).read_text())["blocks"]
    extra: dict = {}
    if workers == 1:
        phases = _time_phases() if profile else None
        with Section() as section:
            results = _write_batch(job_path, keys)
        if phases is not None:
            extra = {"phases": phases.summary(sum(r["seconds"] for r in results))}
    else:
        size = batch_size(len(keys), workers, spec.operations.partitions_per_run)
        batches = [keys[i : i + size] for i in range(0, len(keys), size)]
        pool = worker_pool(workers)  # forked now, while this process has one thread
        with Section() as section:
            futures = [pool.submit(_write_batch, job_path, b) for b in batches]
            results = [r for f in futures for r in f.result()]
            pool.shutdown(wait=True)  # workers reaped: their CPU is in RUSAGE_CHILDREN
        extra = {"batch_size": size}
    outcome = {
        "wall_s": section.wall_s,
        "cpu_s": section.cpu_s,
        "peak_rss_mb": peak_rss_mb(),
        "blocks": len(results),
        "scenes_per_block": statistics.fmean(r["scenes"] for r in results),
        "partition_seconds": sum(r["seconds"] for r in results),
        "valid_pixels": sum(r["valid_pixels"] for r in results),
        "chunks_written": sum(r["chunks_written"] for r in results),
        **extra,
    }
    Path(result_path).write_text(json.dumps(outcome))


# ------------------------------------------------------------------------------------------------ harness


def wait_for(path: str | None, prefix: str, timeout_s: float, poll_s: float = 30.0) -> dict:
    """Wait until ``path`` has a line starting with ``prefix`` (another job that holds the cores is done)."""
    if not path:
        return {"waited_for": None}
    started = time.perf_counter()
    while True:
        try:
            done = any(line.startswith(prefix) for line in Path(path).read_text(errors="replace").splitlines())
        except OSError:
            done = False
        waited = time.perf_counter() - started
        if done or waited >= timeout_s:
            print(f"waited {waited:.0f} s for {path} ({'done' if done else 'TIMED OUT, measuring anyway'})", flush=True)
            return {"waited_for": path, "waited_s": round(waited, 1), "found": done}
        print(f"  {path}: no line starting with {prefix!r} yet, {waited:.0f} s waited; polling", flush=True)
        time.sleep(poll_s)


def _cpu_ticks() -> tuple[int, int]:
    """(all, busy) clock ticks of the whole machine since boot (/proc/stat; iowait and steal count as not busy)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    )
    return user + nice + system + idle + iowait + irq + softirq + steal, user + nice + system + irq + softirq


def machine_busy(seconds: float = 3.0) -> float:
    """Cores busy over the next ``seconds`` (this process sleeps meanwhile, so it is everyone else)."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    return (after[1] - before[1]) / os.sysconf("SC_CLK_TCK") / seconds


def wait_quiet(threshold: float, timeout_s: float) -> tuple[float, float]:
    """Wait (up to ``timeout_s``) until other processes use less than ``threshold`` cores; (busy, waited s)."""
    started = time.perf_counter()
    busy = machine_busy()
    while busy > threshold and time.perf_counter() - started < timeout_s:
        busy = machine_busy(10.0)
    return busy, time.perf_counter() - started


def run_once(job: dict, workers: int, profile: bool = False, args: argparse.Namespace | None = None) -> dict:
    """One run of a case in its own measured process, into a fresh store; repeated (up to ``args.retries``
    times) when other processes took more than ``args.disturbed`` cores on average meanwhile (a shared
    machine: the discarded runs are kept in the result, under ``disturbed``)."""
    from benchmarks.measure import run_measured
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.spec import parse_specs
    from mosaic_assets.engine.store import ensure_template

    quiet, disturbed_at, retries = (args.quiet, args.disturbed, args.retries) if args else (9e9, 9e9, 0)
    folder = ROOT / "work" / job["case"]
    (spec,) = parse_specs(job["spec"])
    result_path = folder / f"result-w{workers}{'-profile' if profile else ''}.json"
    cmd = [sys.executable, "-m", "benchmarks.mixed_resolution", "--child", str(folder / "job.json"), str(workers)]
    cmd += [str(result_path), *(["--profile"] if profile else [])]
    discarded = []
    for attempt in range(retries + 1):
        shutil.rmtree(job["store"], ignore_errors=True)
        ensure_template(spec, MosaicGrid.from_spec(spec), job["store"], 1)  # untimed, as in the benchmark's engine
        result_path.unlink(missing_ok=True)
        busy_before, waited = wait_quiet(quiet, args.quiet_timeout if args else 0)
        load_before = os.getloadavg()[0]
        ticks_before = _cpu_ticks()
        stats = run_measured(cmd, cwd=str(REPO), timeout_s=900)
        ticks_after = _cpu_ticks()
        if stats.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"{job['case']} with {workers} process(es) failed (exit {stats.returncode})")
        busy_s = (ticks_after[1] - ticks_before[1]) / os.sysconf("SC_CLK_TCK")
        result = {
            **json.loads(result_path.read_text()),
            "process_wall_s": stats.wall_s,
            "process_cpu_s": stats.cpu_s,
            "load_1m_before": load_before,
            "others_cores_before": round(busy_before, 3),
            "quiet_wait_s": round(waited, 1),
            # what the rest of the machine used while the run's process lived (tick-rounded: +-0.1 s or so)
            "others_cores_during": round(max(0.0, busy_s - stats.cpu_s) / stats.wall_s, 3),
            "attempt": attempt,
        }
        if result["others_cores_during"] <= disturbed_at or attempt == retries:
            return {**result, "disturbed": discarded}
        print(f"    disturbed ({result['others_cores_during']:.2f} cores of others): again", flush=True)
        discarded.append(result)
    raise AssertionError("unreachable")


def group_names(job: dict) -> dict[str, str]:
    """Each read group's GTI XML name (as the profile's reads are keyed) -> "asset (resampling)"."""
    return {
        f"read {STEP}{'' if n == 0 else f'.g{n}'}.gti": f"{g['asset']} ({g['resampling']})"
        for n, g in enumerate(job["groups"])
    }


def shared_bands_agree(jobs: dict[str, dict]) -> dict:
    """The bands both cases read from the same asset with the same resampling, compared pixel for pixel."""
    import zarr

    arrays = {c: zarr.open_array(j["store"], path="mosaic", mode="r") for c, j in jobs.items()}
    names = {c: [b["name"] for b in CASES[c]] for c in jobs}
    out = {}
    for band in SHARED_BANDS:
        a = arrays["single"][0, names["single"].index(band)]
        b = arrays["mixed"][0, names["mixed"].index(band)]
        out[band] = {"equal": float((a == b).mean()), "valid": float((a != 0).mean())}
    for case in jobs:
        out[f"{case}_valid_any_band"] = float((arrays[case][0] != 0).any(axis=0).mean())
    return out


def machine() -> dict:
    import rasterio
    import zarr

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
        "gdal": rasterio.__gdal_version__,
        "rasterio": rasterio.__version__,
        "zarr": zarr.__version__,
        "commit": commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else ""),
        "worker_memory_gb_env": os.environ.get("MOSAIC_WORKER_MEMORY_GB", "(default 2)"),
    }


def summarise(runs: list[dict], cases: list[str], workers_list: list[int], mpx: float) -> dict:
    figures: dict = {}
    for workers in workers_list:
        for case in cases:
            mine = [r for r in runs if r["case"] == case and r["workers"] == workers]
            figures[f"{case}/{workers}"] = {
                "wall_s": statistics.median(r["wall_s"] for r in mine),
                "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                "wall_s_per_mpx": statistics.median(r["wall_s"] for r in mine) / mpx,
                "cpu_s_per_mpx": statistics.median(r["cpu_s"] for r in mine) / mpx,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                "wall_s_range": [min(r["wall_s"] for r in mine), max(r["wall_s"] for r in mine)],
            }
    ratios: dict = {}
    for workers in workers_list:
        for what in ("wall_s", "cpu_s"):
            per_repeat = []
            for repeat in sorted({r["repeat"] for r in runs}):
                pair = {r["case"]: r[what] for r in runs if r["workers"] == workers and r["repeat"] == repeat}
                if {"single", "mixed"} <= pair.keys():
                    per_repeat.append(pair["mixed"] / pair["single"])
            ratios[f"{what}/{workers}"] = {
                "median": statistics.median(per_repeat),
                "repeats": [round(x, 4) for x in per_repeat],
                "met": statistics.median(per_repeat) <= TARGET,
            }
    return {"figures": figures, "ratios": ratios}


def table(report: dict) -> str:
    s = report["sizes"]
    lines = [
        f"mixed resolution: grid {s['grid'][1]}x{s['grid'][0]} at 10 m on UTM 32N ({s['output_mpx']:.1f} Mpx out, "
        f"4 bands uint16), {s['blocks']} blocks of {s['block'][1]}x{s['block'][0]}, {s['scenes']} scenes "
        f"({s['size_10m']}² at 10 m, {s['size_10m'] // 2}² at 20 m; UTM 32 and 33), "
        f"{report['machine']['nproc']} cores, "
        f"medians of {report['repeats']}",
        f"  single: {' '.join(CASES_ASSETS['single'])} (input {s['input_mpx']['single']:.0f} Mpx);  "
        f"mixed: {' '.join(CASES_ASSETS['mixed'])} (input {s['input_mpx']['mixed']:.0f} Mpx); "
        f"resampling {report['config']['resampling']}",
        "",
        f"{'case':<8} {'procs':>5} {'wall s':>8} {'cpu s':>8} {'wall s/Mpx':>11} {'cpu s/Mpx':>10} {'peak RSS MB':>12}",
    ]
    for key, f in report["figures"].items():
        case, workers = key.split("/")
        lines.append(
            f"{case:<8} {workers:>5} {f['wall_s']:8.2f} {f['cpu_s']:8.2f} {f['wall_s_per_mpx']:11.4f} "
            f"{f['cpu_s_per_mpx']:10.4f} {f['peak_rss_mb']:12.0f}"
        )
    lines += ["", f"{'ratio mixed/single (same repeat)':<36} {'median':>7}  {'target':>7}  status   repeats"]
    for key, r in report["ratios"].items():
        what, workers = key.split("/")
        label = f"{what.removesuffix('_s')} per Mpx, {workers} process{'es' if workers != '1' else ''}"
        status = "met" if r["met"] else "MISSED"
        lines.append(f"{label:<36} {r['median']:7.3f}  <={TARGET:<5}  {status:<7}  {r['repeats']}")
    runs = report["runs"]
    lines.append(
        f"\nothers' CPU during the timed runs: mean {statistics.fmean(r['others_cores_during'] for r in runs):.2f}, "
        f"max {max(r['others_cores_during'] for r in runs):.2f} cores; "
        f"{sum(len(r['disturbed']) for r in runs)} disturbed run(s) redone"
    )
    agree = report.get("agreement")
    if agree:
        lines.append("")
        lines.append(
            "shared bands (red B04, nir B08) equal between the mosaics: "
            + ", ".join(f"{b} {agree[b]['equal']:.5f}" for b in SHARED_BANDS)
            + f"; valid pixels single {agree['single_valid_any_band']:.3f}, mixed {agree['mixed_valid_any_band']:.3f}"
        )
    return "\n".join(lines)


CASES_ASSETS = {c: [f"{b['asset']}" for b in bands] for c, bands in CASES.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", default="1,2", help="process counts to time, comma-separated (default 1,2)")
    parser.add_argument("--grid", default="8192x6144", help="output grid, WIDTHxHEIGHT px at 10 m (default 8192x6144)")
    parser.add_argument("--size-10m", type=int, default=Layout.size_10m, help="10 m band side in px (20 m: half)")
    parser.add_argument("--partition-bytes", default="32MiB", help="the spec's partition_bytes (default 32MiB)")
    parser.add_argument("--resampling", default="nearest", help="the spec's resampling (SCL stays nearest)")
    parser.add_argument("--profile", action="store_true", help="also profile one one-process run of each case")
    parser.add_argument("--wait-for", help="before timing, wait until this file has a line starting with --wait-prefix")
    parser.add_argument("--wait-prefix", default="rc=")
    parser.add_argument("--wait-timeout", type=float, default=25 * 60, help="seconds (default 25 min)")
    parser.add_argument("--quiet", type=float, default=0.3, help="before each run, wait until others use fewer cores")
    parser.add_argument("--quiet-timeout", type=float, default=300, help="seconds to wait for --quiet per run")
    parser.add_argument("--disturbed", type=float, default=0.3, help="others' mean cores during a run that redo it")
    parser.add_argument("--retries", type=int, default=2, help="times a disturbed run is redone (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=3, metavar=("JOB", "WORKERS", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.profile)
        return

    started = datetime.now(UTC)
    layout = Layout(size_10m=args.size_10m)
    workers_list = [int(w) for w in args.workers.split(",")]
    width, height = (int(v) for v in args.grid.lower().split("x"))
    print(f"scenes: {layout.columns * layout.rows} Sentinel-2-shaped, cached in {scenes_folder(layout)}", flush=True)
    items = scene_items(layout)
    bbox = area_bbox(layout, width, height)
    jobs = {case: prepare_case(case, items, bbox, args) for case in CASES}
    waited = wait_for(args.wait_for, args.wait_prefix, args.wait_timeout)

    cases = list(CASES)
    runs: list[dict] = []
    warmup = [{"case": c, **run_once(jobs[c], max(workers_list), args=args)} for c in cases]  # page cache, untimed
    print("warm-up: " + ", ".join(f"{w['case']} {w['wall_s']:.2f} s" for w in warmup), flush=True)
    for repeat in range(args.repeats):
        order = cases if repeat % 2 == 0 else cases[::-1]
        for workers in workers_list:
            for case in order:
                result = {
                    "case": case,
                    "workers": workers,
                    "repeat": repeat,
                    **run_once(jobs[case], workers, args=args),
                }
                runs.append(result)
                print(
                    f"  repeat {repeat + 1} {case:<6} {workers} proc: wall {result['wall_s']:6.2f} s  "
                    f"cpu {result['cpu_s']:6.2f} s  RSS {result['peak_rss_mb']:5.0f} MB  "
                    f"load {result['load_1m_before']:.1f}",
                    flush=True,
                )
    agreement = shared_bands_agree(jobs)  # the last repeat's stores (same pixels whatever the process count)
    profiles = {}
    if args.profile:
        for case in cases:
            profiles[case] = {**run_once(jobs[case], 1, profile=True, args=args), "group_of": group_names(jobs[case])}
    for job in jobs.values():
        shutil.rmtree(job["store"], ignore_errors=True)

    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.spec import parse_specs

    (spec,) = parse_specs(jobs["single"]["spec"])
    grid = MosaicGrid.from_spec(spec)
    mpx = grid.shape[0] * grid.shape[1] / 1e6
    input_mpx = {
        case: sum(math.prod(item["assets"][b["asset"]]["proj:shape"]) for item in items for b in CASES[case]) / 1e6
        for case in CASES
    }
    report = {
        "benchmark": "mixed_resolution",
        "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "repeats": args.repeats,
        "config": {
            "layout": asdict(layout),
            "generator_version": GENERATOR_VERSION,
            "bbox_utm32": bbox,
            "partition_bytes": args.partition_bytes,
            "resampling": args.resampling,
            "use_overviews": False,
            "chunks": [1024, 1024],
            "cases": CASES,
            "read_groups": {c: j["groups"] for c, j in jobs.items()},
            "target": TARGET,
        },
        "sizes": {
            "grid": list(grid.shape),
            "output_mpx": mpx,
            "blocks": len(jobs["single"]["blocks"]),
            "block": list(grid.block_shape),
            "scenes": len(items),
            "size_10m": layout.size_10m,
            "input_mpx": input_mpx,
            "scenes_per_block": {c: next(r["scenes_per_block"] for r in runs if r["case"] == c) for c in cases},
        },
        **waited,
        **summarise(runs, cases, workers_list, mpx),
        "agreement": agreement,
        "runs": runs,
        "warmup": warmup,
        "profiles": profiles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print()
    print(table(report))
    if profiles:
        print()
        for case, p in profiles.items():
            phases = p["phases"]
            print(
                f"where write_block's time goes, {case} (1 process, {phases['write_block_s']:.2f} s over the blocks):"
            )
            for name, seconds in phases["steps_s"].items():
                print(f"  {name:<30} {seconds:7.2f} s")
            print(f"  {'rest (valid mask, chunk count)':<30} {phases['rest_s']:7.2f} s")
            for name, read in phases["gti_reads"].items():
                print(f"    {name:<28} {read['s']:7.2f} s  {read['reads']:3d} reads  {p['group_of'].get(name, '')}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
