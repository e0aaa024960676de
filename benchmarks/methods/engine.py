"""Ours via the engine: the Zarr template, then every planned (time step, block) partition written by
``mosaic_assets.engine.writer.write_block``, partitions spread over ``job.workers`` processes.

Same process model as ``mosaic_assets.run build`` without Dagster: ``engine.workers``' pool, each task a batch of
consecutive blocks of one time step, sized as build sizes its ranged runs (so a worker's open GTI
serves neighbouring blocks, as in a ranged run). The difference between the two is orchestration.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from mosaic_assets.engine.build_order import batch_size
from mosaic_assets.engine.capacity import cpu_share, use_cpu_share
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.store import ensure_template
from mosaic_assets.engine.workers import worker_pool
from mosaic_assets.engine.writer import write_block

from ..compare import Reader, zarr_reader
from ..job import Job
from ..mosaic import grid_of, layout_of, planned_partitions, spec_of, time_index, time_length

STORE = "engine.zarr"


def write_partition(spec_path: str, data_root: str, store: str, step: str, block_key: str) -> dict:
    """One partition, as the ``mosaic_chunks`` asset body does it; also when it started (epoch s)."""
    started = time.time()
    spec, grid = spec_of(spec_path), grid_of(spec_path)
    files = layout_of(spec_path, data_root).gti(step)
    result = write_block(spec, grid, store, files, time_index(spec, step), grid.block(BlockIndex.parse(block_key)))
    return {**asdict(result), "started": started}


def write_batch(spec_path: str, data_root: str, store: str, parts: list[tuple[str, str]]) -> list[dict]:
    """Consecutive partitions in one task, as a ranged run writes them."""
    return [write_partition(spec_path, data_root, store, step, block_key) for step, block_key in parts]


def batches(parts: list[tuple[str, str]], workers: int, per_run: int) -> list[list[tuple[str, str]]]:
    """Runs of consecutive partitions of one time step, ``batch_size`` long: the size
    ``mosaic_assets.run.build`` gives its ranged runs."""
    size = batch_size(len(parts), workers, per_run)
    out: list[list[tuple[str, str]]] = []
    for part in parts:
        if out and len(out[-1]) < size and out[-1][-1][0] == part[0]:
            out[-1].append(part)
        else:
            out.append([part])
    return out


def write_all(job: Job, store: str, pool: ProcessPoolExecutor) -> list[dict]:
    """Template + all planned partitions over ``pool`` (see ``engine.workers``); returns each
    partition's write result."""
    spec, grid = spec_of(job.spec), grid_of(job.spec)
    ensure_template(spec, grid, store, time_length(spec, job.steps))
    parts = planned_partitions(job.spec, job.data_root, job.steps)
    futures = [
        pool.submit(write_batch, job.spec, job.data_root, store, b)
        for b in batches(parts, job.workers, spec.operations.partitions_per_run)
    ]
    return [r for f in futures for r in f.result()]


def run(job: Job, context: None = None) -> dict:
    started = time.time()
    # each worker's CPU share for GDAL's threads, as run build gives its workers (capacity.cpu_share)
    share = functools.partial(use_cpu_share, cpu_share(job.workers))
    with worker_pool(job.workers, initializer=share) as pool:  # first, while this process has one thread (it may fork)
        results = write_all(job, str(Path(job.out) / STORE), pool)
    return {
        "partitions": len(results),
        "chunks_written": sum(r["chunks_written"] for r in results),
        "partition_seconds": sum(r["seconds"] for r in results),
        # template + spawning the pool + its imports, until the first partition began
        "first_partition_after_s": min(r["started"] for r in results) - started,
    }


def output(job: Job, step: str) -> Reader:
    return zarr_reader(str(Path(job.out) / STORE), time_index(spec_of(job.spec), step))
