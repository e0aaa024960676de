"""A pool of worker processes that start with the parent's imports already loaded.

Why fork: a spawned worker re-imports Dagster, the definitions, GDAL and xarray before its first
task (measured: ~4 s of CPU per worker, on 2 cores a quarter of a large build's orchestration cost).
A forked worker shares the parent's loaded modules for free. Forking is only safe while the parent
has a single thread: zarr starts an I/O event-loop thread on first use, and a child forked after
that inherits the loop without its thread and hangs on its first write. So the pool forks every
worker at once, before the parent touches zarr, GDAL datasets or an instance, and falls back to
spawn when the process already has other Python threads (or the platform has no fork).

Native threads are another matter: numpy's OpenBLAS and pyarrow's jemalloc each start one at
import, and both register fork handlers (pthread_atfork) that make forking safe. Python 3.12 warns
on any fork of a process with more than one OS thread; that warning is silenced here, on purpose.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)


def start_method() -> str:
    """``fork`` while this process is single-threaded (and can fork), else ``spawn`` (logged: each
    spawned worker pays its imports again)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    if threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        log.info("worker pool spawns (slower start): this process already runs threads %s", names)
        return "spawn"
    return "fork"


def worker_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A pool whose ``workers`` processes are all started before this returns (forked now, while it
    is safe; spawned ones begin warming up at once instead of on their first task)."""
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(start_method()), initializer=initializer
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multi-threaded, use of fork", category=DeprecationWarning)
        for _ in range(workers):
            pool.submit(os.getpid)  # a fork pool launches all its workers on the first submit; spawn on demand
    return pool
