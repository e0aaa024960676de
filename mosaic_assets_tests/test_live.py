"""End to end with `dagster dev` (webserver + daemon) on loopback, driven and observed through the
GraphQL API and, for people, through the UI in headless Chromium.

POST items for a new date to the STAC API -> the STAC sensor adds the time step and launches a
backfill -> the new time step lands in the Zarr store, matching GDAL's warp, while every byte of the
existing time steps stays as it was.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import xarray as xr

from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.planner import plan_items
from mosaic_assets.engine.spec import parse_specs

from .conftest import REPO, dagster_env, reset_collection, spec_document
from .dagster_dev import LOCATION, DagsterDev, dagster_dev
from .pixels import assert_matches_gdal_warp

pytestmark = [pytest.mark.incremental, pytest.mark.slow]
COLLECTION = "live-scenes"
PORT = int(os.environ.get("TEST_DAGSTER_PORT", "3093"))
ARTIFACTS = REPO / "mosaic_assets_tests" / "artifacts"


class Live(DagsterDev):
    """A running `dagster dev` and what the tests need to talk to it."""

    def __init__(self, server: DagsterDev, spec, env: dict[str, str], api: str, tmp: Path) -> None:
        super().__init__(server.url, server.log)
        self.spec, self.env, self.api, self.tmp = spec, env, api, tmp
        self.grid = MosaicGrid.from_spec(spec)
        self.layout = MosaicLayout(spec, Path(env["MOSAIC_DATA_DIR"]))

    def start_sensor(self, name: str) -> None:
        data = self.gql(
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
            "... on Sensor { sensorState { status } } ... on PythonError { message } } }",
            {"s": {**LOCATION, "sensorName": name}},
        )
        assert data["startSensor"]["sensorState"]["status"] == "RUNNING", data

    def materialized(self, asset: str) -> set[str]:
        data = self.gql(
            "query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset { "
            "assetMaterializations(limit: 10000) { partition } } } }",
            {"k": {"path": [self.spec.name, asset]}},
        )
        return {m["partition"] for m in (data["assetOrError"] or {}).get("assetMaterializations", [])}

    def busy(self) -> bool:
        data = self.gql(
            "{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) "
            "{ ... on Runs { results { runId } } }"
            " partitionBackfillsOrError(status: REQUESTED) { ... on PartitionBackfills { results { id } } } }"
        )
        return bool(data["runsOrError"]["results"] or data["partitionBackfillsOrError"]["results"])

    def seconds_until(self, what: str, done, timeout: float = 300.0) -> float:
        """Like ``wait_for``, returning the seconds it took and naming failed runs on a timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if done():
                return time.monotonic() - started
            time.sleep(2)
        failed = self.gql("{ runsOrError(filter: {statuses: [FAILURE]}) { ... on Runs { results { runId } } } }")
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; failed runs: {failed}")

    def post_scenes(self, day: date, count: int, seed: int) -> list[dict]:
        config = SceneSetConfig(
            collection=COLLECTION, dates=(day,), scenes_per_date=count, scene_size=384, spread_m=2000.0, seed=seed
        )
        scenes = generate_scenes(self.tmp / f"scenes-{day}", config)
        items = [scene_item(s, COLLECTION, datetime.now(UTC)) for s in scenes]
        upsert_items(self.api, COLLECTION, items)
        return items

    def expected_chunks(self, items: list[dict]) -> set[str]:
        plan = plan_items(self.spec, self.grid, items)
        return {f"{step}|{b.key}" for step, blocks in plan.blocks.items() for b in blocks}


@pytest.fixture(scope="module")
def live(stac_api: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("live")
    reset_collection(stac_api, COLLECTION)
    upsert_collection(stac_api, collection_document(COLLECTION, []))
    doc = spec_document(
        stac_api,
        stac={"url": stac_api, "collections": [COLLECTION]},
        operations={"sensor_interval_seconds": 5, "partitions_per_run": 4},
    )
    env = {**dagster_env(tmp, doc, stac_api), "MOSAIC_SENSORS": "stopped"}
    try:
        with dagster_dev(env, tmp, PORT) as server:
            yield Live(server, parse_specs(doc)[0], env, stac_api, tmp)
    finally:
        reset_collection(stac_api, COLLECTION)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_new_scenes_flow_into_the_store_by_themselves(live: Live) -> None:
    live.start_sensor(f"{live.spec.name}_stac_sensor")
    live.start_sensor("mosaic_automation")

    first = live.post_scenes(date(2024, 6, 1), 3, seed=21)
    first_chunks = live.expected_chunks(first)
    live.seconds_until(
        "the first time step", lambda: first_chunks <= live.materialized("mosaic_chunks") and not live.busy()
    )
    store = Path(live.layout.store)
    before = _digest(store / "mosaic" / "c" / "0")
    assert before, "the first time step wrote chunks"

    posted = time.monotonic()
    second = live.post_scenes(date(2024, 6, 3), 3, seed=22)
    second_chunks = live.expected_chunks(second)
    latency = live.seconds_until(
        "the new time step", lambda: second_chunks <= live.materialized("mosaic_chunks") and not live.busy()
    )
    print(f"\nPOST -> new time step in the store: {latency:.1f} s")
    preview_wait = live.seconds_until("the preview by automation", lambda: "2024-06-03" in live.materialized("preview"))
    print(f"preview by automation {preview_wait:.1f} s later ({time.monotonic() - posted:.1f} s after the POST)")

    ds = xr.open_zarr(str(store), consolidated=True, mask_and_scale=False)
    assert [str(t)[:10] for t in ds["time"].values] == ["2024-06-01", "2024-06-02", "2024-06-03"]
    assert _digest(store / "mosaic" / "c" / "0") == before, "existing time step's bytes changed"
    assert not (store / "mosaic" / "c" / "1").exists(), "an empty day must stay unwritten"
    assert live.materialized("mosaic_chunks") == first_chunks | second_chunks, "only touched partitions ran"
    scenes = load_scene_table(live.layout.scene_table("2024-06-03"))
    assert set(scenes["item_id"]) == {i["id"] for i in second}
    assert_matches_gdal_warp(live.spec, live.grid, str(store), 2, scenes, live.tmp)


def test_ui_shows_the_mosaic_assets_and_partitions(live: Live) -> None:
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        subprocess.run([str(REPO / "scripts" / "ensure_chromium.sh")], check=True, timeout=900)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    live.gql("mutation { setNuxSeen }")  # the first-visit "join the community" dialog would cover the page
    profile = live.tmp / "chromium-profile"
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",
        "--virtual-time-budget=20000",
    ]
    pages = {
        "asset_graph": f"{live.url}/asset-groups/{live.spec.name}",
        "chunk_partitions": f"{live.url}/assets/{live.spec.name}/mosaic_chunks?view=partitions",
    }
    for name, url in pages.items():
        shot = ARTIFACTS / f"ui_{name}.png"
        subprocess.run([*common, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=120)
        assert shot.stat().st_size > 10_000, f"screenshot of {url} is empty"
        dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120)
        text = dom.stdout
        if name == "asset_graph":
            for asset in ("scene_catalog", "gti_index", "zarr_template", "mosaic_chunks", "preview"):
                assert asset in text, f"{asset} not in the asset graph page"
        else:
            assert "mosaic_chunks" in text and "2024-06-03" in text, "the partitions page lists no time step"
