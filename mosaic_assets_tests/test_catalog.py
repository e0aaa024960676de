"""STAC search -> scene table, against the real STAC API; bad items fail naming the item."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from mosaic_assets.engine.catalog import (
    CatalogError,
    discover_time_steps,
    gdal_path,
    load_scene_table,
    open_client,
    save_scene_table,
    scene_table,
    search_time_step,
)
from mosaic_assets.engine.spec import parse_specs

from .conftest import LoadedScenes, spec_document


def _spec(api: str, **overrides):
    return parse_specs(spec_document(api, **overrides))[0]


def test_time_steps_and_scene_table_from_the_api(small_scenes: LoadedScenes, tmp_path: Path) -> None:
    spec = _spec(small_scenes.api)
    client = open_client(small_scenes.api)
    assert discover_time_steps(spec, client) == {"2024-06-01", "2024-06-03"}
    table = search_time_step(spec, client, "2024-06-01")
    expected = {s.item_id for s in small_scenes.scenes if s.acquired.date().isoformat() == "2024-06-01"}
    assert set(table["item_id"]) == expected
    assert set(table["crs"]) == {"EPSG:32632", "EPSG:32633"}
    assert all(len(t) == 6 for t in table["transform"]) and all(list(s) == [512, 512] for s in table["shape"])
    path = tmp_path / "t.parquet"
    save_scene_table(table, path)
    again = load_scene_table(path)
    assert list(again["item_id"]) == list(table["item_id"]) and again.crs.to_epsg() == 4326


def test_unknown_collection_is_named(small_scenes: LoadedScenes) -> None:
    spec = _spec(small_scenes.api, stac={"url": small_scenes.api, "collections": ["test-scenes", "no-such-thing"]})
    with pytest.raises(CatalogError, match="no-such-thing"):
        discover_time_steps(spec, open_client(small_scenes.api))


def test_unknown_asset_or_band_is_named(small_scenes: LoadedScenes) -> None:
    item = small_scenes.items[0]
    spec = _spec(small_scenes.api, bands=[{"name": "swir", "asset": "B11"}])
    with pytest.raises(CatalogError, match=f"item {item['id']}: has no asset 'B11'"):
        scene_table(spec, [item])
    spec = _spec(small_scenes.api, bands=[{"name": "swir", "asset": "data", "index": 7}])
    with pytest.raises(CatalogError, match=f"item {item['id']}: asset 'data' has 4 bands"):
        scene_table(spec, [item])


def test_item_without_projection_metadata_is_named(small_scenes: LoadedScenes) -> None:
    item = copy.deepcopy(small_scenes.items[0])
    del item["properties"]["proj:transform"]
    with pytest.raises(
        CatalogError, match=rf"item {item['id']}: asset 'data': lacks projection metadata \['proj:transform'\]"
    ):
        scene_table(_spec(small_scenes.api), [item])


@pytest.mark.parametrize(
    "href, expected",
    [
        ("/data/a.tif", "/data/a.tif"),
        ("file:///data/a.tif", "/data/a.tif"),
        ("https://host/a.tif", "/vsicurl/https://host/a.tif"),
        ("s3://bucket/key/a.tif", "/vsis3/bucket/key/a.tif"),
    ],
)
def test_hrefs_map_to_gdal_paths(href: str, expected: str) -> None:
    assert gdal_path(href, "item-1") == expected


@pytest.mark.parametrize("href", ["ftp://host/a.tif", "relative/a.tif", "javascript:alert(1)"])
def test_refused_hrefs_name_item_and_href(href: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(f"item item-1: href {href!r}")):
        gdal_path(href, "item-1")
