"""``python -m benchmarks.partition_probe MODE ARGS.json``: one partition writer in a fresh process.

Modes:
- ``rss``: write one block once; report the process's RSS before (imports, spec, grid loaded) and
  at its peak, so the writer's own memory is the difference;
- ``engine``: time ``write_block`` on a full and on an empty block, warm (after one write), repeated;
- ``dagster``: the same partitions as real materializations of ``<name>/mosaic_chunks`` on a Dagster
  instance (env from the harness), where an empty partition still costs a whole run.
Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from mosaic_assets.engine.gdal_env import worker_config, worker_memory_gb
from mosaic_assets.engine.gti_cache import open_gtis
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.writer import write_block

from .measure import own_peak_rss_mb
from .mosaic import grid_of, layout_of, spec_of, time_index


def _write(args: dict, block_key: str) -> float:
    spec, grid = spec_of(args["spec"]), grid_of(args["spec"])
    files = layout_of(args["spec"], args["data_root"]).gti(args["step"])
    block = grid.block(BlockIndex.parse(block_key))
    return write_block(spec, grid, args["store"], files, time_index(spec, args["step"]), block).seconds


def rss(args: dict) -> dict:
    spec, grid = spec_of(args["spec"]), grid_of(args["spec"])
    before = own_peak_rss_mb()
    seconds = _write(args, args["full"])
    by, bx = grid.block_shape
    return {
        "baseline_rss_mb": before,
        "peak_rss_mb": own_peak_rss_mb(),
        "seconds": seconds,
        "partition_mb": len(spec.bands) * by * bx * np.dtype(spec.dtype).itemsize / 2**20,
        "block_shape": [by, bx],
        "grid_shape": list(grid.shape),
        "gdal_cachemax_mb": int(worker_config(worker_memory_gb())["GDAL_CACHEMAX"]) / 2**20,
    }


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _unshared(args: dict, block_key: str) -> float:
    """A write that shares nothing with the previous one: the writer keeps its GTI (and the scenes'
    decoded tiles) open between blocks, so rewriting the same block would be read from that cache."""
    open_gtis.close()
    return _write(args, block_key)


def engine(args: dict) -> dict:
    _write(args, args["full"])  # warm: GDAL drivers, PROJ, imports
    full = _timed(lambda: _unshared(args, args["full"]), args["repeats"])
    empty = _timed(lambda: _unshared(args, args["empty"]), args["repeats"])
    return {"full_s": full, "empty_s": empty, "empty_over_full": empty / full}


def dagster(args: dict) -> dict:
    """One-partition runs through ``mosaic_assets.run.materialize``, the call ``run build`` makes."""
    import dagster as dg

    from mosaic_assets.defs.mosaic import MosaicPartitions
    from mosaic_assets.run import materialize as materialize_run

    spec, grid = spec_of(args["spec"]), grid_of(args["spec"])
    parts = MosaicPartitions.for_spec(spec, grid)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(parts.time.name, [args["step"]])

    def materialize(block_key: str) -> None:
        open_gtis.close()  # as in engine(): the run must not read the previous run's cached tiles
        materialize_run(f"{spec.name}/mosaic_chunks", str(parts.chunk_key(args["step"], block_key)))

    materialize(args["full"])  # warm
    full = _timed(lambda: materialize(args["full"]), args["repeats"])
    empty = _timed(lambda: materialize(args["empty"]), args["repeats"])
    return {"full_s": full, "empty_s": empty, "empty_over_full": empty / full}


def main(argv: list[str]) -> int:
    warnings.filterwarnings("ignore")
    mode, args = argv[0], json.loads(Path(argv[1]).read_text())
    print(json.dumps({"rss": rss, "engine": engine, "dagster": dagster}[mode](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
