"""How many CPUs a writer may use: the one place that decides it.

``MOSAIC_WORKER_CPUS`` wins (the chunk-writer pod sets it from its CPU limit; ``run build`` sets each of
its workers' share). Without it: the CPUs this process may run on (its affinity mask), capped by the
container's CPU quota (cgroup v2 ``cpu.max``, or v1's ``cfs_quota_us``), rounded down, at least 1: a pod
limited to 2 CPUs on a 64-core node must not start 64 workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

CPUS_ENV = "MOSAIC_WORKER_CPUS"
CGROUP = Path("/sys/fs/cgroup")
_THIS_THREAD: ContextVar[int | None] = ContextVar("mosaic_writer_cpus", default=None)


def worker_cpus() -> int:
    """Worker processes a chunk-writer step runs: this thread's share (``cpus_in_this_thread``), else
    ``MOSAIC_WORKER_CPUS``, else :func:`available_cpus`."""
    share = _THIS_THREAD.get()
    if share is not None:
        return share
    raw = os.environ.get(CPUS_ENV, "")
    if not raw:
        return available_cpus()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{CPUS_ENV}={raw!r} is not a whole number of CPUs") from None
    if value < 1:
        raise ValueError(f"{CPUS_ENV}={raw!r} must be >= 1")
    return value


@contextmanager
def cpus_in_this_thread(cpus: int) -> Iterator[None]:
    """``worker_cpus()`` is ``cpus`` in this thread within the block: a step's own process writing
    beside its worker processes (``parallel_write``) takes one writer's share, without changing the
    environment its other threads read."""
    token = _THIS_THREAD.set(cpus)
    try:
        yield
    finally:
        _THIS_THREAD.reset(token)


def cpu_share(workers: int) -> int | None:
    """CPUs each of ``workers`` processes side by side may give its writers (``run build``'s workers, each
    running ranged runs), so together they never start more writers than there are CPUs; None when the
    operator set MOSAIC_WORKER_CPUS."""
    return None if os.environ.get(CPUS_ENV) else max(1, available_cpus() // max(1, workers))


def use_cpu_share(cpus: int | None) -> None:
    """Pool initializer: this worker's share (``cpu_share``) as its MOSAIC_WORKER_CPUS, when there is one."""
    if cpus is not None:
        os.environ[CPUS_ENV] = str(cpus)


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs of the affinity mask, capped by the cgroup CPU quota (rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The container's CPU limit in cores (None: unlimited or unknown)."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None
