"""A pool of worker processes that start with the parent's imports already loaded.

Why fork: a spawned worker re-imports Dagster, the definitions, GDAL and xarray before its first
task (measured: ~4 s of CPU per worker, on 2 cores a quarter of a large build's orchestration cost).
A forked worker shares the parent's loaded modules for free. Forking is only safe while the parent
has a single thread: zarr starts an I/O event-loop thread on first use, and a child forked after
that inherits the loop without its thread and hangs on its first write. So the pool forks every
worker at once, before the parent touches zarr, GDAL datasets or an instance.

A process that already runs threads (a Dagster step always does: its event queue feeder and its
termination handler) gets a fork server instead: one fresh, single-threaded process that imports the
entry point and the engine's writer once (``PRELOAD``) and forks each worker from there. Its start
costs about one spawned worker's imports, once per process, instead of once per worker (16 on a
16-CPU pod). The server keeps the environment it started with, so each worker takes the parent's
environment as it is when the pool is made (``_with_environment``). Spawn is the fallback where the
platform has neither.

Native threads are another matter: numpy's OpenBLAS and pyarrow's jemalloc each start one at
import, and both register fork handlers (pthread_atfork) that make forking safe. Python 3.12 warns
on any fork of a process with more than one OS thread; that warning is silenced here, on purpose.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)


PRELOAD = ("__main__", "mosaic_assets.engine.parallel_write")  # what the fork server imports once


def start_method() -> str:
    """``fork`` while this process is single-threaded (and can fork), else ``forkserver`` (logged:
    the first pool in this process starts the server), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    names = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    method = "forkserver" if "forkserver" in methods else "spawn"
    log.info("worker pool uses %s: this process already runs threads %s", method, names)
    return method


def worker_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A pool whose ``workers`` processes are all started before this returns (forked now, while it
    is safe; from a fork server or spawned, they begin warming up at once instead of on their first
    task)."""
    method = start_method()
    context = multiprocessing.get_context(method)
    if method != "fork":
        if method == "forkserver":
            context.set_forkserver_preload(list(PRELOAD))  # read when the server starts: once per process
        initializer = functools.partial(_with_environment, dict(os.environ), initializer)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multi-threaded, use of fork", category=DeprecationWarning)
        for _ in range(workers):
            pool.submit(os.getpid)  # a fork pool launches all its workers on the first submit; others on demand
    return pool


def _with_environment(environment: dict[str, str], then: Callable[[], None] | None) -> None:
    """Worker initializer: the parent's environment as it was when the pool was made (a fork server's
    is the one it started with), then ``then``."""
    os.environ.clear()
    os.environ.update(environment)
    if then is not None:
        then()
