"""The build's order (engine.build_order) and its worker pool (engine.workers), on real executors."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from mosaic_assets.engine.build_order import BuildPieces, batch_size, run_in_order
from mosaic_assets.engine.workers import start_method, worker_pool

from .conftest import REPO


class Recorder:
    """Pieces that log what ran, in order, from any thread; ``fail`` names a batch that raises."""

    def __init__(self, batches: dict[str, list[list[str]]], fail: str | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._batches, self._fail = batches, fail

    def _record(self, kind: str, what: str) -> None:
        with self._lock:
            self.log.append((kind, what))

    def pieces(self) -> BuildPieces:
        def write(batch: list[str]) -> None:
            if batch[0] == self._fail:
                raise RuntimeError(f"batch {batch[0]} failed")
            self._record("write", batch[0])

        return BuildPieces(
            catalog=lambda step: self._record("catalog", step),
            template=lambda: self._record("template", ""),
            batches=lambda steps: {s: self._batches[s] for s in steps},
            write=write,
            preview=lambda step: self._record("preview", step),
        )

    def position(self, kind: str, what: str) -> int:
        return self.log.index((kind, what))


def test_pieces_run_in_dependency_order() -> None:
    batches = {"d1": [["d1/a"], ["d1/b"]], "d2": [["d2/a"]], "d3": []}
    recorder = Recorder(batches)
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert run_in_order(pool, ["d1", "d2", "d3"], recorder.pieces()) == batches
    writes = [what for kind, what in recorder.log if kind == "write"]
    assert sorted(writes) == ["d1/a", "d1/b", "d2/a"]
    first_write = min(recorder.position("write", w) for w in writes)
    for step in ("d1", "d2", "d3"):
        assert recorder.position("catalog", step) < first_write
    assert recorder.position("template", "") < first_write
    for step, step_batches in batches.items():
        preview = recorder.position("preview", step)
        assert all(recorder.position("write", b[0]) < preview for b in step_batches)


def test_batch_size_keeps_two_runs_per_worker_up_to_partitions_per_run() -> None:
    assert batch_size(12, workers=2, per_run=8) == 3  # 4 runs: two per worker
    assert batch_size(1000, workers=2, per_run=8) == 8  # a large build: what a backfill uses
    assert batch_size(1, workers=2, per_run=8) == batch_size(0, workers=2, per_run=8) == 1


def test_a_failed_batch_raises_and_holds_back_later_previews() -> None:
    """d1/b fails at once; d2/a, already running, finishes a second later: it lands, but d2's preview
    (due only after the failure) is not started, and the failure is raised after d2/a is done."""
    release = threading.Event()
    recorder = Recorder({"d1": [["d1/b"]], "d2": [["d2/a"]]}, fail="d1/b")
    pieces = recorder.pieces()
    slow_write = pieces.write

    def write(batch: list[str]) -> None:
        if batch[0] == "d2/a":
            release.wait(timeout=30)
        slow_write(batch)

    timer = threading.Timer(1.0, release.set)
    timer.start()
    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(RuntimeError, match="batch d1/b failed"):
        run_in_order(pool, ["d1", "d2"], replace(pieces, write=write))
    timer.cancel()
    assert ("write", "d2/a") in recorder.log
    assert ("preview", "d1") not in recorder.log and ("preview", "d2") not in recorder.log


def test_a_failed_catalog_stops_before_the_template() -> None:
    recorder = Recorder({"d1": [["d1/a"]]})
    pieces = recorder.pieces()

    def catalog(step: str) -> None:
        raise RuntimeError(f"catalog {step} failed")

    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(RuntimeError, match="catalog d1 failed"):
        run_in_order(pool, ["d1"], replace(pieces, catalog=catalog))
    assert recorder.log == []


def test_pool_forks_only_while_single_threaded(tmp_path: Path) -> None:
    """What ``build`` does before its pool (Dagster, the definitions, the instance) leaves the process
    single-threaded, so its workers fork; a second Python thread (a Dagster step has two) makes the
    pool fork its workers from a fork server instead."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    code = (
        "import dagster as dg\n"
        "from mosaic_assets.run import load_defs\n"
        "from mosaic_assets.engine.workers import start_method\n"
        "load_defs()\n"
        "with dg.DagsterInstance.get():\n"
        "    pass\n"
        "print(start_method())\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MOSAIC_SPECS": str(REPO / "specs" / "demo.yaml")}
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert alone.stdout.strip().splitlines()[-1] == "fork"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert start_method() == "forkserver"  # a forked child would inherit locks held by that thread
    finally:
        stop.set()
        other.join()


def test_a_threaded_process_forks_its_workers_from_a_server_with_its_current_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fork server keeps the environment it started with; each pool's workers take the parent's
    environment as it is when that pool is made (a step's MOSAIC_WORKER_* or GDAL settings)."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        seen = []
        for value in ("first", "second"):
            monkeypatch.setenv("MOSAIC_TEST_POOL_VALUE", value)
            with worker_pool(2) as pool:
                parents = {pool.submit(os.getppid).result() for _ in range(2)}
                seen.append(pool.submit(os.getenv, "MOSAIC_TEST_POOL_VALUE").result())
            assert os.getpid() not in parents  # forked by the server, not by this process
        assert seen == ["first", "second"]
    finally:
        stop.set()
        other.join()


def test_pool_starts_every_worker_up_front() -> None:
    before = set(multiprocessing.active_children())
    with worker_pool(2) as pool:
        started = set(multiprocessing.active_children()) - before
        assert len(started) == 2
        assert set(pool.map(abs, [-1, -2])) == {1, 2}
