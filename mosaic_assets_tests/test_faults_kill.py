"""A chunk writer killed with SIGKILL halfway through its partition (a real process, killed the moment its
first chunk file lands), and two writers of different partitions running at once, on a real store and
Dagster instance: the rerun restores a store byte-identical to a clean build, nothing else is touched.

Under `dagster dev` (runs launched by the code server, steps in their own processes, as users run them):
a run whose processes are all killed is marked FAILED and its partition FAILED (what the repair
schedule re-runs); a killed step process alone is retried by the asset's RetryPolicy and lands."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.spec import load_specs

from .conftest import REPO, LoadedScenes, dagster_env, spec_document
from .dagster_dev import DagsterDev, cmdline, dagster_dev, process_tree

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CHUNKS = dg.AssetKey(["testmosaic", "mosaic_chunks"])
DEV_PORT = int(os.environ.get("TEST_DAGSTER_PORT", "3093")) + 1


def _digest(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()
    }


def _of(path: Path, chunks: set[Path]) -> bool:
    """``path`` is one of ``chunks`` or the temporary a killed write of one left (``<chunk>.<uuid>.partial``)."""
    return path in chunks or (path.suffix == ".partial" and path.with_suffix("").with_suffix("") in chunks)


def _chunk_paths(store: Path, grid: MosaicGrid, block_key: str) -> set[Path]:
    block = grid.block(BlockIndex.parse(block_key))
    cy, cx = grid.chunk_shape
    return {
        store / "mosaic" / "c" / "0" / "0" / str(r) / str(c)
        for r in range(block.rows.start // cy, -(-block.rows.stop // cy))
        for c in range(block.cols.start // cx, -(-block.cols.stop // cx))
    }


def _writer(env: dict[str, str], key: str) -> subprocess.Popen:
    code = f"from mosaic_assets.run import materialize; materialize('testmosaic/mosaic_chunks', {key!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def clean_build(small_scenes: LoadedScenes, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("kill")
    # 256 chunks of 64 x 64 per block: writing them takes long enough that a writer stopped at its
    # first chunk file is really halfway, even on a loaded machine
    doc = spec_document(small_scenes.api, chunks={"y": 64, "x": 64}, partition_bytes="8MiB")
    env = dagster_env(tmp, doc, small_scenes.api)
    proc = subprocess.run(
        [sys.executable, "-m", "mosaic_assets.run", "build"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = load_specs(env["MOSAIC_SPECS"])[0]
    store = tmp / "data" / "stores" / "testmosaic.zarr"
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:
        done = sorted(k for k in instance.get_materialized_partitions(CHUNKS) if k.startswith("2024-06-01|"))
    os.environ.pop("DAGSTER_HOME", None)
    return env, MosaicGrid.from_spec(spec), store, done, _digest(store)


def test_sigkill_halfway_then_rerun_gives_the_clean_store(clean_build) -> None:
    env, grid, store, done, clean = clean_build
    # the partition with the most stored chunks, so "halfway" has room
    key = max(done, key=lambda k: sum(p.exists() for p in _chunk_paths(store, grid, k.split("|")[1])))
    mine = {p for p in _chunk_paths(store, grid, key.split("|")[1]) if p.exists()}
    assert len(mine) >= 2
    for path in mine:
        path.unlink()
    others = {k: v for k, v in _digest(store).items() if not _of(store / k, mine)}

    writer = _writer(env, key)
    deadline = time.monotonic() + 120
    while not any(p.exists() for p in mine) and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL, "killed, not finished"
    at_kill = sum(p.exists() for p in mine)
    print(f"SIGKILL with {at_kill} of {len(mine)} chunk files of {key} on disk")
    assert 0 < at_kill < len(mine), "killed halfway through the partition's chunks"
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:  # no run monitoring locally: the killed run stays STARTED
        killed = instance.get_runs(limit=1)[0]
        print(f"killed run {killed.run_id}: {killed.status}")
    os.environ.pop("DAGSTER_HOME", None)

    after_kill = _digest(store)
    assert {k: v for k, v in after_kill.items() if not _of(store / k, mine)} == others, "no other file changed"

    rerun = _writer(env, key)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-3000:]
    assert _digest(store) == clean, "the rerun restores a store byte-identical to the clean build"


def test_two_writers_of_different_partitions_at_once_both_land(clean_build) -> None:
    env, grid, store, done, clean = clean_build
    first, second = done[0], done[1]
    a, b = (_chunk_paths(store, grid, k.split("|")[1]) for k in (first, second))
    assert not a & b, "blocks are whole chunks: two partitions never share a chunk file"
    for path in a | b:
        path.unlink(missing_ok=True)
    writers = [_writer(env, first), _writer(env, second)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()[-3000:]
    assert _digest(store) == clean, "both partitions landed, no chunk of either lost"


GROW = """
import sys, time
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import load_specs
from mosaic_assets.engine.store import ensure_template
spec = load_specs(sys.argv[1])[0]
start = float(sys.argv[4])
while time.time() < start:
    pass
print(ensure_template(spec, MosaicGrid.from_spec(spec), sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.parametrize("targets", [(5, 5), (5, 6)])
def test_two_template_growths_at_once_end_with_one_correct_time_axis(
    clean_build, tmp_path: Path, targets: tuple[int, int]
) -> None:
    """Two processes growing the time axis at the same instant (xarray's append_dim did it twice: 3 -> 7
    steps, two of them mislabelled): the axis ends at the larger target with every date right, and no
    existing chunk changes."""
    import shutil

    import xarray as xr

    from mosaic_assets.engine.timegrid import time_coords

    env, _, built_store, _, _ = clean_build
    store = tmp_path / "grow.zarr"
    shutil.copytree(built_store, store)
    before = _digest(store / "mosaic" / "c")
    start = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GROW, env["MOSAIC_SPECS"], str(store), str(n), start],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in targets
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    spec = load_specs(env["MOSAIC_SPECS"])[0]
    for consolidated in (True, False):
        ds = xr.open_zarr(store, consolidated=consolidated)
        assert ds["mosaic"].shape[0] == max(targets)
        assert list(ds["time"].values) == list(time_coords(spec.time, max(targets)))
    assert _digest(store / "mosaic" / "c") == before


@pytest.fixture(scope="module")
def dev(clean_build, tmp_path_factory: pytest.TempPathFactory):
    """`dagster dev` on the clean build's instance, sensors off (runs come only from the tests)."""
    env = {**clean_build[0], "MOSAIC_SENSORS": "stopped"}
    with dagster_dev(env, tmp_path_factory.mktemp("dev"), DEV_PORT) as server:
        yield server


def _run_pid(dev: DagsterDev, run_id: str) -> int | None:
    """The run worker's pid, from the code server's "Started process for run (pid: N)" event."""
    for event in dev.run_messages(run_id):
        message = event.get("message") or ""
        if message.startswith("Started process for run (pid: "):
            return int(message.split("pid: ")[1].split(")")[0])
    return None


def _step_workers(run_pid: int) -> list[int]:
    """The multiprocess executor's step processes under the run worker (spawned children, not the
    resource tracker)."""
    return [p for p in process_tree(run_pid)[1:] if "spawn_main" in cmdline(p)]


def _kill_at_first_chunk(dev: DagsterDev, run_id: str, mine: set[Path], whole_run: bool) -> tuple[int, list[int]]:
    """Wait until the first of ``mine`` lands, then SIGKILL the step process (and with ``whole_run`` the
    run worker and everything under it, as when a node is lost). The step is SIGSTOPped first, so the
    chunks on disk are counted at the instant of the kill. Returns (chunk files at kill, pids)."""
    run_pid = dev.wait_for("the run worker's pid", lambda: _run_pid(dev, run_id), timeout=120)
    workers = dev.wait_for("the step process", lambda: _step_workers(run_pid), timeout=120, every=0.05)
    victims = process_tree(run_pid) if whole_run else workers
    deadline = time.monotonic() + 180
    while not any(p.exists() for p in mine):
        assert time.monotonic() < deadline, f"no chunk appeared; run {dev.run_status(run_id)}\n{dev.log_tail()}"
        time.sleep(0.0005)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    at_kill = sum(p.exists() for p in mine)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return at_kill, victims


def _status(env: dict[str, str], key: str) -> dg.AssetPartitionStatus | None:
    from mosaic_assets.definitions import build_definitions

    defs = build_definitions(Path(env["MOSAIC_SPECS"]))
    partitions = defs.get_assets_def(CHUNKS).partitions_def
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:
            return (instance.get_status_by_partition(CHUNKS, [key], partitions) or {}).get(key)
    finally:
        os.environ.pop("DAGSTER_HOME", None)


def _lose_partition(clean_build) -> tuple[str, set[Path], dict[str, str]]:
    env, grid, store, done, _ = clean_build
    key = max(done, key=lambda k: sum(p.exists() for p in _chunk_paths(store, grid, k.split("|")[1])))
    mine = {p for p in _chunk_paths(store, grid, key.split("|")[1]) if p.exists()}
    for path in mine:
        path.unlink()
    return key, mine, {k: v for k, v in _digest(store).items() if not _of(store / k, mine)}


def test_run_killed_under_dagster_is_failed_and_its_rerun_restores_the_store(
    clean_build, dev: DagsterDev, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, _, store, _, clean = clean_build
    for name in ("MOSAIC_SPECS", "MOSAIC_DATA_DIR", "MOSAIC_STAC_API_URL"):
        monkeypatch.setenv(name, env[name])
    key, mine, others = _lose_partition(clean_build)

    run_id = dev.launch_partition(list(CHUNKS.path), key)
    at_kill, victims = _kill_at_first_chunk(dev, run_id, mine, whole_run=True)
    print(f"SIGKILL of run {run_id} (pids {victims}) with {at_kill} of {len(mine)} chunk files of {key} on disk")
    assert 0 < at_kill < len(mine), "killed halfway through the partition's chunks"
    assert dev.wait_for_run(run_id, timeout=60) == "FAILURE", "the code server marks a run whose process died FAILED"
    messages = [e.get("message") or "" for e in dev.run_messages(run_id)]
    assert any("terminated by signal 9 (SIGKILL)" in m for m in messages), messages[-5:]
    assert _status(env, key) == dg.AssetPartitionStatus.FAILED, "the partition is failed in Dagster"
    assert {k: v for k, v in _digest(store).items() if not _of(store / k, mine)} == others, "no other file changed"

    rerun = dev.launch_partition(list(CHUNKS.path), key)
    assert dev.wait_for_run(rerun) == "SUCCESS", dev.log_tail()
    assert _status(env, key) == dg.AssetPartitionStatus.MATERIALIZED
    assert _digest(store) == clean, "the rerun restores a store byte-identical to the clean build"


def test_step_process_killed_under_dagster_is_retried_and_lands(clean_build, dev: DagsterDev) -> None:
    env, _, store, _, clean = clean_build
    key, mine, _ = _lose_partition(clean_build)

    run_id = dev.launch_partition(list(CHUNKS.path), key)
    at_kill, victims = _kill_at_first_chunk(dev, run_id, mine, whole_run=False)
    print(f"SIGKILL of step process {victims} of run {run_id} with {at_kill} of {len(mine)} chunk files on disk")
    assert dev.wait_for_run(run_id) == "SUCCESS", "the RetryPolicy re-ran the killed step in a new process"
    messages = [e.get("message") or "" for e in dev.run_messages(run_id)]
    crash = [m for m in messages if "child process for step" in m and "SIGKILL" in m]
    assert crash, "Dagster saw the step process die"
    assert _digest(store) == clean, "the retried step restores a store byte-identical to the clean build"
