"""Command line: build the demo data, and materialize every mosaic's asset graph through Dagster.

``python -m mosaic_assets.run demo-data`` generates scenes and loads them into the STAC API;
``python -m mosaic_assets.run build`` registers the time steps found in the STAC API as dynamic
partitions and materializes catalog -> GTI -> template -> chunks -> preview on the Dagster
instance at $DAGSTER_HOME, chunk partitions spread over worker processes (one per core).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

if TYPE_CHECKING:
    from mosaic_assets.engine.spec import MosaicSpec


def load_defs() -> dg.Definitions:
    """The code location's definitions (imported on first use: they read the spec from the environment)."""
    from mosaic_assets.definitions import defs

    return defs


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@functools.cache
def _instance() -> dg.DagsterInstance:
    """One instance per process: loading it per run was a large share of Dagster's per-run cost."""
    return dg.DagsterInstance.get()


BUILD_JOB_NAME = "__ephemeral_asset_job__"  # what dg.materialize names its runs: the UI shows them alike


@functools.cache
def _job(selection: tuple[str, ...]) -> dg.JobDefinition:
    """The asset job of one selection, resolved once per process. ``dg.materialize`` resolves a new
    Definitions (every mosaic's asset graph) per call: a catalog run took 0.87 s with it, 0.51 s without
    (one timeline each, large benchmark)."""
    defs = load_defs()
    job_defs = dg.Definitions(
        assets=defs.assets,
        resources=defs.resources,
        jobs=[dg.define_asset_job(BUILD_JOB_NAME, selection=list(selection))],
    )
    return job_defs.resolve_job_def(BUILD_JOB_NAME)


def materialize(selection: str | tuple[str, ...], partition_key: str | None, tags: dict | None = None) -> None:
    """One run on the instance at $DAGSTER_HOME; raises (naming the step) when it fails."""
    _job((selection,) if isinstance(selection, str) else selection).execute_in_process(
        run_config=QUIET_RUN_CONFIG, instance=_instance(), partition_key=partition_key, tags=tags
    )


def build_selections(spec: MosaicSpec) -> dict[str, tuple[str, ...]]:
    """The assets of each kind of build run: catalog (with its GTI), template, chunks, preview."""
    key = functools.partial("{}/{}".format, spec.name)
    return {
        "catalog": (key("scene_catalog"), key("gti_index")),
        "template": (key("zarr_template"),),
        "write": (key("mosaic_chunks"),),
        "preview": (key("preview"),),
    }


def materialize_range(selection: str | tuple[str, ...], keys: list[str]) -> None:
    """One ranged run over consecutive partition keys (what a backfill batch is)."""
    materialize(selection, None, {RANGE_START: keys[0], RANGE_END: keys[-1]})


def contiguous_batches(
    keys: list[str], ordered: list[str], size: int, group: Callable[[str], object] | None = None
) -> list[list[str]]:
    """Split ``keys`` into runs of consecutive keys of ``ordered`` (so a range holds no other key),
    each at most ``size`` long and, with ``group``, within one group: fewer runs, each carrying
    Dagster's per-run cost once.

    Chunk keys are grouped by time step: Dagster expands a range of a multi-partitioned asset per
    dimension ([first step..last step] x [first block..last block]), so a range crossing a time step
    is not the consecutive keys between its ends (measured: a build wrote some blocks twice and
    skipped others, 12 % of the benchmark's pixels nodata)."""
    position = {k: i for i, k in enumerate(ordered)}
    group = group or (lambda key: None)
    batches: list[list[str]] = []
    for key in sorted(keys, key=position.__getitem__):
        last = batches[-1] if batches else None
        if last and len(last) < size and position[key] == position[last[-1]] + 1 and group(key) == group(last[-1]):
            last.append(key)
        else:
            batches.append([key])
    return batches


def _warm_worker() -> None:
    """Pool initializer: load the definitions (already there in a forked worker) and the worker's own
    instance before its first run (measured: ~4 s of imports per spawned worker, a third of the
    chunk phase on the quick benchmark, when they waited for the first batch)."""
    load_defs()
    _instance()


def build(workers: int) -> list[dict]:
    """Materialize everything for every mosaic; returns a summary per mosaic."""
    from mosaic_assets.definitions import spec_path
    from mosaic_assets.engine.spec import load_specs
    from mosaic_assets.engine.workers import worker_pool

    specs = load_specs(spec_path())
    for spec in specs:  # before the pool: forked workers start with the definitions and jobs resolved
        for selection in build_selections(spec).values():
            _job(selection)
    with dg.DagsterInstance.get():  # create a new instance's storage once, before workers race to create it
        pass
    _instance.cache_clear()  # a forked worker must open its own instance, never share this process's
    with worker_pool(workers, initializer=_warm_worker) as pool:
        return [_build_mosaic(spec, workers, pool) for spec in specs]


def _build_mosaic(spec: MosaicSpec, workers: int, pool: ProcessPoolExecutor) -> dict:
    """Every asset of one mosaic as Dagster runs, in ``engine.build_order``'s order: catalog and GTI
    runs per time step, the template run, ranged chunk runs, preview runs."""
    from mosaic_assets.defs.mosaic import MosaicPartitions
    from mosaic_assets.defs.resources import DataRootResource, StacApiResource
    from mosaic_assets.engine.build_order import BuildPieces, batch_size, run_in_order
    from mosaic_assets.engine.catalog import discover_time_steps, load_scene_table
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.planner import blocks_with_scenes

    defs = load_defs()
    instance = _instance()
    stac_api: StacApiResource = defs.resources["stac_api"]
    data_root: DataRootResource = defs.resources["data_root"]
    started = time.perf_counter()
    grid = MosaicGrid.from_spec(spec)
    parts = MosaicPartitions.for_spec(spec, grid)
    layout = data_root.layout(spec)
    steps = sorted(discover_time_steps(spec, stac_api.client(spec)))
    instance.add_dynamic_partitions(parts.time.name, steps)

    def chunk_batches(steps: list[str]) -> dict[str, list[list[str]]]:
        """Each step's chunk keys (blocks with scenes) in ranged runs (``batch_size``), never crossing
        a time step (see ``contiguous_batches``)."""
        keys = [
            str(parts.chunk_key(step, block.key))
            for step in steps
            for block in blocks_with_scenes(grid, load_scene_table(layout.scene_table(step)))
        ]
        ordered = parts.chunks.get_partition_keys(dynamic_partitions_store=instance)
        size = batch_size(len(keys), workers, spec.operations.partitions_per_run)
        time_of = lambda key: MosaicPartitions.split_chunk_key(key)[0]  # noqa: E731
        per_step: dict[str, list[list[str]]] = {step: [] for step in steps}
        for batch in contiguous_batches(keys, ordered, size, group=time_of):
            per_step[time_of(batch[0])].append(batch)
        return per_step

    selections = build_selections(spec)
    pieces = BuildPieces(
        catalog=functools.partial(materialize, selections["catalog"]),
        template=functools.partial(materialize, selections["template"], None),
        batches=chunk_batches,
        write=functools.partial(materialize_range, selections["write"]),
        preview=functools.partial(materialize, selections["preview"]),  # a preview has per-step metadata
    )
    batches = run_in_order(pool, steps, pieces)
    return {
        "mosaic": spec.name,
        "store": layout.store,
        "time_steps": steps,
        "chunk_partitions": sum(len(b) for step_batches in batches.values() for b in step_batches),
        "chunk_runs": sum(len(step_batches) for step_batches in batches.values()),
        "preview": str(layout.work_dir / "preview" / f"{steps[-1]}.png") if steps else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def describe(summary: dict) -> str:
    ds = xr.open_zarr(summary["store"], consolidated=True, mask_and_scale=False)
    var = ds["mosaic"]
    lines = [
        f"mosaic {summary['mosaic']}: {summary['store']}",
        f"  dims {dict(var.sizes)}  dtype {var.dtype}  chunks {var.encoding.get('chunks')}",
        f"  crs {var.rio.crs}  GeoTransform {ds['spatial_ref'].attrs.get('GeoTransform')}",
        f"  time steps {summary['time_steps']}  chunk partitions written {summary['chunk_partitions']}"
        f" in {summary['chunk_runs']} runs"
        f"  in {summary['seconds']} s",
        f"  preview {summary['preview']}",
    ]
    return "\n".join(lines)


def demo_data(out_dir: Path, api_url: str, size: str) -> None:
    from datetime import datetime

    from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
    from mosaic_assets.demo.stac_load import upsert_collection, upsert_items

    config = SceneSetConfig() if size == "demo" else SceneSetConfig(scene_size=512, scenes_per_date=3)
    scenes = generate_scenes(out_dir, config)
    now = datetime.now(UTC)
    items = [scene_item(s, config.collection, now) for s in scenes]
    upsert_collection(api_url, collection_document(config.collection, items))
    upsert_items(api_url, config.collection, items)
    print(f"loaded {len(items)} scenes into {api_url}/collections/{config.collection}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mosaic_assets.run")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("demo-data", help="generate the demo scenes and load them into the STAC API")
    data.add_argument("--out", type=Path, default=Path(".local/demo/scenes"))
    data.add_argument("--api", default=os.environ.get("MOSAIC_STAC_API_URL", "http://127.0.0.1:8082"))
    data.add_argument("--size", choices=["demo", "small"], default="demo")
    run = sub.add_parser("build", help="materialize every mosaic through Dagster")
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.command == "demo-data":
        demo_data(args.out.resolve(), args.api.rstrip("/"), args.size)
    else:
        for summary in build(args.workers):
            print(describe(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
