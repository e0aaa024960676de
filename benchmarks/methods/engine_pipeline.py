"""Everything ``mosaic_assets.run build`` does without Dagster: the baseline for Dagster's overhead.

STAC search, scene tables, GTIs, template, partitions, the two per-partition audits the blocking
asset checks run (``chunk_audit``, ``coverage_audit``: same functions, same inputs, in the worker
that wrote the block, as a ranged run's check steps do) and the previews, with the engine's
functions. What is left between this and ``dagster`` is orchestration: runs, steps, events, storage.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from functools import partial
from pathlib import Path

import geopandas as gpd

from mosaic_assets.engine.audit import chunk_audit, coverage_audit
from mosaic_assets.engine.build_order import BuildPieces, run_in_order
from mosaic_assets.engine.capacity import cpu_share, use_cpu_share
from mosaic_assets.engine.catalog import discover_time_steps, load_scene_table, open_client
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.preview import preview_markdown, write_preview
from mosaic_assets.engine.store import ensure_template
from mosaic_assets.engine.workers import worker_pool

from ..compare import Reader, zarr_reader
from ..job import Job
from ..mosaic import grid_of, layout_of, planned_partitions, spec_of, time_index, time_length
from ..prepare import prepare_step
from .engine import batches, write_partition


@functools.cache
def _scene_table(path: str) -> gpd.GeoDataFrame:
    return load_scene_table(path)


def write_and_audit(spec_path: str, data_root: str, store: str, parts: list[tuple[str, str]]) -> list[dict]:
    """A ranged run's work: write the partitions, then audit each; raises on a failed audit."""
    written = [write_partition(spec_path, data_root, store, step, block_key) for step, block_key in parts]
    spec, grid, layout = spec_of(spec_path), grid_of(spec_path), layout_of(spec_path, data_root)
    for step, block_key in parts:
        scenes, block, index = (
            _scene_table(str(layout.scene_table(step))),
            grid.block(BlockIndex.parse(block_key)),
            time_index(spec, step),
        )
        missing = chunk_audit(grid, store, index, block, scenes).missing
        coverage = coverage_audit(spec, grid, store, index, block, scenes)
        if missing or not coverage.passed:
            raise RuntimeError(f"audit failed for {step} {block_key}: missing {missing}, coverage {coverage}")
    return written


def preview(spec_path: str, data_root: str, step: str) -> str:
    """The preview asset's work: one time step's PNG and its markdown."""
    layout = layout_of(spec_path, data_root)
    index = time_index(spec_of(spec_path), step)
    return preview_markdown(write_preview(layout.store, index, layout.work_dir / "preview" / f"{step}.png"))


def _prepare_step(spec_path: str, data_root: str, step: str) -> None:
    prepare_step(spec_of(spec_path), Path(data_root), step)


def _template(spec_path: str, store: str, steps: list[str]) -> None:
    spec = spec_of(spec_path)
    ensure_template(spec, grid_of(spec_path), store, time_length(spec, steps))


def _batches(job: Job, steps: list[str]) -> dict[str, list[list[tuple[str, str]]]]:
    """Each step's batches, sized as build sizes its ranged runs (``engine.batches``)."""
    per_step: dict[str, list[list[tuple[str, str]]]] = {step: [] for step in steps}
    parts = planned_partitions(job.spec, job.data_root, steps)
    for batch in batches(parts, job.workers, spec_of(job.spec).operations.partitions_per_run):
        per_step[batch[0][0]].append(batch)
    return per_step


def run(job: Job, context: None = None) -> dict:
    data_root = str(Path(job.out) / "data")
    prepared = replace(job, data_root=data_root)
    store = layout_of(job.spec, data_root).store
    # each worker's CPU share for GDAL's threads, as run build gives its workers (capacity.cpu_share)
    share = functools.partial(use_cpu_share, cpu_share(job.workers))
    # first, as build does: forked before zarr or GDAL start threads
    with worker_pool(job.workers, initializer=share) as pool:
        steps = sorted(discover_time_steps(spec_of(job.spec), open_client(job.api)))
        pieces = BuildPieces(
            catalog=partial(_prepare_step, job.spec, data_root),
            template=partial(_template, job.spec, store, steps),
            batches=partial(_batches, prepared),
            write=partial(write_and_audit, job.spec, data_root, store),
            preview=partial(preview, job.spec, data_root),
        )
        written = run_in_order(pool, steps, pieces)
    return {"partitions": sum(len(b) for step_batches in written.values() for b in step_batches)}


def output(job: Job, step: str) -> Reader:
    store = layout_of(job.spec, str(Path(job.out) / "data")).store
    return zarr_reader(store, time_index(spec_of(job.spec), step))
