"""The catalog fixtures are what they claim: every asset file has exactly the grid, CRS and nodata its item
declares (asset first, item fallback, as the projection extension reads), each fixture carries its catalog's
distinctive shape, and the example specs for the public catalogs load and name assets those catalogs have."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import CRS
from rasterio.warp import transform_bounds
from shapely.geometry import box, shape

from mosaic_assets.engine.spec import load_specs

from .catalog_fixtures import (
    EXAMPLE_SPECS,
    FIXTURE_NAMES,
    QA,
    CatalogFixture,
    example_spec_for,
    make_fixture,
)

CLASS_ASSETS = {"SCL", "scl", "qa_pixel", "oa_fmask"}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CatalogFixture]:
    folder = tmp_path_factory.mktemp("catalog-fixtures")
    return {name: make_fixture(name, folder) for name in FIXTURE_NAMES}


def _declared(item: dict, asset: dict, key: str):
    return asset[key] if key in asset else item["properties"][key]


def _crs(item: dict, asset: dict) -> CRS:
    for where in (asset, item["properties"]):
        if "proj:code" in where:
            return CRS.from_user_input(where["proj:code"])
        if "proj:epsg" in where:
            return CRS.from_epsg(where["proj:epsg"])
    raise AssertionError(f"item {item['id']}: no projection code")


def _area_lonlat(fixture: CatalogFixture):
    return box(*transform_bounds(fixture.native_crs, "EPSG:4326", *fixture.area_native))


def _read_area(fixture: CatalogFixture, path: str) -> tuple[np.ndarray, float]:
    """The asset's pixels over the fixture's test area, and its nodata."""
    with rasterio.open(path) as src:
        bounds = transform_bounds(fixture.native_crs, src.crs, *fixture.area_native)
        window = rasterio.windows.from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        return src.read(1, window=window), src.nodata


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_asset_file_has_the_declared_grid_and_nodata(name: str, fixtures: dict[str, CatalogFixture]) -> None:
    fixture = fixtures[name]
    assert set(fixture.files) == {item["id"] for item in fixture.items}
    for item in fixture.items:
        for key, path in fixture.files[item["id"]].items():
            asset = item["assets"][key]
            assert asset["href"] == path and Path(path).is_absolute()
            with rasterio.open(path) as src:
                where = f"{item['id']} {key}"
                assert src.crs == _crs(item, asset), where
                assert list(src.shape) == list(_declared(item, asset, "proj:shape")), where
                assert list(src.transform)[:6] == pytest.approx(_declared(item, asset, "proj:transform")[:6]), where
                declared = asset.get("raster:bands")
                if declared:
                    assert src.nodata == declared[0]["nodata"], where
                    assert src.dtypes[0] == declared[0]["data_type"], where
                assert src.nodata is not None, where
                assert src.block_shapes[0] == (512, 512) and src.compression.name == "deflate", where
                assert src.overviews(1), f"{where}: no internal overviews"


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_scenes_overlap_on_the_first_day_and_the_best_one_is_cut_by_an_edge(
    name: str, fixtures: dict[str, CatalogFixture]
) -> None:
    """items[0]'s day has two scenes over the area; the least cloudy scene's nodata edge runs through it."""
    fixture = fixtures[name]
    area = _area_lonlat(fixture)
    day = fixture.items[0]["properties"]["datetime"][:10]
    same_day = [i for i in fixture.items if i["properties"]["datetime"][:10] == day]
    assert len(same_day) >= 2 and all(shape(i["geometry"]).intersects(area) for i in same_day)
    best = min(fixture.items, key=lambda i: i["properties"]["eo:cloud_cover"])
    assert shape(best["geometry"]).intersects(area) and not shape(best["geometry"]).contains(area)
    key = fixture.bands[0]["asset"]
    pixels, nodata = _read_area(fixture, fixture.files[best["id"]][key])
    assert 0.5 < (pixels != nodata).mean() < 0.9, "the edge must leave the area partly valid"


def test_each_fixture_carries_its_catalogs_distinctive_shape(fixtures: dict[str, CatalogFixture]) -> None:
    pc, es = fixtures["pc_s2_l2a"].items[0], fixtures["es_s2_l2a"].items[0]
    assert "proj:transform" not in pc["properties"] and "proj:epsg" in pc["properties"]
    assert not any("raster:bands" in a for a in pc["assets"].values())
    assert {pc["assets"][k]["proj:transform"][0] for k in ("B01", "B04", "B11")} == {60.0, 10.0, 20.0}
    assert "eo:bands" not in pc["assets"]["SCL"]
    assert all(isinstance(v, int) for v in es["assets"]["red"]["proj:transform"])
    assert es["assets"]["red"]["raster:bands"][0]["scale"] == 0.0001
    assert es["assets"]["red"]["raster:bands"][0]["offset"] == -0.1
    assert "scale" not in es["assets"]["scl"]["raster:bands"][0]
    assert es["assets"]["red-jp2"]["href"].startswith("s3://sentinel-s2-l2a/")
    for name in ("pc_s2_l2a", "es_s2_l2a"):
        assert {i["properties"]["proj:epsg"] for i in fixtures[name].items} == {32632, 32633}

    landsat = fixtures["landsat_c2_l2"].items[0]
    assert not any(k.startswith("proj:") for a in landsat["assets"].values() for k in a)
    assert (
        landsat["properties"]["proj:transform"][2] % 30 == 15 and landsat["properties"]["proj:transform"][5] % 30 == 15
    )
    assert landsat["assets"]["qa_pixel"]["raster:bands"][0]["nodata"] == 1
    assert landsat["assets"]["red"]["raster:bands"][0]["scale"] == 2.75e-05
    with rasterio.open(fixtures["landsat_c2_l2"].files[landsat["id"]]["red"]) as src:
        assert src.tags()["AREA_OR_POINT"] == "Point"

    ard = fixtures["landsat_ard"].items[0]
    ms, pan = ard["assets"]["nbart_red"], ard["assets"]["nbart_panchromatic"]
    assert len(ms["proj:transform"]) == 9 and ms["proj:transform"][5] < 0, "northern UTM code, negative northing"
    assert pan["proj:transform"][2] == ms["proj:transform"][2] + 7.5
    assert pan["proj:shape"] == [2 * n - 1 for n in ms["proj:shape"]]
    assert {i["properties"]["proj:epsg"] for i in fixtures["landsat_ard"].items} == {32655, 32656}
    with rasterio.open(fixtures["landsat_ard"].files[ard["id"]]["nbart_red"]) as src:
        assert (src.dtypes[0], src.nodata) == ("int16", -999)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_items_are_valid_json_stac_with_realistic_class_codes(name: str, fixtures: dict[str, CatalogFixture]) -> None:
    fixture = fixtures[name]
    for item in fixture.items:
        pystac.Item.from_dict(json.loads(json.dumps(item)))
        datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    pystac.Collection.from_dict(json.loads(json.dumps(fixture.collection_doc)))
    classes = next(b["asset"] for b in fixture.bands if b["asset"] in CLASS_ASSETS)
    codes = set()
    for item in fixture.items:
        pixels, nodata = _read_area(fixture, fixture.files[item["id"]][classes])
        codes |= set(np.unique(pixels[pixels != nodata]).tolist())
    expected = {
        "SCL": {3, 4, 8, 9},
        "scl": {3, 4, 8, 9},
        "qa_pixel": {QA["clear"], QA["cloud"], QA["shadow"]},
        "oa_fmask": {1, 2, 3},
    }[classes]
    allowed = {
        "SCL": set(range(1, 12)),
        "scl": set(range(1, 12)),
        "qa_pixel": set(QA.values()),
        "oa_fmask": set(range(1, 6)),
    }
    assert expected <= codes <= allowed[classes], sorted(codes)


def test_example_specs_load_and_name_the_fixtures_assets(fixtures: dict[str, CatalogFixture]) -> None:
    for name in EXAMPLE_SPECS:
        specs = load_specs(example_spec_for(name))
        assets = set(fixtures[name].items[0]["assets"])
        for spec in specs:
            assert {b.asset for b in spec.bands} <= assets, f"{spec.name}: assets the {name} items do not have"
    with pytest.raises(LookupError, match="landsat_ard"):
        example_spec_for("landsat_ard")


def test_generation_is_deterministic_and_reused(fixtures: dict[str, CatalogFixture], tmp_path: Path) -> None:
    first = fixtures["landsat_c2_l2"]
    again = make_fixture("landsat_c2_l2", tmp_path)
    strip = lambda items: json.dumps(items).replace(str(tmp_path), "<root>")  # noqa: E731
    root = str(Path(next(iter(first.files[first.items[0]["id"]].values()))).parents[2])
    assert strip(again.items) == json.dumps(first.items).replace(root, "<root>")
    for item_id, assets in first.files.items():
        for key, path in assets.items():
            with rasterio.open(path) as a, rasterio.open(again.files[item_id][key]) as b:
                assert np.array_equal(a.read(1, out_shape=(512, 512)), b.read(1, out_shape=(512, 512)))
    assert make_fixture("landsat_c2_l2", tmp_path) == again, "a second call reuses the generated files"
