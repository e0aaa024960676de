"""Ours via the engine, as a chunk-writer step writes: the Zarr template, then every planned (time
step, block) partition written by ``mosaic_assets.engine.parallel_write.write_blocks`` with the step's
CPU limit (``job.workers``, as ``MOSAIC_WORKER_CPUS`` on a writer pod), in ranged runs of the spec's
``partitions_per_run`` consecutive partitions (what ``BackfillPolicy.multi_run`` groups), one run after
another, as one writer pod takes them.

Why the step's model and not ``run build``'s (processes over ranged runs, one CPU each; the
``engine_pipeline`` and ``dagster`` methods measure that): at scale every partition is written by a
chunk-writer step on a pod, so its CPU per pixel is the bill. The difference from ``mosaic_chunks``
is orchestration.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from mosaic_assets.engine.build_order import batch_size
from mosaic_assets.engine.capacity import CPUS_ENV
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.parallel_write import BlockTask, write_blocks
from mosaic_assets.engine.store import ensure_template
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


def batches(parts: list[tuple[str, str]], workers: int, per_run: int) -> list[list[tuple[str, str]]]:
    """Runs of consecutive partitions of one time step, ``batch_size`` long: the size
    ``mosaic_assets.run.build`` gives its ranged runs (``engine_pipeline`` writes those)."""
    size = batch_size(len(parts), workers, per_run)
    out: list[list[tuple[str, str]]] = []
    for part in parts:
        if out and len(out[-1]) < size and out[-1][-1][0] == part[0]:
            out[-1].append(part)
        else:
            out.append([part])
    return out


def ranged_runs(parts: list[tuple[str, str]], per_run: int) -> list[list[tuple[str, str]]]:
    """Consecutive partitions, ``per_run`` at a time (``BackfillPolicy.multi_run``'s grouping)."""
    return [parts[i : i + per_run] for i in range(0, len(parts), per_run)]


def write_all(job: Job, store: str) -> list[dict]:
    """Template + all planned partitions, each ranged run one ``write_blocks`` call with the step's
    CPUs; returns each partition's write result."""
    spec, grid = spec_of(job.spec), grid_of(job.spec)
    ensure_template(spec, grid, store, time_length(spec, job.steps))
    layout = layout_of(job.spec, job.data_root)
    results = []
    for run in ranged_runs(planned_partitions(job.spec, job.data_root, job.steps), spec.operations.partitions_per_run):
        tasks = [
            BlockTask(key, layout.gti(step), time_index(spec, step), grid.block(BlockIndex.parse(key)))
            for step, key in run
        ]
        for outcome in write_blocks(spec, grid, store, tasks, cpus=job.workers):
            if outcome.error is not None:
                raise RuntimeError(f"partition {outcome.key}: {outcome.error}")
            results.append(asdict(outcome.result))
    return results


def run(job: Job, context: None = None) -> dict:
    os.environ[CPUS_ENV] = str(job.workers)  # the step's CPU limit, as the writer pod's environment sets it
    results = write_all(job, str(Path(job.out) / STORE))
    return {
        "partitions": len(results),
        "chunks_written": sum(r["chunks_written"] for r in results),
        "partition_seconds": sum(r["seconds"] for r in results),
    }


def output(job: Job, step: str) -> Reader:
    return zarr_reader(str(Path(job.out) / STORE), time_index(spec_of(job.spec), step))
