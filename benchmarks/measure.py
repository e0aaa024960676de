"""Measure a child process the way the kernel accounts it: wall, CPU of the whole process tree, and
the peak RSS of its largest process.

Why ``wait4`` for CPU: its rusage covers the child and every descendant it waited for (worker pools
included). Why not its ``ru_maxrss`` for memory: Linux carries the parent's RSS at fork into the
child's ``ru_maxrss`` (exec records the old mm's high-water mark), so a child of a large harness
looks large. The peak is therefore taken inside the measured process: its own ``VmHWM`` (the
post-exec high-water mark) and its waited-for children's ``ru_maxrss`` (their inherited part is at
most this process's own RSS, which counts anyway). No sampling, so no peak is missed.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessStats:
    wall_s: float
    cpu_s: float
    returncode: int


class Hung(RuntimeError):
    """A measured process outlived its timeout (it and its process group were killed)."""


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None, timeout_s: float | None = None
) -> ProcessStats:
    """Run ``cmd`` to completion (output passes through) and account for it. The child leads its own
    process group, so a hung child and its workers can be killed together, and only they."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if timeout_s is not None and time.perf_counter() - started > timeout_s:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise Hung(f"{' '.join(cmd)} still running after {timeout_s:.0f} s: killed")
        time.sleep(0.01)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcessStats(wall, usage.ru_utime + usage.ru_stime, proc.returncode)


def cpu_seconds() -> float:
    """CPU of this process plus every child it has waited for (user + system), plus the fork server's
    tree (``fork_server_cpu_seconds``)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + fork_server_cpu_seconds()


def fork_server_cpu_seconds() -> float:
    """CPU of this process's multiprocessing fork server and of the workers it forked and reaped
    (``engine.workers`` uses one in a process that runs threads). Its workers are its children, not
    ours, so no rusage of ours counts them, and the server itself is never waited for: it outlives the
    pools and exits with this process. Read from its /proc stat (utime, stime, cutime, cstime); 0
    without a server."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # private, stable since Python 3.4
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_peak_rss_mb() -> float:
    """This process's RSS high-water mark since exec (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def peak_rss_mb() -> float:
    """Peak RSS so far of this process or of its largest waited-for child."""
    return max(own_peak_rss_mb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


class Section:
    """Wall and CPU (self + waited-for children) of a ``with`` block."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def __enter__(self) -> Section:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s += time.perf_counter() - self._wall
        self.cpu_s += cpu_seconds() - self._cpu
