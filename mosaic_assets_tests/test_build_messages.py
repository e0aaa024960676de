"""What ``python -m mosaic_assets.run build`` says when a mosaic has no items yet or a build fails,
and that a build says nothing else: against the real STAC API and real Dagster, as the demo runs it.

One spec declares two mosaics: ``msgmosaic`` over a collection that is empty at first and gets items
later, ``msgempty`` over one that stays empty. The first build finds nothing for either; the second,
once items appear, builds ``msgmosaic`` and still names ``msgempty`` (exit 3 both times)."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import xarray as xr

from mosaic_assets.definitions import build_definitions
from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.catalog import area_bbox_4326
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.store import ensure_template

from .conftest import REPO, dagster_env, reset_collection, spec_document

COLLECTION, EMPTY_COLLECTION, BAD_HREF_COLLECTION = "msg-scenes", "msg-empty", "msg-bad-href"
SCENES = SceneSetConfig(
    collection=COLLECTION, dates=(date(2024, 6, 1),), scenes_per_date=2, scene_size=256, spread_m=1500.0, seed=11
)
EXIT_EMPTY = 3


def _build(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mosaic_assets.run", "build", "--workers", "2", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def _mosaic(api: str, name: str, collection: str, **overrides) -> dict:
    return spec_document(api, name=name, stac={"url": api, "collections": [collection]}, **overrides)["mosaics"][0]


def _bbox_text(mosaic: dict) -> str:
    """The bbox as the message prints it."""
    return str([round(v, 6) for v in area_bbox_4326(parse_specs({"mosaics": [mosaic]})[0])])


@dataclass(frozen=True)
class Story:
    spec: dict
    data_dir: Path
    items: list[dict]
    empty: subprocess.CompletedProcess  # the build while neither collection has items
    wrote_after_empty: list[Path]  # anything under the data dir after the empty build
    runs_after_empty: int
    steps_after_empty: list[str]
    sensor: dg.SensorResult  # msgmosaic's sensor once its items appeared
    filled: subprocess.CompletedProcess  # the build after that


@pytest.fixture(scope="module")
def story(stac_api: str, tmp_path_factory: pytest.TempPathFactory) -> Story:
    tmp = tmp_path_factory.mktemp("messages")
    items = [scene_item(s, COLLECTION, datetime.now(UTC)) for s in generate_scenes(tmp / "scenes", SCENES)]
    for collection in (COLLECTION, EMPTY_COLLECTION):
        reset_collection(stac_api, collection)
        upsert_collection(stac_api, collection_document(collection, []))
    spec = {"mosaics": [_mosaic(stac_api, "msgmosaic", COLLECTION), _mosaic(stac_api, "msgempty", EMPTY_COLLECTION)]}
    env = dagster_env(tmp, spec, stac_api)
    empty = _build(env)
    wrote = sorted((tmp / "data").rglob("*"))
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs, steps = len(instance.get_runs()), instance.get_dynamic_partitions("msgmosaic_time")

    upsert_collection(stac_api, collection_document(COLLECTION, items))
    upsert_items(stac_api, COLLECTION, items)
    with pytest.MonkeyPatch.context() as patch, dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for name in ("MOSAIC_DATA_DIR", "MOSAIC_STAC_API_URL"):
            patch.setenv(name, env[name])
        defs = build_definitions(Path(env["MOSAIC_SPECS"]))
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
        sensor = next(s for s in defs.sensors if s.name == "msgmosaic_stac_sensor")(context)
    filled = _build(env)
    return Story(spec, tmp / "data", items, empty, wrote, runs, steps, sensor, filled)


def test_empty_collections_exit_3_naming_collection_and_query(story: Story, stac_api: str) -> None:
    proc = story.empty
    assert proc.returncode == EXIT_EMPTY, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for mosaic in story.spec["mosaics"]:
        name, (collection,) = mosaic["name"], mosaic["stac"]["collections"]
        said = [line for line in proc.stderr.splitlines() if line.startswith(f"mosaic {name}: ")]
        assert len(said) == 2, proc.stderr
        assert f"no items yet: the STAC API {stac_api} has none in collections ['{collection}']" in said[0]
        assert f"within bbox {_bbox_text(mosaic)} (lon/lat) dated on or after 2024-06-01" in said[0]
        assert f"its sensor {name}_stac_sensor fills the mosaic when items appear" in said[1]
        assert "MOSAIC_SENSORS=running" in said[1]
    assert len(proc.stderr.splitlines()) == 4, proc.stderr  # those lines and nothing else
    # nothing written: no store, no scene table, no run, no time partition
    assert story.wrote_after_empty == []
    assert story.runs_after_empty == 0 and story.steps_after_empty == []


def test_the_sensor_requests_the_mosaic_once_items_appear(story: Story) -> None:
    result = story.sensor
    assert isinstance(result, dg.SensorResult), result
    (added,) = result.dynamic_partitions_requests
    assert list(added.partition_keys) == ["2024-06-01"]
    (request,) = result.run_requests
    keys = {key.to_user_string() for key in request.asset_graph_subset.asset_keys}
    assert {"msgmosaic/scene_catalog", "msgmosaic/gti_index", "msgmosaic/zarr_template"} <= keys
    assert "msgmosaic/mosaic_chunks" in keys


def test_the_next_build_fills_it_and_still_names_the_empty_one(story: Story) -> None:
    proc = story.filled
    assert proc.returncode == EXIT_EMPTY, proc.stderr[-3000:]
    assert "mosaic msgmosaic: " in proc.stdout and "msgempty" not in proc.stdout
    ds = xr.open_zarr(story.data_dir / "stores" / "msgmosaic.zarr", consolidated=True, mask_and_scale=False)
    assert [str(t)[:10] for t in ds["time"].values] == ["2024-06-01"]
    assert np.count_nonzero(ds["mosaic"][0].values) > 0
    assert not (story.data_dir / "stores" / "msgempty.zarr").exists()


def test_a_build_prints_no_warnings(story: Story) -> None:
    """The filled build's stderr is the empty mosaic's two lines, nothing else: no library warning
    (zarr's consolidated-metadata notice included), no Dagster log line."""
    lines = story.filled.stderr.splitlines()
    assert [line for line in lines if "warning" in line.lower()] == [], story.filled.stderr
    assert len(lines) == 2 and all(line.startswith("mosaic msgempty: ") for line in lines), story.filled.stderr


def test_a_bad_item_is_one_line_naming_item_and_asset(
    story: Story, stac_api: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A band whose asset the items lack fails the catalog step: one line, exit 1, no traceback; the
    traceback with --verbose. (``story``: its items are in the collection.)"""
    tmp = tmp_path_factory.mktemp("bad")
    bands = [{"name": "x", "asset": "nope", "index": 1}]
    env = dagster_env(tmp, {"mosaics": [_mosaic(stac_api, "msgbad", COLLECTION, bands=bands)]}, stac_api)
    ids = {item["id"] for item in story.items}

    quiet = _build(env)
    assert quiet.returncode == 1, quiet.stderr[-3000:]
    (line,) = quiet.stderr.splitlines()
    assert line.startswith("error: msgbad/scene_catalog+gti_index [2024-06-01]: CatalogError: item "), line
    assert any(f"item {i}:" in line for i in ids) and "asset 'nope'" in line, line
    assert "Traceback" not in quiet.stderr
    assert not (tmp / "data" / "stores" / "msgbad.zarr").exists()

    verbose = _build(env, "--verbose")
    assert verbose.returncode == 1, verbose.stderr[-3000:]
    assert "Traceback (most recent call last)" in verbose.stderr and "in scene_catalog" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == line


def test_a_missing_scene_file_is_one_line_naming_item_and_href(
    story: Story, stac_api: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A scene file that is gone fails its chunk partitions in a pool worker: the same one line."""
    tmp = tmp_path_factory.mktemp("bad-href")
    items = [{**copy.deepcopy(item), "collection": BAD_HREF_COLLECTION} for item in story.items]
    gone = str(tmp / "gone.tif")
    items[-1]["assets"]["data"]["href"] = gone
    reset_collection(stac_api, BAD_HREF_COLLECTION)
    upsert_collection(stac_api, collection_document(BAD_HREF_COLLECTION, items))
    upsert_items(stac_api, BAD_HREF_COLLECTION, items)
    env = dagster_env(tmp, {"mosaics": [_mosaic(stac_api, "msghref", BAD_HREF_COLLECTION)]}, stac_api)

    proc = _build(env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: msghref/mosaic_chunks [2024-06-01|"), line
    assert f"SceneReadError: item {items[-1]['id']}: asset 'data' href {gone}: " in line, line
    reset_collection(stac_api, BAD_HREF_COLLECTION)


def test_a_template_with_no_time_step_yet_grows_later(tmp_path: Path) -> None:
    """The template of a mosaic without items (e.g. zarr_template materialized from the UI before any
    item exists): a store with an empty time axis, grown when time steps come, without warnings."""
    spec = parse_specs(spec_document("http://127.0.0.1:1"))[0]
    grid = MosaicGrid.from_spec(spec)
    store = str(tmp_path / "m.zarr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ensure_template(spec, grid, store, 0).created
        empty = xr.open_zarr(store, consolidated=True, mask_and_scale=False)
        assert empty["mosaic"].shape == (0, 4, *grid.shape) and empty["time"].dtype == "datetime64[ns]"
        assert ensure_template(spec, grid, store, 2).grown_by == 2
    grown = xr.open_zarr(store, consolidated=True, mask_and_scale=False)
    assert [str(t)[:10] for t in grown["time"].values] == ["2024-06-01", "2024-06-02"]
    assert grown["time"].encoding["units"] == "days since 1970-01-01"
    # neither zarr's consolidated-metadata notice nor xarray's SerializationWarning for a float time axis
    noisy = [w for w in caught if issubclass(w.category, UserWarning | RuntimeWarning)]
    assert [f"{w.category.__name__}: {w.message}" for w in noisy] == []
