"""Writer threads split by z-order layers of the scenes (``engine.layered_write``): the merged layers are
what GDAL's own GTI read of all the scenes gives, byte for byte, on scenes 8-16 deep in two UTM zones with
clouds and nodata edges; the layers' rank ranges cover every scene once with about equal cost; a step of
deep pieces takes this path and a shallow one does not; a layer that fails fails its piece alone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.windows
import zarr

from mosaic_assets.demo.scenes import SCL_ASSET, SceneSetConfig, generate_scenes, scene_item
from mosaic_assets.engine import layered_write
from mosaic_assets.engine.bandgroups import read_plan
from mosaic_assets.engine.layered_write import LayeredWrite, cost_bounds, merge_layers
from mosaic_assets.engine.parallel_write import BlockTask, write_blocks
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.store import VARIABLE

from .conftest import EngineSetup, chunk_hashes, engine_setup_for, spec_document

# 16 scenes of one day scattered over a few km in UTM 32 and 33, with clouds: every block of the
# test mosaic is several scenes deep, half of them warped from the other zone
DEEP = SceneSetConfig(
    collection="layered-scenes",
    dates=(date(2024, 6, 1),),
    scenes_per_date=16,
    scene_size=800,
    spread_m=1500.0,
    seed=11,
    clouds=True,
)


@pytest.fixture(scope="module")
def deep_scenes(tmp_path_factory: pytest.TempPathFactory) -> list:
    return generate_scenes(tmp_path_factory.mktemp("layered-scenes"), DEEP)


def _setup(scenes: list, tmp: Path, **overrides) -> EngineSetup:
    overrides.setdefault("partition_bytes", "512KiB")  # one 256² chunk of 4 uint16 bands per block
    doc = spec_document("http://127.0.0.1:1", **overrides)
    items = [scene_item(s, DEEP.collection, datetime.now(UTC)) for s in scenes]
    return engine_setup_for(parse_specs(doc)[0], items, tmp)


def _tasks(setup: EngineSetup) -> list[BlockTask]:
    return [BlockTask(b.key, setup.files, 0, b) for b in setup.grid.blocks()]


def _written(setup: EngineSetup, writers: int) -> LayeredWrite:
    """The setup's blocks written by ``writers`` threads in layers, each writer's loop in turn in its
    own thread (as ``parallel_write`` runs them)."""
    from concurrent.futures import ThreadPoolExecutor

    job = LayeredWrite(setup.spec, setup.grid, setup.store, _tasks(setup), writers)
    with ThreadPoolExecutor(writers) as pool:
        for future in [pool.submit(job.run, w) for w in range(writers)]:
            future.result()
    return job


def _gdal_mosaic(setup: EngineSetup) -> np.ndarray:
    """GDAL's own GTI read of the whole step (all scenes, GTI's compositing), (band, y, x)."""
    with rasterio.open(str(setup.files.xml)) as gti:
        return gti.read()


@pytest.mark.parametrize("writers", [2, 3])
def test_layers_merged_are_gdals_gti_read_of_all_scenes(deep_scenes: list, writers: int, tmp_path: Path) -> None:
    setup = _setup(deep_scenes, tmp_path)
    job = _written(setup, writers)
    outcomes = job.results()
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]
    depths = [p.covered / (p.task.block.shape[0] * p.task.block.shape[1]) for p in job.pieces]
    assert job.worthwhile and sum(depths) / len(depths) >= 2 * writers, depths  # deep: what write_blocks layers
    warped = {s["assets"]["data"]["crs"] for p in job.pieces for s in p.scenes}
    assert warped == {"EPSG:32632", "EPSG:32633"}, "scenes on the mosaic's grid and warped ones"
    expected = _gdal_mosaic(setup)
    assert (expected == setup.spec.nodata).any() and (expected != setup.spec.nodata).any()
    stored = zarr.open_array(setup.store, path=VARIABLE, mode="r")[0]
    np.testing.assert_array_equal(stored, expected)


def test_write_blocks_takes_layers_for_deep_pieces_and_gives_the_bytes_of_one_writer(
    deep_scenes: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = _setup(deep_scenes, tmp_path / "serial")
    assert all(o.error is None for o in write_blocks(serial.spec, serial.grid, serial.store, _tasks(serial), cpus=1))
    monkeypatch.setenv("MOSAIC_WRITERS", "threads")
    ran: list[int] = []
    real_run = LayeredWrite.run
    monkeypatch.setattr(LayeredWrite, "run", lambda self, w: (ran.append(w), real_run(self, w))[1])

    setup = _setup(deep_scenes, tmp_path / "two")
    outcomes = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
    assert all(o.error is None for o in outcomes) and sorted(ran) == [0, 1]
    assert chunk_hashes(setup.store) == chunk_hashes(serial.store)

    ran.clear()  # the same pieces, asked for more scenes per writer than they have: territories
    monkeypatch.setattr(layered_write, "MIN_DEPTH_PER_WRITER", 10**6)
    shallow = _setup(deep_scenes, tmp_path / "shallow")
    assert all(o.error is None for o in write_blocks(shallow.spec, shallow.grid, shallow.store, _tasks(shallow), 2))
    assert ran == [] and chunk_hashes(shallow.store) == chunk_hashes(serial.store)


def test_a_layer_that_fails_fails_its_piece_alone_naming_the_scene(tmp_path: Path) -> None:
    own = generate_scenes(tmp_path / "scenes", DEEP)  # the same scenes (same seed), this test's to break
    setup = _setup(own, tmp_path)
    job = LayeredWrite(setup.spec, setup.grid, setup.store, _tasks(setup), 2)
    top = max((s for p in job.pieces for s in p.layers[1]), key=lambda s: s["priority"])
    broken = next(s for s in own if s.item_id == top["item_id"])
    touched = {p.task.key for p in job.pieces if any(s["item_id"] == broken.item_id for s in p.scenes)}
    assert 0 < len(touched) < len(job.pieces)
    broken.path.write_bytes(broken.path.read_bytes()[:5000])  # its header survives, its tiles do not

    outcomes = _written(setup, 2).results()
    failed = {o.key: o for o in outcomes if o.error is not None}
    assert set(failed) == touched
    for outcome in failed.values():
        assert broken.item_id in outcome.error and str(broken.path) in outcome.error and outcome.kind == "scene"
    stored = {"/".join(path.split("/")[-2:]) for path in chunk_hashes(setup.store)}  # "<y>/<x>"
    array = zarr.open_array(setup.store, path=VARIABLE, mode="r")
    cy, cx = setup.grid.chunk_shape
    with rasterio.open(str(setup.files.xml)) as gti:  # GDAL's own read, where the broken scene is not
        for piece in job.pieces:
            rows, cols = piece.task.block.rows, piece.task.block.cols
            if piece.task.key in touched:
                assert f"{rows.start // cy}/{cols.start // cx}" not in stored, "a failed piece wrote nothing"
                continue
            window = rasterio.windows.Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            np.testing.assert_array_equal(array[0, :, rows, cols], gti.read(window=window))


def test_layer_ranges_cover_every_rank_once_with_about_equal_cost() -> None:
    assert cost_bounds({}, 3) == [(0, 0)] * 3  # a step no piece's scene belongs to: every layer empty
    assert cost_bounds({0: 1.0, 1: 1.0, 2: 1.0}, 3) == [(0, 1), (1, 2), (2, 3)]
    costs = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 6.0, 7: 2.0}  # ranks 5 and 6 touch no piece
    bounds = cost_bounds(costs, 2)
    assert bounds[0][0] == 0 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])) and bounds[-1][1] == 8
    shares = [sum(c for r, c in costs.items() if low <= r < high) for low, high in bounds]
    assert shares == [4.0, 8.0]  # the cut nearest half of 12: before rank 4 (4 | 8), not after it (10 | 2)
    rng = np.random.default_rng(5)
    many = {int(r): float(c) for r, c in zip(rng.permutation(200)[:120], rng.uniform(1, 3, 120))}
    for layers in (2, 3, 4):
        bounds = cost_bounds(many, layers)
        covered = [r for low, high in bounds for r in range(low, high)]
        assert covered == list(range(max(many) + 1)), "consecutive, each rank in one layer"
        shares = [sum(c for r, c in many.items() if low <= r < high) for low, high in bounds]
        assert max(shares) - min(shares) <= 2 * 3.0, shares  # within a scene or so of each other


@pytest.mark.parametrize("nodata", [0.0, float("nan")])
def test_merge_draws_each_bands_top_most_layer_that_holds_data(nodata: float) -> None:
    rng = np.random.default_rng(3)
    dtype = "float32" if np.isnan(nodata) else "uint16"
    layers = []
    for _ in range(3):
        layer = rng.integers(1, 1000, size=(2, 40, 50)).astype(dtype)
        layer[rng.random(layer.shape) < 0.5] = nodata  # each band its own holes
        layers.append(layer)
    expected = layers[0].copy()  # numpy's reduction: the last layer, bottom to top, that holds data
    for layer in layers[1:]:
        holds = ~np.isnan(layer) if np.isnan(nodata) else layer != nodata
        expected = np.where(holds, layer, expected)
    merged = merge_layers([layers[0].copy(), None, layers[1], layers[2]], nodata)
    np.testing.assert_array_equal(merged, expected)
    assert merge_layers([None, None], nodata) is None


def test_layers_of_one_piece_at_a_time_when_memory_is_short_give_the_same_bytes(
    deep_scenes: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pieces' layers would take more than their share of the worker's memory: one piece at a time
    (its readers wait while its last reader writes it), the same pixels."""
    setup = _setup(deep_scenes, tmp_path)
    monkeypatch.setenv("MOSAIC_WORKER_MEMORY_GB", "0.005")  # 5 MB: 2 pieces x 2 writers' layers x 2 are 4 MiB
    job = _written(setup, 2)
    assert job.window == 1
    assert all(o.error is None for o in job.results())
    stored = zarr.open_array(setup.store, path=VARIABLE, mode="r")[0]
    np.testing.assert_array_equal(stored, _gdal_mosaic(setup))
    monkeypatch.setenv("MOSAIC_WORKER_MEMORY_GB", "2")
    assert LayeredWrite(setup.spec, setup.grid, setup.store, _tasks(setup), 2).window == layered_write.WINDOW


def test_layers_of_several_read_groups_at_two_resolutions_give_the_bytes_of_one_writer(
    deep_scenes: list, tmp_path: Path
) -> None:
    """The scenes' 10 m bands and their 20 m class asset (Sentinel-2's SCL shape): two read groups,
    each layer read group by group, merged band by band: the bytes of one writer's whole-piece reads."""
    bands = [{"name": n, "asset": "data", "index": i + 1} for i, n in enumerate(("blue", "green", "red", "nir"))]
    bands.append({"name": "scl", "asset": SCL_ASSET, "index": 1, "resampling": "nearest"})
    serial = _setup(deep_scenes, tmp_path / "serial", bands=bands, partition_bytes="640KiB")  # one chunk
    assert all(o.error is None for o in write_blocks(serial.spec, serial.grid, serial.store, _tasks(serial), cpus=1))
    setup = _setup(deep_scenes, tmp_path / "layers", bands=bands, partition_bytes="640KiB")
    job = _written(setup, 2)
    assert job.worthwhile and all(o.error is None for o in job.results())
    assert len(read_plan(setup.spec, job.pieces[len(job.pieces) // 2].scenes)) == 2, "a 10 m and a 20 m group"
    assert chunk_hashes(setup.store) == chunk_hashes(serial.store)


def test_an_index_that_cannot_be_read_fails_each_piece_not_the_step(
    deep_scenes: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan reads the step's index before the writers start: when it cannot, every piece still gets
    its own outcome naming the failure (as one writer's pieces do), and nothing is written."""
    setup = _setup(deep_scenes, tmp_path)
    Path(setup.files.index).write_bytes(b"not a GeoPackage")
    monkeypatch.setenv("MOSAIC_WRITERS", "threads")
    outcomes = write_blocks(setup.spec, setup.grid, setup.store, _tasks(setup), cpus=2)
    assert len(outcomes) == len(_tasks(setup)) and all(o.error for o in outcomes)
    assert all(str(setup.files.index) in o.error or "GeoPackage" in o.error or "gpkg" in o.error for o in outcomes)
    assert chunk_hashes(setup.store) == {}
