"""The STAC sensor against the real STAC API and a real Dagster instance."""

from __future__ import annotations

import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from pyproj import Transformer
from shapely.geometry import Polygon, box

from mosaic_assets.definitions import build_definitions
from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.catalog import open_client
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.stac_feed import FeedPosition, poll

from .conftest import REPO, _stac_env, evaluate_sensor, reset_collection, run_sensor_request, spec_document

pytestmark = pytest.mark.incremental
COLLECTION = "incr-scenes"


def _scenes(tmp: Path, day: date, count: int, seed: int) -> list:
    config = SceneSetConfig(
        collection=COLLECTION, dates=(day,), scenes_per_date=count, scene_size=256, spread_m=2500.0, seed=seed
    )
    return generate_scenes(tmp, config)


def _items(scenes: list, updated: datetime | None = None, prefix: str = "") -> list[dict]:
    items = [scene_item(s, COLLECTION, updated or datetime.now(UTC)) for s in scenes]
    for item in items:
        item["id"] = prefix + item["id"]
    return items


@pytest.fixture()
def incr(stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty collection, a spec over it, definitions and a fresh Dagster instance."""
    reset_collection(stac_api, COLLECTION)
    upsert_collection(stac_api, collection_document(COLLECTION, []))
    doc = spec_document(stac_api, stac={"url": stac_api, "collections": [COLLECTION], "query_limit": 2})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("MOSAIC_STAC_API_URL", stac_api)
    monkeypatch.setenv("MOSAIC_DATA_DIR", str(tmp_path / "data"))
    defs = build_definitions(spec_path)
    with dg.instance_for_test() as instance:
        yield stac_api, parse_specs(doc)[0], defs, instance, tmp_path
    reset_collection(stac_api, COLLECTION)


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    return evaluate_sensor(defs, instance, "testmosaic_stac_sensor", cursor)


def _requested_chunks(result: dg.SensorResult) -> set[str]:
    (request,) = result.run_requests
    subset = request.asset_graph_subset
    key = dg.AssetKey(["testmosaic", "mosaic_chunks"])
    return {str(k) for k in subset.partitions_subsets_by_asset_key[key].get_partition_keys()}


def _blocks_touched_independently(spec, scenes: list) -> set[str]:
    """Blocks whose area a scene's raster bounds intersect, by plain pyproj/shapely on the grid affine."""
    grid = MosaicGrid.from_spec(spec)
    touched = set()
    for scene in scenes:
        h, w = scene.shape
        t = scene.transform
        edge = np.linspace(0, 1, 33)
        cols = np.concatenate([edge * w, np.full(33, w), (1 - edge) * w, np.zeros(33)])
        rows = np.concatenate([np.zeros(33), edge * h, np.full(33, h), (1 - edge) * h])
        xs, ys = t.c + cols * t.a, t.f + rows * t.e
        tx, ty = Transformer.from_crs(f"EPSG:{scene.epsg}", spec.crs, always_xy=True).transform(xs, ys)
        footprint = Polygon(zip(tx, ty))
        a = grid.geobox.affine
        for block in grid.blocks():
            x0, x1 = a.c + a.a * block.cols.start, a.c + a.a * block.cols.stop
            y0, y1 = a.f + a.e * block.rows.stop, a.f + a.e * block.rows.start
            if footprint.intersects(box(x0, y0, x1, y1)):
                touched.add(f"2024-06-05|{block.key}")
    return touched


def test_new_items_request_exactly_the_touched_partitions(incr) -> None:
    api, spec, defs, instance, tmp = incr
    assert isinstance(_evaluate(defs, instance, None), dg.SkipReason)  # empty feed: nothing to do

    scenes = _scenes(tmp / "s", date(2024, 6, 5), 3, seed=11)
    upsert_items(api, COLLECTION, _items(scenes))
    result = _evaluate(defs, instance, None)
    assert isinstance(result, dg.SensorResult)
    requested = _requested_chunks(result)
    assert len(requested) >= 2 and requested == _blocks_touched_independently(spec, scenes)
    (request,) = result.run_requests
    subset = request.asset_graph_subset
    gti_subset = subset.partitions_subsets_by_asset_key[dg.AssetKey(["testmosaic", "gti_index"])]
    assert set(gti_subset.get_partition_keys()) == {"2024-06-05"}
    assert dg.AssetKey(["testmosaic", "zarr_template"]) in subset.non_partitioned_asset_keys
    assert instance.get_dynamic_partitions("testmosaic_time") == ["2024-06-05"]
    position = FeedPosition.from_json(result.cursor)
    assert position.item_id == max(s.item_id for s in scenes)

    again = _evaluate(defs, instance, result.cursor)
    assert isinstance(again, dg.SkipReason), "a second evaluation must request nothing"


def test_items_sharing_one_updated_across_pages_are_all_seen(incr) -> None:
    api, spec, _, _, tmp = incr
    scenes = _scenes(tmp / "s", date(2024, 6, 6), 5, seed=12)
    same = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    upsert_items(api, COLLECTION, _items(scenes, updated=same))
    client = open_client(api)
    seen, position = [], FeedPosition()
    for _ in range(10):  # page size 2 and at most 2 items per poll: the 5 items span 3 polls
        page = poll(spec, client, position, max_items=2)
        seen += [i["id"] for i in page.items]
        position = page.position
        if not page.items:
            break
    assert sorted(seen) == sorted(s.item_id for s in scenes) and len(seen) == len(set(seen))

    # re-publishing one item with a newer `updated` brings it (only it) round again
    republished = _items(scenes[2:3], updated=datetime(2025, 1, 2, tzinfo=UTC))
    upsert_items(api, COLLECTION, republished)
    page = poll(spec, client, position)
    assert [i["id"] for i in page.items] == [scenes[2].item_id]


def test_stac_api_down_skips_keeps_cursor_and_catches_up(incr) -> None:
    api, spec, defs, instance, tmp = incr
    scenes = _scenes(tmp / "s", date(2024, 6, 8), 2, seed=13)
    upsert_items(api, COLLECTION, _items(scenes[:1]))
    first = _evaluate(defs, instance, None)
    assert isinstance(first, dg.SensorResult)
    upsert_items(api, COLLECTION, _items(scenes[1:]))
    script = str(REPO / "scripts" / "stac_server.sh")
    subprocess.run([script, "stop"], env=_stac_env(), check=True, capture_output=True, timeout=120)
    try:
        down = _evaluate(defs, instance, first.cursor)
        assert isinstance(down, dg.SkipReason) and "not readable" in down.skip_message
    finally:
        subprocess.run([script, "start"], env=_stac_env(), check=True, capture_output=True, timeout=300)
    caught_up = _evaluate(defs, instance, first.cursor)  # the cursor was not moved by the failed tick
    assert isinstance(caught_up, dg.SensorResult)
    assert FeedPosition.from_json(caught_up.cursor).item_id == scenes[1].item_id
    assert all(k.startswith("2024-06-08|") for k in _requested_chunks(caught_up))


def _materialize_requests(result: dg.SensorResult, assets: list, resources: dict, instance) -> int:
    """Run what the sensor asked for (``conftest.run_sensor_request``); returns how many chunk
    partitions ran."""
    keys = [dg.AssetKey(["testmosaic", n]) for n in ("scene_catalog", "gti_index", "zarr_template", "mosaic_chunks")]
    ran = run_sensor_request(result, keys, assets, resources, instance)
    return len(ran.get(keys[-1], []))


def test_scenes_arriving_one_by_one_through_the_sensor_give_the_bytes_of_all_at_once(
    stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cloud-masked median over one day's three cloudy scenes. Registered one by one, each tick of the
    sensor redoing only the partitions its item touches, the store ends byte-identical to a build that
    saw all three at once (the composite re-reduces a block's scenes in item-id order)."""
    from mosaic_assets.defs.checks import build_mosaic_checks
    from mosaic_assets.defs.mosaic import build_mosaic_assets
    from mosaic_assets.defs.resources import DataRootResource, StacApiResource

    from .conftest import chunk_hashes

    config = SceneSetConfig(
        collection=COLLECTION,
        dates=(date(2024, 6, 5),),
        scenes_per_date=3,
        scene_size=384,
        spread_m=2000.0,
        seed=21,
        clouds=True,
    )
    scenes = generate_scenes(tmp_path / "scenes", config)
    items = _items(scenes)
    doc = spec_document(
        stac_api,
        stac={"url": stac_api, "collections": [COLLECTION]},
        mask={"asset": "scl", "exclude": [0, 3, 8, 9], "dilate_pixels": 2},
        composite={"method": "median", "count_band": True},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("MOSAIC_STAC_API_URL", stac_api)
    mosaic, assets = build_mosaic_assets(parse_specs(doc)[0])
    assets = [*assets, *build_mosaic_checks(mosaic)]
    stores = {}
    for arrival in ("one_by_one", "all_at_once"):
        reset_collection(stac_api, COLLECTION)
        upsert_collection(stac_api, collection_document(COLLECTION, []))
        data = tmp_path / arrival
        monkeypatch.setenv("MOSAIC_DATA_DIR", str(data))
        defs = build_definitions(spec_path)
        resources = {"stac_api": StacApiResource(), "data_root": DataRootResource(path=str(data))}
        batches = [[item] for item in items] if arrival == "one_by_one" else [items]
        cursor, chunk_runs = None, []
        with dg.instance_for_test() as instance:
            for batch in batches:
                upsert_items(stac_api, COLLECTION, batch)
                result = _evaluate(defs, instance, cursor)
                assert isinstance(result, dg.SensorResult)
                chunk_runs.append(_materialize_requests(result, assets, resources, instance))
                cursor = result.cursor
        stores[arrival] = chunk_hashes(str(data / "stores" / "testmosaic.zarr"))
        if arrival == "one_by_one":
            total = len(_blocks_touched_independently(parse_specs(doc)[0], scenes))
            assert sum(chunk_runs) > total > max(chunk_runs), chunk_runs  # each tick redid only its blocks
    reset_collection(stac_api, COLLECTION)
    assert stores["one_by_one"] and stores["one_by_one"] == stores["all_at_once"]
