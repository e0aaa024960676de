"""Cloud masks and temporal composites against an independent reference: every scene's every band and
mask warped alone by GDAL's own ``gdal.Warp`` (reference_warp.py, the osgeo bindings) onto the mosaic
grid, masks evaluated and dilated here with scipy.ndimage, and numpy's reducers over that stack.

Fixtures are the public catalogs' shapes (catalog_fixtures): Sentinel-2's 20 m SCL classes under 10 m
bands (Planetary Computer), Landsat C2 QA_PIXEL bit flags, DEA's fmask clear values."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mosaic_assets.engine.bandgroups import stacks
from mosaic_assets.engine.catalog import scene_assets, scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.nested_read import nesting
from mosaic_assets.engine.spec import MosaicSpec, SpecError, parse_specs
from mosaic_assets.engine.writer import write_block

from .catalog_fixtures import CatalogFixture, make_fixture
from .composite_reference import composite_reference, reference_stack, usable_pixels
from .conftest import engine_setup_for

SCL_EXCLUDE = [0, 1, 3, 8, 9, 10]  # nodata, saturated, cloud shadow, cloud medium/high, cirrus
CASES = {
    # fixture: (mask, the bands reduced: no class band)
    "pc_s2_l2a": {"asset": "SCL", "exclude": SCL_EXCLUDE, "dilate_pixels": 2},
    "landsat_c2_l2": {"asset": "qa_pixel", "exclude_bits": [1, 3, 4]},
    "landsat_ard": {"asset": "oa_fmask", "valid": [1]},
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CatalogFixture]:
    folder = tmp_path_factory.mktemp("composite-catalogs")
    return {name: make_fixture(name, folder / name) for name in CASES}


def _native_anchor(fixture: CatalogFixture) -> tuple[float, float]:
    """anchor: native, resolved from the first item without a STAC API (engine.anchor.native_fraction)."""
    from mosaic_assets.engine.anchor import native_fraction

    probe = {
        "mosaics": [
            {
                "name": "probe",
                "stac": {"url": "http://127.0.0.1:1", "collections": ["x"]},
                "bands": fixture.bands,
                "area": {"bbox": list(fixture.area_native), "crs": fixture.native_crs},
                "crs": fixture.native_crs,
                "resolution": fixture.native_resolution,
                "time": {"start": "2024-06-01"},
            }
        ]
    }
    return native_fraction(parse_specs(probe)[0], fixture.items[0])


def _spec(fixture: CatalogFixture, method: str, **overrides) -> MosaicSpec:
    mask = CASES[fixture.name]
    bands = [b for b in fixture.bands if b["asset"] != mask["asset"]]
    mosaic = {
        "name": f"comp_{fixture.name}",
        "stac": {"url": "http://127.0.0.1:1", "collections": [fixture.collection]},
        "bands": bands,
        "area": {"bbox": list(fixture.area_native), "crs": fixture.native_crs},
        "crs": fixture.native_crs,
        "resolution": fixture.native_resolution,
        "anchor": list(_native_anchor(fixture)),  # the scenes' own pixel grid: no half-pixel ties
        "time": {"start": "2024-06-01", "step": "monthly"},
        "chunks": {"y": 128, "x": 128},
        "partition_bytes": "1MiB",
        "mask": mask,
        "composite": {"method": method, "count_band": True},
    }
    if fixture.name == "landsat_ard":
        mosaic.update(dtype="int16", nodata=-999)
    mosaic.update(overrides)
    return parse_specs({"mosaics": [{k: v for k, v in mosaic.items() if v is not None}]})[0]  # None: key dropped


def _build(spec: MosaicSpec, items: list[dict], tmp: Path) -> tuple[MosaicGrid, object, np.ndarray]:
    built = engine_setup_for(spec, items, tmp)
    for block in built.grid.blocks():
        write_block(spec, built.grid, built.store, built.files, 0, block)
    return built.grid, built.table, xr.open_zarr(built.store, mask_and_scale=False)["mosaic"][0].values


@pytest.mark.parametrize("method", ["first_valid", "median", "mean", "min", "max"])
@pytest.mark.parametrize("name", list(CASES))
def test_composite_equals_numpy_over_gdal_warps(
    name: str, method: str, fixtures: dict[str, CatalogFixture], tmp_path: Path
) -> None:
    """Each method over each mask rule: equal to the reference where every observation is in the mosaic's
    CRS (>= 99.99 %; across CRSs nearest picks may differ by a source pixel: >= 95 %), valid_count exact
    there; no clear observation -> nodata and a count of 0."""
    fixture = fixtures[name]
    spec = _spec(fixture, method)
    grid, table, ours = _build(spec, fixture.items, tmp_path)
    if name == "pc_s2_l2a":  # what this reference also checks: the 10 m stack, SCL read on its own grid
        assets = scene_assets(table)
        assert [s.name for s in stacks(spec, assets)] == ["s0_1"]
        assert any(nesting(grid, a[spec.mask.asset]) for a in assets)
    stack, masks, ranks = reference_stack(spec, grid, table, tmp_path / "ref")
    usable = usable_pixels(spec, stack, masks)
    expected = composite_reference(spec, stack, usable, ranks)
    got, count = ours[: len(spec.bands)], ours[len(spec.bands)]
    in_crs = np.array([c == spec.crs for c in table["crs"]])
    native = ~np.any(usable[~in_crs], axis=0) & usable.any(axis=0)  # only scenes in the mosaic's CRS there
    assert usable.sum(axis=0).max() >= 2 or method == "first_valid", "composites need several observations"
    data = np.any(stack != spec.nodata, axis=1)
    assert (data & ~usable).sum() > 1000, "the mask must remove observations (clouds) for this to mean anything"
    equal = np.all(got == expected, axis=0)
    if native.sum() > 1000:
        assert equal[native].mean() >= 0.9999, f"{name} {method}: native pixels equal {equal[native].mean():.5f}"
        assert (count[native] == usable.sum(axis=0)[native]).all()
    covered = usable.any(axis=0)
    assert equal[covered].mean() >= 0.95, f"{name} {method}: pixels equal {equal[covered].mean():.5f}"
    none = ~covered & (count == 0)
    assert (got[:, none] == np.array(spec.nodata, dtype=spec.dtype)).all(), "no clear observation: nodata"


def test_cloudy_pixels_never_survive_where_a_clear_observation_exists(
    fixtures: dict[str, CatalogFixture], tmp_path: Path
) -> None:
    """The fixture's own truth (its SCL marks clouds and shadows): a first_valid or median pixel never takes
    a scene's value where that scene is cloudy and another is clear."""
    fixture = fixtures["pc_s2_l2a"]
    for method in ("first_valid", "median"):
        spec = _spec(fixture, method, mask={"asset": "SCL", "exclude": SCL_EXCLUDE})
        grid, table, ours = _build(spec, fixture.items, tmp_path / method)
        stack, masks, _ = reference_stack(spec, grid, table, tmp_path / method / "ref")
        cloudy = np.isin(masks, [3, 8, 9, 10])
        clear = ~cloudy & (masks != 0)
        got = ours[0]
        # where exactly one scene is clear and the others cloudy, the value is the clear scene's own
        single = (clear.sum(axis=0) == 1) & cloudy.any(axis=0)
        assert single.sum() > 500
        which = np.argmax(clear, axis=0)
        own = np.take_along_axis(stack[:, 0], which[np.newaxis], axis=0)[0]
        assert (got[single] == own[single]).mean() >= 0.95, method
        assert (got[clear.sum(axis=0) == 0] == spec.nodata).all()


def test_arrival_order_does_not_change_a_byte(fixtures: dict[str, CatalogFixture], tmp_path: Path) -> None:
    """Items registered in another order (an incremental catalog) give the same bytes as all at once."""
    fixture = fixtures["pc_s2_l2a"]
    spec = _spec(fixture, "median")
    _, _, first = _build(spec, fixture.items, tmp_path / "a")
    shuffled = list(fixture.items)
    random.Random(3).shuffle(shuffled)
    _, _, second = _build(spec, list(reversed(shuffled)), tmp_path / "b")
    assert first.tobytes() == second.tobytes()


def test_bad_mask_settings_are_spec_errors_naming_the_key(fixtures: dict[str, CatalogFixture]) -> None:
    fixture = fixtures["pc_s2_l2a"]
    with pytest.raises(SpecError, match=r"mask: .*exactly one of exclude, exclude_bits or valid"):
        _spec(fixture, "median", mask={"asset": "SCL", "exclude": [8], "valid": [4]})
    with pytest.raises(SpecError, match=r"composite.method: median over the mask's class band \['scl'\]"):
        _spec(fixture, "median", bands=fixture.bands)  # SCL itself among the reduced bands
    from mosaic_assets.engine.catalog import CatalogError

    spec = _spec(fixture, "first_valid", mask={"asset": "SCL", "exclude": [300]})
    item = fixture.items[0]
    item = {
        **item,
        "assets": {**item["assets"], "SCL": {**item["assets"]["SCL"], "raster:bands": [{"data_type": "uint8"}]}},
    }
    with pytest.raises(CatalogError, match=r"mask.exclude: \[300\] do not fit the mask asset's data type uint8"):
        scene_table(spec, [item])


def test_an_item_lacking_its_mask_asset_fails_its_partitions_or_is_skipped(
    fixtures: dict[str, CatalogFixture], tmp_path: Path
) -> None:
    """The catalog keeps the item (a time step is not lost to one item); each partition it touches (all
    of this fixture's) fails naming item and asset, writing nothing, or under ``bad_scenes: skip`` is
    written without it, listing it, with the bytes of a build that never had it."""
    from mosaic_assets.engine.writer import SceneReadError

    fixture = fixtures["pc_s2_l2a"]
    first = fixture.items[0]
    lacking = {**first, "assets": {k: v for k, v in first["assets"].items() if k != "SCL"}}
    items = [lacking, *fixture.items[1:]]
    spec = _spec(fixture, "median")
    built = engine_setup_for(spec, items, tmp_path / "fail")
    touched, untouched = 0, 0
    for block in built.grid.blocks():
        try:
            write_block(spec, built.grid, built.store, built.files, 0, block)
            untouched += 1
        except SceneReadError as exc:
            assert f"item {first['id']}: has no asset 'SCL' (needed for the mask (spec.mask))" in str(exc)
            touched += 1
    assert touched >= 2, (touched, untouched)  # the item covers this fixture's whole area
    written = xr.open_zarr(built.store, mask_and_scale=False)["mosaic"].values
    assert (written == spec.nodata).all()  # the failed blocks wrote nothing: their chunks are absent

    skip = _spec(fixture, "median", bad_scenes="skip")
    built = engine_setup_for(skip, items, tmp_path / "skip")
    listed = set()
    for block in built.grid.blocks():
        result = write_block(skip, built.grid, built.store, built.files, 0, block)
        listed |= {s.item_id for s in result.skipped}
    assert listed == {first["id"]}
    without = _build(skip, fixture.items[1:], tmp_path / "without")[2]
    np.testing.assert_array_equal(xr.open_zarr(built.store, mask_and_scale=False)["mosaic"][0].values, without)


def test_masked_median_through_dagster(fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path) -> None:
    """The demo's command over the real STAC API and a real Dagster instance: a monthly masked median
    with its count band equals the reference, and every chunk check passes on it."""
    import dagster as dg

    from .catalog_fixtures import load_fixture
    from .conftest import dagster_env, reset_collection, run_build

    fixture = fixtures["pc_s2_l2a"]
    reset_collection(stac_api, fixture.collection)
    load_fixture(stac_api, fixture)
    spec = _spec(fixture, "median", stac={"url": stac_api, "collections": [fixture.collection]})
    document = {"mosaics": [spec.model_dump(mode="json", exclude_none=True)]}
    env = dagster_env(tmp_path, document, stac_api)
    run_build(env)
    store = tmp_path / "data" / "stores" / f"{spec.name}.zarr"
    dataset = xr.open_zarr(store, mask_and_scale=False)
    assert list(dataset["band"].values) == [*spec.band_names]
    ours = dataset["mosaic"][0].values
    grid = MosaicGrid.from_spec(spec)
    table = scene_table(spec, fixture.items)
    stack, masks, ranks = reference_stack(spec, grid, table, tmp_path / "ref")
    usable = usable_pixels(spec, stack, masks)
    equal = np.all(ours[: len(spec.bands)] == composite_reference(spec, stack, usable, ranks), axis=0)
    assert equal[usable.any(axis=0)].mean() >= 0.95
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

    chunks = dg.AssetKey([spec.name, "mosaic_chunks"])
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        storage = instance.event_log_storage
        for name in ("chunks_complete", "valid_pixels_match_footprints"):
            history = storage.get_asset_check_execution_history(dg.AssetCheckKey(chunks, name), limit=1000)
            results = [h for h in history if h.status != Status.PLANNED]
            assert results and all(h.status == Status.SUCCEEDED for h in results), (name, results)


def test_partitioning_does_not_change_a_byte(fixtures: dict[str, CatalogFixture], tmp_path: Path) -> None:
    """Masks are dilated across block edges (read with a margin): the grid cut into several partitions
    gives the same bytes as one partition holding it all."""
    fixture = fixtures["pc_s2_l2a"]
    small = _spec(fixture, "median", chunks={"y": 64, "x": 64}, partition_bytes="100KiB")
    whole = _spec(fixture, "median", chunks={"y": 64, "x": 64}, partition_bytes="64MiB")
    assert len(MosaicGrid.from_spec(small).block_keys()) > 4 and len(MosaicGrid.from_spec(whole).block_keys()) == 1
    _, _, cut = _build(small, fixture.items, tmp_path / "cut")
    _, _, one = _build(whole, fixture.items, tmp_path / "one")
    assert cut.tobytes() == one.tobytes()


@pytest.mark.parametrize("writers", ["threads", "processes"])
@pytest.mark.parametrize("kind", ["masked_median", "plain"])
def test_two_writers_write_the_bytes_of_one_on_real_item_shapes(
    fixtures: dict[str, CatalogFixture], writers: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sentinel-2 L2A as Planetary Computer serves it (one COG per band, 10 and 20 m, SCL clouds): the
    partitions written by two writers of each kind (``parallel_write``) equal one writer's bytes, for a
    masked median (scene-by-scene reads) and for a plain mosaic (GTI reads of per-resolution stacks)."""
    from mosaic_assets.engine.parallel_write import BlockTask, write_blocks

    fixture = fixtures["pc_s2_l2a"]
    small = {"chunks": {"y": 64, "x": 64}, "partition_bytes": "100KiB"}  # several blocks
    if kind == "masked_median":
        spec = _spec(fixture, "median", **small)
    else:
        spec = _spec(fixture, "first_valid", mask=None, composite=None, **small)
    monkeypatch.setenv("MOSAIC_WRITERS", writers)
    monkeypatch.setenv("MOSAIC_WORKER_POOL_MIN_BYTES", "0")  # a pool even for these small blocks
    _, _, serial = _build(spec, fixture.items, tmp_path / "serial")
    built = engine_setup_for(spec, fixture.items, tmp_path / "two")
    tasks = [BlockTask(b.key, built.files, 0, b) for b in built.grid.blocks()]
    assert len(tasks) > 4, "several blocks, or two writers prove little"
    outcomes = write_blocks(spec, built.grid, built.store, tasks, cpus=2)
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]
    two = xr.open_zarr(built.store, mask_and_scale=False)["mosaic"][0].values
    assert (two != spec.nodata).any()
    assert two.tobytes() == serial.tobytes()
