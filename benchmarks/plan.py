"""``python -m benchmarks.plan --spec FILE``: what a full build of a spec costs, computed (not run).

For each mosaic: partitions per asset, Dagster runs for a full backfill under the assets' own
``BackfillPolicy`` (``mosaic_chunks``: ``multi_run(partitions_per_run)``, one ranged run per that many
blocks of a time step; the other partitioned assets: one run per partition), chunks and bytes written,
GTI sizes, object-store requests, the writers' CPU-hours, pod-hours, wall time, PUT rate and cost from
the measured CPU seconds per output Mpx (``benchmarks/results/scaling.json``) and the chunk-writer pod
shape (``defs.execution``), and whether the defaults stay under Dagster's recommended 100k partitions
per asset and the seed's ~5,000 concurrent tasks, or what to change. The grid math is
``MosaicGrid``'s and the footprint math is the GTI builder's own (``gti.scene_footprints``); what the
spec cannot say about the data (scenes per step, their size, coverage) comes from the spec file's
``plan:`` section or the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import yaml
from odc.geo import geom

from mosaic_assets.defs.execution import POOL_LIMITS, STORE_WRITES_POOL, WRITER_CPU
from mosaic_assets.engine.bandgroups import read_groups, stacks
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import scene_footprints, scene_location
from mosaic_assets.engine.spec import MosaicSpec, load_specs

DAGSTER_PARTITIONS_PER_ASSET = 100_000  # Dagster's recommended ceiling (DESIGN.md, facts checked)
CONCURRENT_TASKS = 5_000  # the seed's ceiling: one pod per task, etcd object limits
ENQUEUE_RUNS_PER_S = 1.0  # backfills enqueue about one run per second (DESIGN.md)
GPKG_ROW_OVERHEAD = 200  # bytes per GeoPackage row beyond geometry and location: fid, priority, item id, R-tree
COG_HEADER_REQUESTS = 1  # one ranged GET for a COG's header (GDAL reads the first 16 KB)
VCPU_HOUR_USD = 0.04  # a general-purpose on-demand vCPU-hour with its memory share (2026 list prices ~0.035-0.05)
SCALING = Path(__file__).resolve().parent / "results" / "scaling.json"
# without scaling.json: the figures measured on the 2-core reference machine (benchmarks/README.md)
DEFAULT_CPU_S_PER_MPX, DEFAULT_UTILISATION = 0.6, 0.9


def measured_rates() -> tuple[float, float, str]:
    """(CPU s per output Mpx, CPU used / CPU given, source), both at the most writers measured: a writer
    pod runs several (its CPUs' worth), and what one writer alone costs per Mpx is not what they cost."""
    if SCALING.exists():
        summary = json.loads(SCALING.read_text())["summary"]
        most = summary[max(summary, key=int)]
        return most["cpu_s_per_mpx"], min(1.0, most["utilisation"]), f"{SCALING.name} ({max(summary, key=int)} CPUs)"
    return DEFAULT_CPU_S_PER_MPX, DEFAULT_UTILISATION, "defaults (no scaling.json)"


@dataclass(frozen=True)
class DataAssumptions:
    years: float = 1.0
    scenes_per_step: int = 24
    scene_px: int = 2048
    scene_resolution: float = 10.0
    scene_tile_px: int = 512
    coverage: float = 1.0  # fraction of blocks (and chunks) that scenes touch
    codec_ratio: float = 2.0  # uncompressed / stored, from benchmarks/results/latest.json when there


@dataclass(frozen=True)
class Plan:
    mosaic: str
    grid_shape: tuple[int, int]
    chunk_shape: tuple[int, int]
    chunks_per_step: int
    block_shape: tuple[int, int]
    blocks: int
    time_steps: int
    partitions: dict[str, int]
    backfill_runs_all: int
    backfill_runs_touched: int
    chunk_runs_touched: int
    enqueue_hours: float
    writer_cpu_hours: float
    writer_pod_hours: float
    writer_pods: int
    writer_wall_hours: float
    puts_per_s: float
    cost_usd: float
    cost_usd_per_tb: float
    rates: str
    chunks_written: int
    bytes_uncompressed: int
    bytes_stored: int
    gti_bytes_per_tile: int
    gti_vertices_per_tile: int
    gti_bytes_per_step: int
    object_store_gets: int
    object_store_puts: int
    fits_partition_ceiling: bool
    fits_concurrency_ceiling: bool
    advice: list[str]


def time_steps(spec: MosaicSpec, years: float) -> int:
    per_year = {"daily": 365.25, "monthly": 12, "quarterly": 4, "yearly": 1}[spec.time.step]
    return max(1, round(per_year * years))


def representative_tile(spec: MosaicSpec, grid: MosaicGrid, data: DataAssumptions) -> tuple[int, int]:
    """GTI row of one scene at the area's centre in its own UTM zone: (bytes, footprint vertices),
    from the GTI builder's own footprint and location code."""
    centre = grid.geobox.extent.centroid.to_crs("EPSG:4326")
    lon, lat = centre.coords[0]
    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
    x, y = geom.point(lon, lat, "EPSG:4326").to_crs(f"EPSG:{epsg}").coords[0]
    size = data.scene_px * data.scene_resolution
    transform = [data.scene_resolution, 0.0, x - size / 2, 0.0, -data.scene_resolution, y + size / 2]
    scenes = gpd.GeoDataFrame(
        {"transform": [transform], "shape": [[data.scene_px, data.scene_px]], "crs": [f"EPSG:{epsg}"]},
        geometry=[None],
    )
    (footprint,) = scene_footprints(grid, scenes)
    assets = {
        asset: {
            "href": f"/vsis3/bucket/tiles/{asset}.tif",
            "crs": f"EPSG:{epsg}",
            "shape": [data.scene_px, data.scene_px],
            "transform": transform,
        }
        for asset in {group.asset for group in read_groups(spec)}
    }
    # every group's location, and the stacks the same-grid assets form (one inline VRT per scene each)
    groups = read_groups(spec) + stacks(spec, [assets])
    location = "".join(scene_location(spec, group, assets) for group in groups)
    vertices = int(shapely.get_num_coordinates(footprint))
    return len(shapely.to_wkb(footprint)) + len(location.encode()) + GPKG_ROW_OVERHEAD, vertices


def plan(spec: MosaicSpec, data: DataAssumptions) -> Plan:
    grid = MosaicGrid.from_spec(spec)
    steps = time_steps(spec, data.years)
    cy, cx = grid.chunk_grid
    by, bx = grid.block_grid
    blocks = by * bx
    chunk_partitions = steps * blocks
    partitions = {
        "scene_catalog": steps,
        "gti_index": steps,
        "zarr_template": 1,
        "mosaic_chunks": chunk_partitions,
        "preview": steps,
    }
    per_run = spec.operations.partitions_per_run  # mosaic_chunks' BackfillPolicy.multi_run(per_run)
    chunk_runs_all = steps * math.ceil(blocks / per_run)  # a ranged run never crosses a time step
    chunk_runs_touched = steps * math.ceil(blocks * data.coverage / per_run)
    runs_all = sum(partitions.values()) - chunk_partitions + chunk_runs_all
    runs_touched = runs_all - chunk_runs_all + chunk_runs_touched
    chunks_written = math.ceil(steps * cy * cx * data.coverage)
    cpu_s_per_mpx, utilisation, rates = measured_rates()
    cpu_hours = chunks_written * grid.chunk_shape[0] * grid.chunk_shape[1] / 1e6 * cpu_s_per_mpx / 3600
    pod_hours = cpu_hours / utilisation / WRITER_CPU
    pods = max(1, min(POOL_LIMITS[STORE_WRITES_POOL], chunk_runs_touched))
    wall_hours = pod_hours / pods
    chunk_bytes = len(spec.bands) * grid.chunk_shape[0] * grid.chunk_shape[1] * np.dtype(spec.dtype).itemsize
    tile_bytes, vertices = representative_tile(spec, grid, data)
    gets = steps * _gets_per_step(spec, grid, data)
    advice = _advice(spec, grid, steps, blocks, data)
    return Plan(
        mosaic=spec.name,
        grid_shape=grid.shape,
        chunk_shape=grid.chunk_shape,
        chunks_per_step=cy * cx,
        block_shape=grid.block_shape,
        blocks=blocks,
        time_steps=steps,
        partitions=partitions,
        backfill_runs_all=runs_all,
        backfill_runs_touched=runs_touched,
        chunk_runs_touched=chunk_runs_touched,
        enqueue_hours=runs_all / ENQUEUE_RUNS_PER_S / 3600,
        writer_cpu_hours=cpu_hours,
        writer_pod_hours=pod_hours,
        writer_pods=pods,
        writer_wall_hours=wall_hours,
        puts_per_s=chunks_written / max(1.0, wall_hours * 3600),
        cost_usd=pod_hours * WRITER_CPU * VCPU_HOUR_USD,
        cost_usd_per_tb=pod_hours * WRITER_CPU * VCPU_HOUR_USD / max(1e-12, chunks_written * chunk_bytes / 1e12),
        rates=rates,
        chunks_written=chunks_written,
        bytes_uncompressed=chunks_written * chunk_bytes,
        bytes_stored=int(chunks_written * chunk_bytes / data.codec_ratio),
        gti_bytes_per_tile=tile_bytes,
        gti_vertices_per_tile=vertices,
        gti_bytes_per_step=tile_bytes * data.scenes_per_step,
        object_store_gets=gets,
        object_store_puts=chunks_written + steps * 4,  # + per step: time coordinate and metadata rewrites
        fits_partition_ceiling=chunk_partitions <= DAGSTER_PARTITIONS_PER_ASSET,
        fits_concurrency_ceiling=blocks <= CONCURRENT_TASKS,
        advice=advice,
    )


def _gets_per_step(spec: MosaicSpec, grid: MosaicGrid, data: DataAssumptions) -> int:
    """Ranged GETs of one time step: per (block, scene, asset) a COG header plus one merged range per
    row of COG tiles the block crosses (GDAL_HTTP_MERGE_CONSECUTIVE_RANGES joins a row's tiles)."""
    scene = data.scene_px * data.scene_resolution / abs(grid.geobox.resolution.x)  # scene side in grid px
    bh, bw = grid.block_shape
    blocks_per_scene = (scene / bw + 1) * (scene / bh + 1)
    rows_per_pair = min(bh, scene) * abs(grid.geobox.resolution.x) / data.scene_resolution / data.scene_tile_px + 1
    assets = len({b.asset for b in spec.bands})
    return math.ceil(data.scenes_per_step * blocks_per_scene * assets * (COG_HEADER_REQUESTS + rows_per_pair))


def _advice(spec: MosaicSpec, grid: MosaicGrid, steps: int, blocks: int, data: DataAssumptions) -> list[str]:
    out = []
    chunk_bytes = len(spec.bands) * grid.chunk_shape[0] * grid.chunk_shape[1] * np.dtype(spec.dtype).itemsize
    cy, cx = grid.chunk_grid
    if steps * blocks > DAGSTER_PARTITIONS_PER_ASSET:
        max_blocks = DAGSTER_PARTITIONS_PER_ASSET // steps
        need = math.ceil(cy * cx / max(1, max_blocks)) * chunk_bytes
        per_asset_steps = max(1, DAGSTER_PARTITIONS_PER_ASSET // blocks)
        out.append(
            f"mosaic_chunks has {steps * blocks:,} partitions (> {DAGSTER_PARTITIONS_PER_ASSET:,}). Either raise "
            f"partition_bytes to >= {_mib(need)} (<= {max_blocks:,} blocks; a writer then holds ~3x that in RSS), "
            f"or split the time range into specs of <= {per_asset_steps} time steps each (one asset group per "
            f"spec), or partition Dagster by time only and fan blocks out inside the run."
        )
    if blocks > CONCURRENT_TASKS:
        out.append(
            f"one time step fans out to {blocks:,} partitions (> {CONCURRENT_TASKS:,} concurrent tasks): cap "
            "concurrency with the run queue (run_coordinator max_concurrent_runs / tag_concurrency_limits on "
            "dagster/partition/time) or raise partition_bytes."
        )
    runs = steps * math.ceil(blocks / spec.operations.partitions_per_run)
    if runs / ENQUEUE_RUNS_PER_S > 86_400:
        out.append(
            f"a full backfill enqueues {runs:,} ranged runs at ~1 run/s ({runs / 86_400:.1f} days just to "
            "enqueue): raise operations.partitions_per_run or partition_bytes."
        )
    if not out:
        out.append("the defaults fit: no change needed.")
    return out


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f}GiB" if n >= 2**30 else f"{n / 2**20:.0f}MiB"


def _size(n: float) -> str:
    for unit, div in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def render(p: Plan, data: DataAssumptions) -> str:
    ok = {True: "yes", False: "NO"}
    lines = [
        f"mosaic {p.mosaic}: grid {p.grid_shape[0]:,} x {p.grid_shape[1]:,} px, chunks {p.chunk_shape[0]}x"
        f"{p.chunk_shape[1]} ({p.chunks_per_step:,} per step), blocks of {p.block_shape[0]}x{p.block_shape[1]} px "
        f"({p.blocks:,} per step), {p.time_steps:,} time steps ({data.years:g} years)",
        "  partitions per asset: " + ", ".join(f"{k} {v:,}" for k, v in p.partitions.items()),
        f"  full backfill under the assets' BackfillPolicy (mosaic_chunks: {p.chunk_runs_touched:,} ranged runs of"
        f" the blocks with scenes): {p.backfill_runs_all:,} runs ({p.backfill_runs_touched:,} if only blocks with "
        f"scenes are requested); ~{p.enqueue_hours:,.1f} h to enqueue at ~1 run/s",
        f"  writers ({WRITER_CPU}-CPU pods, rates from {p.rates}): {p.writer_cpu_hours:,.0f} CPU-hours, "
        f"{p.writer_pod_hours:,.0f} pod-hours; {p.writer_pods:,} pods at once -> {p.writer_wall_hours:,.1f} h, "
        f"~{p.puts_per_s:,.0f} chunk PUTs/s; ~${p.cost_usd:,.0f} at ${VCPU_HOUR_USD}/vCPU-hour "
        f"(${p.cost_usd_per_tb:,.2f} per TB uncompressed)",
        f"  chunks written {p.chunks_written:,} (coverage {data.coverage:.0%}); {_size(p.bytes_uncompressed)} "
        f"uncompressed, ~{_size(p.bytes_stored)} stored at ratio {data.codec_ratio:.2f}",
        f"  GTI: ~{_size(p.gti_bytes_per_tile)} per tile (footprint of {p.gti_vertices_per_tile:,} vertices), "
        f"{data.scenes_per_step:,} tiles per step -> ~{_size(p.gti_bytes_per_step)} per step, "
        f"{_size(p.gti_bytes_per_step * p.time_steps)} in all",
        f"  object store: ~{p.object_store_gets:,} ranged GETs of scenes, ~{p.object_store_puts:,} PUTs of chunks",
        f"  <= {DAGSTER_PARTITIONS_PER_ASSET:,} partitions per asset: {ok[p.fits_partition_ceiling]};  one step's "
        f"fan-out <= {CONCURRENT_TASKS:,} concurrent tasks: {ok[p.fits_concurrency_ceiling]}",
    ]
    lines += [f"  -> {a}" for a in p.advice]
    return "\n".join(lines)


def assumptions(spec_file: Path, args: argparse.Namespace) -> DataAssumptions:
    """Defaults < the spec file's ``plan:`` section < command-line flags; codec ratio from the
    latest benchmark results when present."""
    values = asdict(DataAssumptions())
    latest = Path(__file__).resolve().parent / "results" / "latest.json"
    if latest.exists():
        codecs = json.loads(latest.read_text()).get("codecs", {}).get("codecs", {})
        default = next((v for k, v in codecs.items() if "default" in k), None)
        if default:
            values["codec_ratio"] = round(default["ratio"], 2)
    values.update((yaml.safe_load(spec_file.read_text()) or {}).get("plan") or {})
    values.update({k: v for k, v in vars(args).items() if k in values and v is not None})
    return DataAssumptions(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plan", description=__doc__)
    parser.add_argument("--spec", type=Path, default=Path(__file__).resolve().parent / "specs" / "europe_monthly.yaml")
    for name, kind in (
        ("years", float),
        ("scenes_per_step", int),
        ("scene_px", int),
        ("scene_resolution", float),
        ("scene_tile_px", int),
        ("coverage", float),
        ("codec_ratio", float),
    ):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    data = assumptions(args.spec, args)
    plans = [plan(spec, data) for spec in load_specs(args.spec)]
    if args.json:
        print(json.dumps({"assumptions": asdict(data), "plans": [asdict(p) for p in plans]}, indent=1))
    else:
        print(f"assumptions: {asdict(data)}")
        print("\n".join(render(p, data) for p in plans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
