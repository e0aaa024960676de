"""Blocks written by several writers (``engine.parallel_write``), threads and processes alike: the same
bytes as one writer, a failing block fails alone and names its scene, a killed worker (or a killed step
process) loses nothing a rerun does not restore; and the CPU count the writers take (``engine.capacity``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mosaic_assets.demo.scenes import SceneSetConfig, generate_scenes, scene_item
from mosaic_assets.engine import layered_write
from mosaic_assets.engine.capacity import available_cpus, cgroup_cpu_quota, worker_cpus
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.parallel_write import BlockTask, _Territories, runs_of, territories_of, write_blocks
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.spec import MosaicSpec, parse_specs

from .conftest import REPO, EngineSetup, chunk_hashes, dagster_env, engine_setup_for, run_build, spec_document

SCENES = SceneSetConfig(
    collection="parallel-scenes", dates=(date(2024, 6, 1),), scenes_per_date=5, scene_size=640, spread_m=3500.0, seed=8
)


@pytest.fixture(autouse=True)
def pool_for_small_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """These blocks are small: a spawned pool would not be worth it (parallel_write._worth_a_pool), and
    the tests are about the pool."""
    monkeypatch.setenv("MOSAIC_WORKER_POOL_MIN_BYTES", "0")


@pytest.fixture(params=["threads", "layers", "processes"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test of several writers runs with both kinds (``MOSAIC_WRITERS``), threads both ways: in
    territories of pieces, and in z-order layers of the scenes (``layered_write``, taken here whatever
    the pieces' depth, so a piece with one scene has an empty layer and writers help each other)."""
    monkeypatch.setenv("MOSAIC_WRITERS", "processes" if request.param == "processes" else "threads")
    monkeypatch.setattr(layered_write, "MIN_DEPTH_PER_WRITER", 0 if request.param == "layers" else 10**9)
    return request.param


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list:
    return generate_scenes(tmp_path_factory.mktemp("parallel-scenes"), SCENES)


def _spec() -> MosaicSpec:
    doc = spec_document("http://127.0.0.1:1", partition_bytes="512KiB")  # one 256² chunk per block
    return parse_specs(doc)[0]


def _setup(scenes: list, tmp: Path) -> EngineSetup:
    now = datetime.now(UTC)
    return engine_setup_for(_spec(), [scene_item(s, SCENES.collection, now) for s in scenes], tmp)


def _tasks(setup: EngineSetup) -> list[BlockTask]:
    return [BlockTask(b.key, setup.files, 0, b) for b in setup.grid.blocks()]


def _block_of(chunk_path: str, setup: EngineSetup) -> str:
    """The block key of a chunk file ``c/<t>/<band>/<y>/<x>``."""
    *_, y, x = chunk_path.split("/")
    by, bx = setup.grid.block_chunks
    return BlockIndex(int(y) // by, int(x) // bx).key


@pytest.fixture(scope="module")
def serial(scenes: list, tmp_path_factory: pytest.TempPathFactory) -> tuple[EngineSetup, dict[str, str]]:
    setup = _setup(scenes, tmp_path_factory.mktemp("serial"))
    outcomes = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=1)
    assert all(o.error is None for o in outcomes)
    hashes = chunk_hashes(setup.store)
    assert len(hashes) >= 8, "several blocks with data, or this proves little"
    return setup, hashes


def test_two_workers_write_the_bytes_of_one(scenes: list, serial, writers: str, tmp_path: Path) -> None:
    setup = _setup(scenes, tmp_path)
    outcomes = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
    assert [o.key for o in outcomes] == [t.key for t in _tasks(setup)]  # in the order given
    assert all(o.error is None for o in outcomes)
    assert chunk_hashes(setup.store) == serial[1]


def test_one_large_partition_is_written_in_pieces_by_every_worker(
    scenes: list, serial, writers: str, tmp_path: Path
) -> None:
    """A partition of the whole grid (one block): cut into chunk-aligned pieces for two workers, the
    store's bytes equal the serial build's of small partitions, and its result counts every pixel."""
    from mosaic_assets.engine.grid import MosaicGrid

    setup = _setup(scenes, tmp_path)
    big = MosaicGrid(setup.grid.geobox, setup.grid.chunk_shape, setup.grid.chunk_grid)  # one block
    (block,) = list(big.blocks())
    pieces = big.pieces(block, 3)
    assert len(pieces) > 2 and all(p.index == block.index for p in pieces)
    covered = sum((p.rows.stop - p.rows.start) * (p.cols.stop - p.cols.start) for p in pieces)
    assert covered == block.shape[0] * block.shape[1]  # disjoint and complete: each pixel in one piece
    cy, cx = big.chunk_shape
    assert all(p.rows.start % cy == 0 and p.cols.start % cx == 0 for p in pieces)
    task = BlockTask("all", setup.files, 0, block)
    (outcome,) = write_blocks(setup.spec, big, setup.store, [task], cpus=2, piece_bytes=3 * setup.spec.chunk_bytes)
    assert outcome.error is None and outcome.result.pixels == block.shape[0] * block.shape[1]
    assert chunk_hashes(setup.store) == serial[1]


def test_a_failing_block_fails_alone_naming_its_scene(serial, writers: str, tmp_path: Path) -> None:
    """One scene's file truncated: exactly the blocks it touches fail, each naming its item and href and
    writing nothing; every other block is written, byte for byte as in the serial build."""
    own = generate_scenes(tmp_path / "scenes", SCENES)  # the same scenes (same seed), this test's to break
    setup = _setup(own, tmp_path)
    broken = own[2]
    row = setup.table[setup.table["item_id"] == broken.item_id]
    touched = {b.key for b in blocks_with_scenes(setup.grid, row)}
    assert 0 < len(touched) < len(list(setup.grid.blocks()))
    broken.path.write_bytes(broken.path.read_bytes()[:5000])  # its header survives, its tiles do not

    outcomes = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
    failed = {o.key: o for o in outcomes if o.error is not None}
    assert set(failed) == touched
    for outcome in failed.values():
        assert broken.item_id in outcome.error and str(broken.path) in outcome.error and outcome.kind == "scene"
    written = chunk_hashes(setup.store)
    assert {_block_of(p, setup) for p in written}.isdisjoint(touched), "a failed block wrote nothing"
    assert written == {p: h for p, h in serial[1].items() if _block_of(p, setup) not in touched}


KILL_SCRIPT = """
import json, sys
from mosaic_assets_tests.test_parallel_write import _setup_from, _tasks
from mosaic_assets.engine.parallel_write import write_blocks
setup = _setup_from(sys.argv[1])
outcomes = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
print(json.dumps([[o.key, o.error] for o in outcomes]))
"""


def _setup_from(folder: str) -> EngineSetup:
    """The setup a test made in ``folder`` (its GTI and store), for a child process."""
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles

    spec = _spec()
    return EngineSetup(
        spec,
        MosaicGrid.from_spec(spec),
        None,
        GtiFiles.for_step(Path(folder) / "gti", "2024-06-01"),
        str(Path(folder) / "store.zarr"),
    )


def test_a_worker_killed_mid_write_then_a_rerun_gives_the_same_bytes(scenes: list, serial, tmp_path: Path) -> None:
    setup = _setup(scenes, tmp_path)
    env = {**os.environ, "MOSAIC_WRITERS": "processes"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True, env=env
    )
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        children = [c for c in _children(proc.pid) if "resource_tracker" not in _cmdline(c)]  # workers only
        if children and _any_chunk(setup.store):  # the worker up (the step writes too), a first chunk written
            victim = children[-1]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=120)
    assert victim is not None, "the workers finished before one could be killed: make the work larger"
    outcomes = json.loads(out.strip().splitlines()[-1])
    died = [key for key, error in outcomes if error and "worker process died" in error]
    assert died, outcomes
    assert chunk_hashes(setup.store) != serial[1], "the kill must have left blocks unwritten"

    rerun = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
    assert all(o.error is None for o in rerun)
    assert chunk_hashes(setup.store) == serial[1]


def test_a_step_killed_while_its_writer_threads_write_then_a_rerun_gives_the_same_bytes(
    scenes: list, serial, tmp_path: Path
) -> None:
    """Threads die with their process (a pod's OOM kill, a node lost): the step process SIGKILLed once
    a first chunk is written, then a rerun: the store equals the serial build's."""
    setup = _setup(scenes, tmp_path)
    env = {**os.environ, "MOSAIC_WRITERS": "threads"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while not _any_chunk(setup.store) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.kill()
    proc.wait(timeout=60)
    assert killed, "the step finished before it could be killed: make the work larger"
    assert chunk_hashes(setup.store) != serial[1], "the kill must have left blocks unwritten"

    rerun = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
    assert all(o.error is None for o in rerun)
    assert chunk_hashes(setup.store) == serial[1]


def _any_chunk(store: str) -> bool:
    """Whether a chunk file (or its temporary) exists yet; never reads one a writer may be renaming."""
    try:
        return any(p.is_file() for p in (Path(store) / "mosaic" / "c").rglob("*"))
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(found)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_ranged_run_with_two_writers_matches_the_serial_build(built_mosaic, small_scenes, kind, tmp_path) -> None:
    """Through Dagster (``run build``'s ranged runs, two writers in each chunk step, threads or
    processes): the store's chunks equal those of the session's build (one writer per step)."""
    env = dagster_env(tmp_path, spec_document(small_scenes.api), small_scenes.api)
    env["MOSAIC_WORKER_CPUS"] = "2"
    env["MOSAIC_WRITERS"] = kind
    env["MOSAIC_WORKER_POOL_MIN_BYTES"] = "0"  # a pool even for these small partitions
    run_build(env)
    parallel = chunk_hashes(str(tmp_path / "data" / "stores" / "testmosaic.zarr"))
    assert parallel and parallel == chunk_hashes(built_mosaic.store)


def test_worker_cpus_from_the_environment_or_the_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOSAIC_WORKER_CPUS", "3")
    assert worker_cpus() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("MOSAIC_WORKER_CPUS", bad)
        with pytest.raises(ValueError, match=f"MOSAIC_WORKER_CPUS='{bad}'"):
            worker_cpus()
    monkeypatch.delenv("MOSAIC_WORKER_CPUS")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # a 1.5-CPU limit: one writer, not two
    assert cgroup_cpu_quota(v2) == 1.5 and available_cpus(v2) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None and available_cpus(v2) == len(os.sched_getaffinity(0))
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(v1) == 1.0 and available_cpus(v1) == 1
    assert cgroup_cpu_quota(tmp_path / "none") is None


def test_build_shares_the_cpus_between_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from mosaic_assets.engine.capacity import cpu_share

    monkeypatch.delenv("MOSAIC_WORKER_CPUS", raising=False)
    cpus = available_cpus()
    assert cpu_share(1) == cpus and cpu_share(cpus) == 1 and cpu_share(4 * cpus) == 1
    monkeypatch.setenv("MOSAIC_WORKER_CPUS", "2")
    assert cpu_share(2) is None  # the operator's setting stands


@pytest.mark.parametrize(("pieces", "workers"), [(12, 2), (67, 2), (3, 2), (40, 16), (1, 3)])
def test_runs_cover_every_piece_once_in_order_and_shrink(pieces: int, workers: int) -> None:
    """Runs of neighbours (parallel_write.runs_of): every piece once, in the order given, the runs never
    growing, and at least as many runs as writers when there are that many pieces (none idles)."""
    runs = runs_of(list(range(pieces)), workers)
    assert [p for run in runs for p in run] == list(range(pieces))
    assert all(len(a) >= len(b) for a, b in zip(runs, runs[1:]))
    assert len(runs) >= min(pieces, workers)


def _grid_pieces(steps: int, rows: int, cols: int, size: int = 1024) -> list[BlockTask]:
    """Pieces of ``steps`` time steps of ``rows`` x ``cols`` blocks, in partition-key order."""
    from mosaic_assets.engine.grid import Block

    return [
        BlockTask(
            BlockIndex(r, c).key,
            None,
            t,
            Block(BlockIndex(r, c), slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size)),
        )
        for t in range(steps)
        for r in range(rows)
        for c in range(cols)
    ]


@pytest.mark.parametrize(
    ("steps", "rows", "cols", "workers"),
    [(1, 3, 4, 2), (1, 1, 8, 2), (2, 3, 3, 2), (1, 3, 4, 3), (1, 5, 5, 16), (1, 1, 1, 3)],
)
def test_territories_are_compact_and_cover_every_piece_once(steps: int, rows: int, cols: int, workers: int) -> None:
    """``territories_of``: every piece in exactly one territory, shares as even as pieces allow, each in
    row-major order, and two writers' territories split across the longer side (so a 4 x 3 grid of
    blocks is cut between columns, and a row of 8 into two strips of 4)."""
    pieces = _grid_pieces(steps, rows, cols)
    territories = territories_of(pieces, workers)
    assert len(territories) == workers
    assert sorted(i for t in territories for i in t) == list(range(len(pieces)))
    sizes = [len(t) for t in territories]
    assert max(sizes) - min(sizes) <= 1
    for territory in territories:
        places = [(pieces[i].time_index, pieces[i].block.rows.start, pieces[i].block.cols.start) for i in territory]
        assert places == sorted(places)
    if workers == 2 and steps == 1:
        first, second = ({pieces[i].block.cols.start for i in t} for t in territories)
        if cols >= rows:  # cut between columns: no column in both
            assert max(first) < min(second), territories
    if workers == 2 and steps == 2:  # time steps first: pieces of one step share scenes
        assert {pieces[i].time_index for i in territories[0]} == {0}
        assert {pieces[i].time_index for i in territories[1]} == {1}


@pytest.mark.parametrize(("pieces", "workers"), [(8, 2), (17, 3), (3, 2), (1, 3), (40, 16), (0, 2)])
def test_territories_hand_out_every_piece_once_each_writer_walking_over_neighbours(pieces: int, workers: int) -> None:
    """Writer threads' territories (parallel_write._Territories): writers taking turns in any order get
    every piece exactly once; a writer's own territory comes front to back, and what it takes from
    another's comes from the far end, one territory at a time, so every writer's pieces form runs of
    neighbours."""
    bounds = [round(w * pieces / workers) for w in range(workers + 1)]
    home = {p: w for w in range(workers) for p in range(bounds[w], bounds[w + 1])}
    for order in ("round robin", "writer 0 alone first", "last writer first"):
        territories = _Territories([list(range(bounds[w], bounds[w + 1])) for w in range(workers)])
        taken: dict[int, list[int]] = {w: [] for w in range(workers)}
        turns = {
            "round robin": [w for _ in range(pieces + 1) for w in range(workers)],
            "writer 0 alone first": [0] * (pieces + 1) + list(range(workers)),
            "last writer first": [workers - 1] * (pieces // 2) + [w for _ in range(pieces + 1) for w in range(workers)],
        }[order]
        for writer in turns:
            piece = territories.take(writer)
            if piece is not None:
                taken[writer].append(piece)
        assert sorted(p for got in taken.values() for p in got) == list(range(pieces)), order
        for writer, got in taken.items():
            own = [p for p in got if home[p] == writer]
            assert got[: len(own)] == list(range(bounds[writer], bounds[writer] + len(own))), (order, writer, got)
            helped = got[len(own) :]  # another's territory, one at a time, walked back from its far end
            visits = [w for n, w in enumerate(home[p] for p in helped) if n == 0 or home[helped[n - 1]] != w]
            assert len(visits) == len(set(visits)), (order, writer, got)
            assert all(a - b == 1 for a, b in zip(helped, helped[1:]) if home[a] == home[b]), (order, writer, got)
        assert all(territories.take(w) is None for w in range(workers))
    territories = _Territories([list(range(bounds[w], bounds[w + 1])) for w in range(workers)])
    territories.close()  # an interrupted step: nobody takes anything more
    assert all(territories.take(w) is None for w in range(workers))


def test_the_kind_of_writers_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mosaic_assets.engine.parallel_write import writer_kind

    monkeypatch.delenv("MOSAIC_WRITERS", raising=False)
    assert writer_kind() == "threads"
    monkeypatch.setenv("MOSAIC_WRITERS", " Processes ")
    assert writer_kind() == "processes"
    monkeypatch.setenv("MOSAIC_WRITERS", "fibres")
    with pytest.raises(ValueError, match="MOSAIC_WRITERS='fibres'"):
        writer_kind()
