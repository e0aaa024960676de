"""Items shaped as the public catalogs serve them (catalog_fixtures), through the real STAC API, GDAL and
Zarr, each band checked against GDAL's own warp of its own asset's files (pixels.assert_matches_gdal_warp).

What each shape exercises: Planetary Computer Sentinel-2 (per-asset projection, item proj:epsg, 10/20/60 m
assets), Earth Search Sentinel-2 (raster:bands scale/offset and nodata), Landsat C2 L2 (item-level
projection, pixel centres on multiples of 30 m, a QA band whose fill is 1), Landsat ARD (a 15 m
panchromatic asset with its own grid)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import xarray as xr
import yaml

from mosaic_assets.engine.anchor import resolve_native
from mosaic_assets.engine.bandgroups import read_groups, read_plan, stacks_in
from mosaic_assets.engine.catalog import (
    CatalogError,
    declared_scaling,
    open_client,
    scene_assets,
    scene_table,
    search_time_step,
)
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import INDEX_LAYER, GtiFiles, build_gti
from mosaic_assets.engine.preview import preview_image
from mosaic_assets.engine.spec import MosaicSpec, parse_specs
from mosaic_assets.engine.store import ensure_template
from mosaic_assets.engine.writer import SceneReadError, block_scenes, write_block

from .catalog_fixtures import (
    EQUAL_AREA_CRS,
    EXAMPLE_SPECS,
    FIXTURE_NAMES,
    CatalogFixture,
    example_spec_for,
    load_fixture,
    make_fixture,
)
from .conftest import reset_collection, run_reference_warp
from .pixels import assert_matches_gdal_warp


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CatalogFixture]:
    folder = tmp_path_factory.mktemp("catalogs")
    return {name: make_fixture(name, folder / name) for name in FIXTURE_NAMES}


def _loaded(api: str, fixture: CatalogFixture) -> CatalogFixture:
    """The fixture alone in its collection (the two Sentinel-2 shapes share the public id)."""
    reset_collection(api, fixture.collection)
    load_fixture(api, fixture)
    return fixture


def _spec(api: str, fixture: CatalogFixture, **overrides) -> MosaicSpec:
    first = fixture.items[0]["properties"]["datetime"][:10]
    mosaic = {
        "name": f"cat_{fixture.name}",
        "stac": {"url": api, "collections": [fixture.collection]},
        "bands": fixture.bands,
        "area": {"bbox": list(fixture.area_native), "crs": fixture.native_crs},
        "crs": fixture.native_crs,
        "resolution": fixture.native_resolution,
        "time": {"start": first, "step": "monthly" if first.endswith("01") else "daily"},
        "chunks": {"y": 256, "x": 256},
        "partition_bytes": "4MiB",
    }
    if fixture.name == "landsat_ard":  # DEA's NBART bands are int16 with nodata -999 (reflectance may be < 0)
        mosaic.update(dtype="int16", nodata=-999)
    mosaic.update(overrides)
    return parse_specs({"mosaics": [mosaic]})[0]


def _build(spec: MosaicSpec, api: str, tmp: Path, data_root: Path | None = None):
    """Catalog (over HTTP) -> GTI -> template -> every block, by the engine; returns (grid, table, store)."""
    client = open_client(api)
    if spec.anchor == "native":
        spec = resolve_native(spec, data_root or tmp / "root", lambda s: client)
    grid = MosaicGrid.from_spec(spec)
    step = spec.time.start.isoformat()
    table = search_time_step(spec, client, step, api)
    assert len(table) >= 2, "the fixture's scenes must overlap the area"
    files = GtiFiles.for_step(tmp / "gti", step)
    build_gti(spec, grid, table, files)
    store = str(tmp / "store.zarr")
    ensure_template(spec, grid, store, 1, declared_scaling(spec, table))
    for block in grid.blocks():
        write_block(spec, grid, store, files, 0, block)
    return spec, grid, table, store


def _check_every_asset(spec, grid, table, store, tmp: Path) -> dict[str, dict]:
    figures = {}
    for group in read_groups(spec):
        figures[group.asset] = assert_matches_gdal_warp(
            spec, grid, store, 0, table, tmp / f"ref-{group.number}", positions=list(group.positions), min_valid=4000
        )
    return figures


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_each_catalog_shape_in_its_own_crs_copies_the_scenes(
    name: str, fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """anchor: native on the scenes' CRS and finest resolution: every band equals GDAL's warp of its own
    asset (native pixels >= 99.99 %), mixed resolutions included."""
    fixture = _loaded(stac_api, fixtures[name])
    # the scenes in the mosaic's own UTM zone on top, so most pixels are copies
    zones = {int(i["properties"]["proj:epsg"]) for i in fixture.items}
    native_is_highest = int(fixture.native_crs.split(":")[1]) == max(zones)
    on_top = {"property": "proj:epsg", "best": "highest" if native_is_highest else "lowest"}
    spec = _spec(stac_api, fixture, anchor="native", best_on_top=on_top)
    spec, grid, table, store = _build(spec, stac_api, tmp_path)
    figures = _check_every_asset(spec, grid, table, store, tmp_path)
    print(name, json.dumps(figures))
    assert all(f["native_pixels"] > 4000 for f in figures.values())


def test_assets_on_one_grid_are_read_as_one_stack(
    fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """Planetary Computer's Sentinel-2 (a COG per band): red and nir (10 m) are one stack, swir16 and scl
    (20 m, both nearest) another. The index names both, every block's read plan takes 2 GTIs for the 4
    bands, and every band still equals GDAL's warp of its own asset, in both CRSs of the scenes."""
    fixture = _loaded(stac_api, fixtures["pc_s2_l2a"])
    spec = _spec(stac_api, fixture, anchor="native", best_on_top={"property": "proj:epsg", "best": "lowest"})
    spec, grid, table, store = _build(spec, stac_api, tmp_path)
    files = GtiFiles.for_step(tmp_path / "gti", spec.time.start.isoformat())
    fields = pyogrio.read_info(str(files.index), layer=INDEX_LAYER)["fields"]
    assert [s.name for s in stacks_in(spec, fields)] == ["s0_1", "s2_3"]
    plans = {tuple(g.name for g in read_plan(spec, block_scenes(grid, files, b))) for b in grid.blocks()}
    assert plans == {("s0_1", "s2_3")}
    figures = _check_every_asset(spec, grid, table, store, tmp_path)
    assert all(f["native_pixels"] > 4000 for f in figures.values())


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_each_catalog_shape_reprojected(
    name: str, fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """Onto the region's equal-area CRS (EPSG:3035 in Europe, 3577 in Australia) at the finest resolution:
    the foundation's rule for reprojected pixels, per asset."""
    fixture = _loaded(stac_api, fixtures[name])
    spec = _spec(stac_api, fixture, crs=EQUAL_AREA_CRS[name])
    spec, grid, table, store = _build(spec, stac_api, tmp_path)
    figures = _check_every_asset(spec, grid, table, store, tmp_path)
    print(name, json.dumps(figures))
    assert all(f["reprojected_pixels"] > 0 for f in figures.values())


@pytest.mark.parametrize("use_overviews", [False, True])
def test_overview_policy_holds_with_one_asset_per_band(
    use_overviews: bool, fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """Sentinel-2 per-band COGs (10 and 20 m, two CRSs) mosaicked at 30 m: like-for-like with a warp that
    reads full resolution (use_overviews: false) or the overviews (true); and the two really differ."""
    fixture = _loaded(stac_api, fixtures["pc_s2_l2a"])
    # 30 m: every 30 m pixel centre falls inside one 10 m / 20 m pixel (at 40 m it falls on their edges,
    # where two correct nearest-neighbour implementations may pick either side); the zone 32 scene on top
    on_top = {"property": "proj:epsg", "best": "lowest"}
    spec = _spec(stac_api, fixture, resolution=30, use_overviews=use_overviews, anchor="edge", best_on_top=on_top)
    spec, grid, table, store = _build(spec, stac_api, tmp_path)
    figures = _check_every_asset(spec, grid, table, store, tmp_path)
    assert all(f["native_pixels"] > 1000 for f in figures.values())
    other = _spec(stac_api, fixture, resolution=30, use_overviews=not use_overviews, anchor="edge", best_on_top=on_top)
    _, _, _, other_store = _build(other, stac_api, tmp_path / "other")
    ours = xr.open_zarr(store, mask_and_scale=False)["mosaic"][0].values
    theirs = xr.open_zarr(other_store, mask_and_scale=False)["mosaic"][0].values
    both = np.any(ours != 0, axis=0) & np.any(theirs != 0, axis=0)
    assert np.all(ours == theirs, axis=0)[both].mean() < 0.5, "overviews are averages: most values must differ"


def test_physical_values_are_raw_times_scale_plus_offset(
    fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """Earth Search's raster:bands scale 0.0001 / offset -0.1: float32 equals the reference warp's raw
    numbers x scale + offset (computed in float64, stored as float32), nodata is NaN; raw mode records
    scale and offset per band so xarray users can decode."""
    fixture = _loaded(stac_api, fixtures["es_s2_l2a"])
    on_top = {"property": "proj:epsg", "best": "lowest"}  # the scenes in the mosaic's CRS: values, not picks
    raw_spec = _spec(stac_api, fixture, anchor="edge", best_on_top=on_top)
    raw_spec, grid, table, raw_store = _build(raw_spec, stac_api, tmp_path / "raw")
    phys_spec = _spec(stac_api, fixture, anchor="edge", values="physical", best_on_top=on_top)
    phys_spec, _, _, phys_store = _build(phys_spec, stac_api, tmp_path / "physical")
    physical = xr.open_zarr(phys_store, mask_and_scale=False)["mosaic"][0].values
    assert physical.dtype == np.float32
    assets = scene_assets(table)[0]
    for group in read_groups(raw_spec):
        band = group.bands[0]
        meta = assets[band.asset]["bands"][str(band.index)]
        if meta.get("scale") is None:
            continue
        reference = _reference(raw_spec, grid, table, group, tmp_path / f"ref-{group.number}")
        valid = reference != raw_spec.nodata
        expected = (reference.astype(np.float64) * meta["scale"] + meta["offset"]).astype(np.float32)
        got = physical[group.positions[0]]
        assert valid.sum() > 1000
        assert np.isnan(got[~valid]).all(), "nodata must be NaN"
        assert (got[valid] == expected[valid]).mean() >= 0.9999
    # the preview shows the physical store's valid pixels, NaN transparent (max_size: one pixel per pixel)
    alpha = np.asarray(preview_image(phys_store, 0, max_size=max(physical.shape[1:])))[..., 3]
    assert ((alpha == 255) == ~np.isnan(physical[raw_spec.band_names.index("red")])).all()  # red is its RGB
    # raw: each band's scale and offset as band coordinates (CF has one pair per variable, and scl has none)
    stored = xr.open_zarr(raw_store)
    for position, band in enumerate(raw_spec.bands):
        meta = assets[band.asset]["bands"][str(band.index)]
        assert float(stored["scale"][position]) == (meta.get("scale") or 1.0)
        assert float(stored["offset"][position]) == (meta.get("offset") or 0.0)
    # a mosaic of reflectance bands only shares one pair: xr.open_zarr decodes it to physical values itself
    reflectance = [b for b in fixture.bands if assets[b["asset"]]["bands"][str(b.get("index", 1))].get("scale")]
    refl_spec = _spec(stac_api, fixture, anchor="edge", best_on_top=on_top, bands=reflectance, name="cat_refl")
    refl_spec, _, _, refl_store = _build(refl_spec, stac_api, tmp_path / "refl")
    decoded = xr.open_zarr(refl_store)["mosaic"][0].values
    phys_positions = [raw_spec.band_names.index(b["name"]) for b in reflectance]
    same = ~np.isnan(physical[phys_positions])
    assert same.sum() > 1000
    assert np.allclose(decoded[same], physical[phys_positions][same], rtol=0, atol=1e-6)


def _reference(spec, grid, table, group, tmp: Path) -> np.ndarray:
    """GDAL's warp of one group's first band from its asset files, z-ordered like the GTI."""
    from mosaic_assets.engine.gti import priorities

    tmp.mkdir(parents=True, exist_ok=True)
    order = np.argsort(priorities(spec, table))
    assets = scene_assets(table)
    band = group.bands[0]
    declared = assets[0][band.asset]["bands"][str(band.index)].get("nodata")
    if declared is None:  # the file's own, as the mosaic honours it (pixels._source_nodata)
        with rasterio.open(assets[0][band.asset]["href"]) as src:
            declared = src.nodata
    job = {
        "sources": [assets[i][band.asset]["href"] for i in order],
        "bands": [band.index],
        "srs": grid.geobox.crs.to_wkt(),
        "bounds": list(grid.geobox.extent.boundingbox),
        "res": spec.resolution,
        "resampling": spec.band_resampling(band),
        "nodata": spec.nodata,
        "src_nodata": spec.nodata if declared is None else float(declared),
        "use_overviews": spec.use_overviews,
        "out": str(tmp / "reference.tif"),
        "source_map": str(tmp / "source_map.tif"),
    }
    run_reference_warp(job)
    with rasterio.open(job["out"]) as ref:
        return ref.read(1)


def test_asset_without_projection_anywhere_is_a_catalog_error(fixtures: dict[str, CatalogFixture]) -> None:
    fixture = fixtures["pc_s2_l2a"]
    spec = _spec("http://127.0.0.1:1", fixture)
    item = copy.deepcopy(fixture.items[0])
    asset = fixture.bands[0]["asset"]
    for where in (item["assets"][asset], item["properties"]):
        where.pop("proj:transform", None)
    with pytest.raises(CatalogError, match=rf"item {item['id']}: asset '{asset}': lacks projection metadata"):
        scene_table(spec, [item])


def test_unknown_projection_code_names_item_and_asset(fixtures: dict[str, CatalogFixture]) -> None:
    fixture = fixtures["es_s2_l2a"]
    spec = _spec("http://127.0.0.1:1", fixture)
    item = copy.deepcopy(fixture.items[0])
    for where in (item["properties"], *item["assets"].values()):
        for key in ("proj:epsg", "proj:code"):
            if key in where:
                where.pop(key)
                where["proj:code"] = "EPSG:999999"
    with pytest.raises(CatalogError, match=rf"item {item['id']}: asset '.*': unknown projection 'EPSG:999999'"):
        scene_table(spec, [item])


def test_asset_transform_that_disagrees_with_its_file_fails_the_partition(
    fixtures: dict[str, CatalogFixture], tmp_path: Path
) -> None:
    """A 20 m asset whose STAC transform says 10 m: the writer names item and asset and writes nothing."""
    fixture = fixtures["pc_s2_l2a"]
    spec = _spec("http://127.0.0.1:1", fixture, anchor="edge")
    items = copy.deepcopy(fixture.items[:1])  # one scene: every block it touches must fail, none write
    assets = items[0]["assets"]
    coarse = next(
        b["asset"]
        for b in fixture.bands
        if abs(assets[b["asset"]].get("proj:transform", [0])[0]) > fixture.native_resolution
    )
    transform = items[0]["assets"][coarse]["proj:transform"]
    transform[0], transform[4] = fixture.native_resolution, -fixture.native_resolution
    grid = MosaicGrid.from_spec(spec)
    table = scene_table(spec, items)
    files = GtiFiles.for_step(tmp_path / "gti", spec.time.start.isoformat())
    build_gti(spec, grid, table, files)
    store = str(tmp_path / "store.zarr")
    ensure_template(spec, grid, store, 1)
    with pytest.raises(SceneReadError, match=rf"item {items[0]['id']}: asset '{coarse}' .*contradicts its STAC"):
        for block in grid.blocks():
            write_block(spec, grid, store, files, 0, block)
    assert not [p for p in Path(store, "mosaic").rglob("*") if p.is_file() and p.name != "zarr.json"]


def test_physical_values_take_the_files_nodata_when_stac_declares_none(
    fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """Planetary Computer declares neither nodata nor scale for Sentinel-2: with the spec's scale and
    offset per band, the files' own nodata (0 in the GeoTIFF header) becomes NaN, never -0.1."""
    fixture = _loaded(stac_api, fixtures["pc_s2_l2a"])
    bands = [{**b, "scale": 0.0001, "offset": -0.1} for b in fixture.bands if b.get("resampling") != "nearest"]
    on_top = {"property": "proj:epsg", "best": "lowest"}
    spec = _spec(stac_api, fixture, anchor="edge", values="physical", bands=bands, best_on_top=on_top)
    spec, grid, table, store = _build(spec, stac_api, tmp_path)
    physical = xr.open_zarr(store, mask_and_scale=False)["mosaic"][0].values
    raw_spec = _spec(stac_api, fixture, anchor="edge", bands=bands, best_on_top=on_top)
    for group in read_groups(spec):
        reference = _reference(raw_spec, grid, table, group, tmp_path / f"ref-{group.number}")
        valid = reference != 0
        got = physical[group.positions[0]]
        assert 1000 < valid.sum() < valid.size, "the area must hold data and nodata"
        assert np.isnan(got[~valid]).all()
        expected = (reference.astype(np.float64) * 0.0001 - 0.1).astype(np.float32)
        assert (got[valid] == expected[valid]).mean() >= 0.9999


@pytest.mark.parametrize("name", sorted(EXAMPLE_SPECS))
def test_example_spec_runs_against_its_catalog_shape_with_only_the_url_changed(
    name: str, fixtures: dict[str, CatalogFixture], stac_api: str, tmp_path: Path
) -> None:
    """specs/<catalog>.yaml as shipped (its collections, asset names, modifier, anchor, resampling), only
    stac.url pointed at the local API holding items of that catalog's shape: every mosaic of the file
    builds, its class band equals GDAL's warp by the foundation's rule, and its reflectance bands agree
    with GDAL's (bilinear) warp on the valid mask and, where the scenes are in the mosaic's CRS, exactly."""
    fixture = _loaded(stac_api, fixtures[name])
    document = yaml.safe_load(example_spec_for(name).read_text())
    for mosaic in document["mosaics"]:
        mosaic["stac"]["url"] = stac_api
    specs = [s for s in parse_specs(document, source=name) if fixture.collection in s.stac.collections]
    assert specs
    for spec in specs:
        spec, grid, table, store = _build(spec, stac_api, tmp_path / spec.name)
        ours = xr.open_zarr(store, mask_and_scale=False)["mosaic"][0].values
        for group in read_groups(spec):
            reference = _reference(spec, grid, table, group, tmp_path / spec.name / f"ref-{group.number}")
            got = ours[group.positions[0]]
            valid, our_valid = reference != spec.nodata, got != spec.nodata
            assert valid.sum() > 4000 and (valid == our_valid).mean() >= 0.999
            diff = np.abs(got[valid & our_valid].astype(int) - reference[valid & our_valid].astype(int))
            if group.resampling == "nearest":
                # the class band: the same picks but where the scene on top ends (its nodata edge, warped
                # from 20 m across zones), which one scene's edge pixel is taken differs (measured 98.6-99.6 %)
                assert (diff == 0).mean() >= 0.98
                continue
            # bilinear across CRSs: the GTI's per-tile warper and gdalwarp's differ in sub-pixel positions (their
            # approximate transformers), so on this grainy texture values agree closely, not exactly
            # (measured on this fixture: median 3-4 DN, 99th percentile 78-179 DN of a 7300-8200 DN range; the
            # 20 m band upsampled across zones differs most). The exact checks are the tests above.
            spread = np.ptp(reference[valid])
            assert np.median(diff) <= 4 and np.percentile(diff, 99) <= 0.03 * spread


def test_missing_projection_is_probed_only_when_the_spec_opts_in(fixtures: dict[str, CatalogFixture]) -> None:
    """stac.probe_missing_projection: the asset's header is read once in the catalog step and its grid
    recorded; without it the item is a catalog error naming item and asset."""
    fixture = fixtures["pc_s2_l2a"]
    item = copy.deepcopy(fixture.items[0])
    asset = next(b["asset"] for b in fixture.bands if b["asset"] in ("B11", "SCL"))
    declared = {k: item["assets"][asset].pop(k) for k in ("proj:shape", "proj:transform")}
    with pytest.raises(CatalogError, match=rf"item {item['id']}: asset '{asset}': lacks projection metadata"):
        scene_table(_spec("http://127.0.0.1:1", fixture), [item])
    spec = _spec("http://127.0.0.1:1", fixture, stac={"url": "http://127.0.0.1:1", "collections": [fixture.collection],
                                                       "probe_missing_projection": True})  # fmt: skip
    probed = scene_assets(scene_table(spec, [item]))[0][asset]
    assert probed["shape"] == declared["proj:shape"]
    assert probed["transform"] == [float(v) for v in declared["proj:transform"][:6]]


def test_bucket_access_settings_reach_gdal(fixtures: dict[str, CatalogFixture]) -> None:
    """aws_no_sign_request / aws_request_payer are GDAL options inside the writers' environment, and
    only for the spec that asks."""
    from rasterio.env import getenv

    from mosaic_assets.engine.gdal_env import gdal_env

    fixture = fixtures["es_s2_l2a"]
    stac = {"url": "http://127.0.0.1:1", "collections": [fixture.collection]}
    asks = _spec("http://127.0.0.1:1", fixture, stac={**stac, "aws_no_sign_request": True, "aws_request_payer": True})
    with gdal_env(stac=asks.stac):
        assert getenv()["AWS_NO_SIGN_REQUEST"] == "YES" and getenv()["AWS_REQUEST_PAYER"] == "requester"
    with gdal_env(stac=_spec("http://127.0.0.1:1", fixture, stac=stac).stac):
        assert "AWS_NO_SIGN_REQUEST" not in getenv() and "AWS_REQUEST_PAYER" not in getenv()
