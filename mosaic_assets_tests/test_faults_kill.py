"""A chunk writer killed with SIGKILL halfway through its partition (a real process, killed the moment its
first chunk file lands), and two writers of different partitions running at once, on a real store and
Dagster instance: the rerun restores a store byte-identical to a clean build, nothing else is touched."""

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

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CHUNKS = dg.AssetKey(["testmosaic", "mosaic_chunks"])


def _digest(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()
    }


def _chunk_paths(store: Path, grid: MosaicGrid, block_key: str) -> set[Path]:
    block = grid.block(BlockIndex.parse(block_key))
    cy, cx = grid.chunk_shape
    return {
        store / "mosaic" / "c" / "0" / "0" / str(r) / str(c)
        for r in range(block.rows.start // cy, -(-block.rows.stop // cy))
        for c in range(block.cols.start // cx, -(-block.cols.stop // cx))
    }


def _writer(env: dict[str, str], key: str) -> subprocess.Popen:
    code = f"from mosaic_assets.run import _materialize; _materialize('testmosaic/mosaic_chunks', {key!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def clean_build(small_scenes: LoadedScenes, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("kill")
    # 64 chunks of 128 x 128 per block, so a writer killed at its first chunk file is really halfway
    doc = spec_document(small_scenes.api, chunks={"y": 128, "x": 128}, partition_bytes="8MiB")
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
    others = {k: v for k, v in _digest(store).items() if store / k not in mine}

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
    # zarr writes each chunk to "<chunk>.<uuid>.partial" and renames it: the kill may leave one of this
    # partition's own temps, which the rerun must clear (the byte-identical check below)
    temps = {
        k
        for k in after_kill
        if k.endswith(".partial") and (store / k).with_name(k.rsplit("/", 1)[-1].split(".")[0]) in mine
    }
    assert {k: v for k, v in after_kill.items() if store / k not in mine and k not in temps} == others, (
        "no other file changed"
    )

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
