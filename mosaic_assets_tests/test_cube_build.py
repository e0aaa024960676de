"""A cube of three datasets through Dagster, against the real STAC API, GDAL and Zarr: a Sentinel-2
source (Planetary Computer's shape, 10/20 m, UTM 32 and 33 scenes, a masked median), a Landsat C2 L2
source (30 m, gridded in UTM 33) and a static Copernicus-DEM source (float32 in EPSG:4326) on one
10 m UTM 32 grid.

Each source's bands are checked against its own independent reference: numpy reducers over
``gdal.Warp`` stacks for the median (composite_reference), GDAL's own warp for the mosaicked Landsat
bands and the elevation layer (pixels.assert_matches_gdal_warp, the foundation's thresholds). Then the
incremental path: a new Landsat item through the sensors redoes only Landsat's partitions, and every
chunk it does not concern keeps its bytes."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import xarray as xr
import yaml

from mosaic_assets.engine.anchor import native_fraction
from mosaic_assets.engine.bandgroups import read_groups
from mosaic_assets.engine.catalog import scene_table
from mosaic_assets.engine.cube import Cube
from mosaic_assets.engine.spec import CubeSpec, parse_specs

from .catalog_fixtures import CatalogFixture, load_fixture, make_fixture
from .composite_reference import composite_reference, reference_stack, usable_pixels
from .conftest import dagster_env, evaluate_sensor, reset_collection, run_build, run_sensor_request
from .pixels import assert_matches_gdal_warp

SCL_EXCLUDE = [0, 1, 3, 8, 9, 10]
SOURCES = {"s2": "pc_s2_l2a", "landsat": "landsat_c2_l2_utm33", "dem": "cop_dem_glo_30"}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CatalogFixture]:
    folder = tmp_path_factory.mktemp("cube-catalogs")
    return {source: make_fixture(name, folder / name) for source, name in SOURCES.items()}


def _load(api: str, fixtures: dict[str, CatalogFixture]) -> None:
    for fixture in fixtures.values():
        reset_collection(api, fixture.collection)
        load_fixture(api, fixture)


def _cube_document(api: str, fixtures: dict[str, CatalogFixture]) -> dict:
    s2, landsat, dem = (fixtures[k] for k in SOURCES)
    stac = lambda fixture: {"url": api, "collections": [fixture.collection]}  # noqa: E731
    probe = parse_specs(
        {
            "mosaics": [
                {
                    "name": "probe",
                    "stac": stac(s2),
                    "bands": s2.bands,
                    "area": {"bbox": list(s2.area_native), "crs": s2.native_crs},
                    "crs": s2.native_crs,
                    "resolution": 10,
                    "time": {"start": "2024-06-01"},
                }
            ]
        }
    )[0]
    cube = {
        "name": "cube",
        "area": {"bbox": list(s2.area_native), "crs": s2.native_crs},
        "crs": "EPSG:32632",
        "resolution": 10,
        "anchor": list(native_fraction(probe, s2.items[0])),  # Sentinel-2's own lattice: its pixels are copies
        "time": {"start": "2024-06-01", "step": "monthly"},
        "chunks": {"y": 128, "x": 128},
        "partition_bytes": "160KiB",
        "sources": [
            {
                "name": "s2",
                "stac": stac(s2),
                "bands": [b for b in s2.bands if b["asset"] != "SCL"],
                "mask": {"asset": "SCL", "exclude": SCL_EXCLUDE, "dilate_pixels": 2},
                "composite": {"method": "median", "count_band": True},
            },
            {
                "name": "landsat",
                "stac": stac(landsat),
                "bands": [{**b, "name": f"ls_{b['name']}"} for b in landsat.bands if b["asset"] != "qa_pixel"],
            },
            {
                "name": "dem",
                "stac": stac(dem),
                "bands": dem.bands,
                "static": True,
                "dtype": "float32",
                "nodata": -32767,
            },
        ],
    }
    return {"mosaics": [cube]}


def _variable_hashes(store: Path) -> dict[str, str]:
    """sha256 of every chunk object of the cube's data variables (not coordinates: time grows)."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for variable in ("mosaic", "elevation")
        for p in sorted((store / variable).rglob("*"))
        if p.is_file() and not p.name.startswith("zarr.")
    }


def _check_s2_median(cube: Cube, store: str, items: list[dict], tmp: Path) -> dict:
    source = cube.source("s2")
    spec = source.spec
    table = scene_table(spec, items)
    stack, masks, ranks = reference_stack(spec, cube.grid, table, tmp)
    usable = usable_pixels(spec, stack, masks)
    expected = composite_reference(spec, stack, usable, ranks)
    offset = source.placement.band_offset
    ours = xr.open_zarr(store, mask_and_scale=False)["mosaic"][0].values[offset : offset + len(spec.band_names)]
    got, count = ours[: len(spec.bands)], ours[len(spec.bands)]
    in_crs = np.array([c == spec.crs for c in table["crs"]])
    native = ~np.any(usable[~in_crs], axis=0) & usable.any(axis=0)
    covered = usable.any(axis=0)
    equal = np.all(got == expected, axis=0)
    assert usable.sum(axis=0).max() >= 2 and covered.sum() > 20_000
    # where only UTM 32 scenes observed a pixel: copies (the 15 June pass is UTM 33 and covers most)
    assert not native.any() or equal[native].mean() >= 0.9999, f"native pixels equal {equal[native].mean():.5f}"
    assert (count[native] == usable.sum(axis=0)[native]).all()
    assert equal[covered].mean() >= 0.95, f"pixels equal {equal[covered].mean():.5f}"
    counted = (count == usable.sum(axis=0))[covered].mean()
    assert counted >= 0.95, f"valid_count equal on {counted:.5f}"
    return {
        "covered_pixels": int(covered.sum()),
        "equal": float(equal[covered].mean()),
        "count_equal": float(counted),
        "native_pixels": int(native.sum()),
    }


def test_three_sources_build_one_store_each_equal_to_its_reference(
    fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """`run build` (the demo's command) over a cube: one store with Sentinel-2's median and count bands,
    then Landsat's bands along ``band`` (a ``source`` coordinate names each band's), the elevation as its
    own float32 (y, x) variable written once; each source equal to its own reference."""
    _load(stac_api, fixtures)
    document = _cube_document(stac_api, fixtures)
    (spec,) = parse_specs(document)
    assert isinstance(spec, CubeSpec)
    cube = Cube.from_spec(spec)
    env = dagster_env(tmp_path, document, stac_api)
    proc = run_build(env)
    assert "mosaic cube:" in proc.stdout
    store = str(tmp_path / "data" / "stores" / "cube.zarr")
    dataset = xr.open_zarr(store, mask_and_scale=False)
    s2, landsat, dem = (cube.source(k) for k in SOURCES)
    bands = [*s2.spec.band_names, *landsat.spec.band_names]
    assert list(dataset["band"].values) == bands
    assert list(dataset["source"].values) == ["s2"] * 4 + ["landsat"] * 3
    assert dataset["mosaic"].sizes["time"] == 1
    assert dataset["elevation"].dims == ("y", "x") and dataset["elevation"].dtype == np.float32
    assert dataset["elevation"].attrs["source"] == "dem"
    # raw numbers: each band's scale and offset as its source declares them (PC's Sentinel-2 declares none,
    # Landsat C2 2.75e-05 and -0.2), the count band none, the DEM none
    assert dataset["scale"].values.tolist() == [1.0] * 4 + [2.75e-05] * 3
    assert dataset["offset"].values.tolist() == [0.0] * 4 + [-0.2] * 3
    assert "scale_factor" not in dataset["mosaic"].attrs and "scale_factor" not in dataset["elevation"].attrs

    figures = {"s2": _check_s2_median(cube, store, fixtures["s2"].items, tmp_path / "ref-s2")}
    ls_table = scene_table(landsat.spec, fixtures["landsat"].items)
    assert set(ls_table["crs"]) == {"EPSG:32633"}
    for group in read_groups(landsat.spec):
        figures[f"landsat-{group.asset}"] = assert_matches_gdal_warp(
            landsat.spec,
            cube.grid,
            store,
            0,
            ls_table,
            tmp_path / f"ref-ls-{group.number}",
            positions=list(group.positions),
            placement=landsat.placement,
        )
    dem_table = scene_table(dem.spec, fixtures["dem"].items)
    figures["dem"] = assert_matches_gdal_warp(
        dem.spec, cube.grid, store, 0, dem_table, tmp_path / "ref-dem", placement=dem.placement
    )
    print(figures)
    assert all(f["reprojected_pixels"] > 20_000 for k, f in figures.items() if k != "s2")

    # the static layer once: its chunk partitions are keyed `static`, none per time step
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        key = dg.AssetKey(["cube", "dem", "mosaic_chunks"])
        done = instance.get_materialized_partitions(key)
    assert done and all(str(k).startswith("static|") for k in done)


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None):
    return evaluate_sensor(defs, instance, name, cursor)


def _run_request(result: dg.SensorResult, defs: dg.Definitions, instance, source: str) -> dict[str, list]:
    """What a source's sensor asked for, run in dependency order; the partitions that ran per asset name.
    A source's sensor may ask for its own assets and the cube's template only."""
    keys = [
        dg.AssetKey(["cube", source, "scene_catalog"]),
        dg.AssetKey(["cube", source, "gti_index"]),
        dg.AssetKey(["cube", "zarr_template"]),
        dg.AssetKey(["cube", source, "mosaic_chunks"]),
    ]
    ran = run_sensor_request(result, keys, defs.assets, defs.resources, instance)
    return {key.path[-1]: partitions for key, partitions in ran.items()}


@pytest.mark.incremental
def test_a_new_item_in_one_source_redoes_only_its_partitions(
    fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cube built through its three STAC sensors; then a July Landsat item: the Landsat sensor alone
    asks for work (its catalog, GTI and chunks of 2024-07 and the template, which grows along time); the
    other sensors skip, and every chunk the change does not concern is unchanged, byte for byte."""
    from mosaic_assets.definitions import build_definitions
    from mosaic_assets.demo.stac_load import upsert_items

    _load(stac_api, fixtures)
    document = _cube_document(stac_api, fixtures)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("MOSAIC_STAC_API_URL", stac_api)
    monkeypatch.setenv("MOSAIC_DATA_DIR", str(tmp_path / "data"))
    defs = build_definitions(spec_path)
    cube = Cube.from_spec(parse_specs(document)[0])
    store = tmp_path / "data" / "stores" / "cube.zarr"
    cursors: dict[str, str | None] = dict.fromkeys(SOURCES)
    with dg.instance_for_test() as instance:
        for source in SOURCES:
            result = _evaluate(defs, instance, f"cube_{source}_stac_sensor", None)
            assert isinstance(result, dg.SensorResult), source
            _run_request(result, defs, instance, source)
            cursors[source] = result.cursor
        before = _variable_hashes(store)
        assert before
        # the Sentinel-2 sensor's run made the store before Landsat had a scene table: Landsat's run
        # recorded its scale and offset afterwards
        assert xr.open_zarr(store)["scale"].values.tolist() == [1.0] * 4 + [2.75e-05] * 3

        july = copy.deepcopy(fixtures["landsat"].items[1])
        july["id"] = july["id"].replace("20240612", "20240714")
        july["properties"]["datetime"] = "2024-07-14T10:04:35.419304Z"
        upsert_items(stac_api, fixtures["landsat"].collection, [july])
        ran = {}
        for source in SOURCES:
            result = _evaluate(defs, instance, f"cube_{source}_stac_sensor", cursors[source])
            if source != "landsat":
                assert isinstance(result, dg.SkipReason), (source, result)
                continue
            ran = _run_request(result, defs, instance, source)
            cursors[source] = result.cursor
        after = _variable_hashes(store)

        # a re-published DEM tile (newer `updated`): its sensor redoes the static layer's partitions only
        tile = copy.deepcopy(fixtures["dem"].items[0])
        tile["properties"]["updated"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        upsert_items(stac_api, fixtures["dem"].collection, [tile])
        result = _evaluate(defs, instance, "cube_dem_stac_sensor", cursors["dem"])
        assert isinstance(result, dg.SensorResult)
        refreshed = _run_request(result, defs, instance, "dem")
        for source in ("s2", "landsat"):  # nothing new for them
            assert isinstance(_evaluate(defs, instance, f"cube_{source}_stac_sensor", cursors[source]), dg.SkipReason)
    assert refreshed["scene_catalog"] == ["static"] and refreshed["mosaic_chunks"]
    assert all(k.startswith("static|") for k in refreshed["mosaic_chunks"])
    assert _variable_hashes(store) == after, "the same tile again: the same bytes, and no other source touched"
    assert ran["scene_catalog"] == ran["gti_index"] == ["2024-07-01"] and ran["zarr_template"] == [None]
    assert ran["mosaic_chunks"] and all(k.startswith("2024-07-01|") for k in ran["mosaic_chunks"])
    assert {k: after[k] for k in before} == before, "a chunk the July Landsat item does not concern changed"
    landsat = cube.source("landsat").placement
    new = set(after) - set(before)
    assert new, "the July item wrote nothing"
    for path in new:  # mosaic/c/<time>/<band>/<y>/<x>: Landsat's bands of the new step only
        _, _, t, b, _, _ = path.split("/")
        assert int(t) == 1 and landsat.band_offset <= int(b) < landsat.band_offset + landsat.bands, path
    assert xr.open_zarr(store)["mosaic"].sizes["time"] == 2


def test_a_source_without_items_is_named_and_the_others_built(
    fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """`run build` of a cube whose Landsat collection is still empty: the Sentinel-2 and DEM sources are
    built, Landsat's bands stay fill, and the build exits 3 naming the source, its collection and query."""
    from mosaic_assets.demo.stac_load import upsert_collection

    _load(stac_api, {k: v for k, v in fixtures.items() if k != "landsat"})
    reset_collection(stac_api, "landsat-empty")
    upsert_collection(stac_api, {**copy.deepcopy(fixtures["landsat"].collection_doc), "id": "landsat-empty"})
    document = _cube_document(stac_api, fixtures)
    document["mosaics"][0]["sources"][1]["stac"]["collections"] = ["landsat-empty"]
    env = dagster_env(tmp_path, document, stac_api)
    proc = run_build(env, returncode=3)
    assert "mosaic cube_landsat: no items yet" in proc.stderr and "['landsat-empty']" in proc.stderr
    assert "cube_s2" not in proc.stderr and "cube_dem" not in proc.stderr
    dataset = xr.open_zarr(tmp_path / "data" / "stores" / "cube.zarr", mask_and_scale=False)
    landsat = Cube.from_spec(parse_specs(document)[0]).source("landsat").placement
    bands = dataset["mosaic"][0].values
    assert (bands[landsat.band_offset :] == 0).all() and (bands[: landsat.band_offset] != 0).any()
    assert np.isfinite(dataset["elevation"].values).all() and (dataset["elevation"].values != -32767).all()
