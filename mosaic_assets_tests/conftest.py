"""Shared fixtures: a real STAC API (own port and database), small real scenes, a real Dagster build."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import geopandas as gpd
import pytest
import requests
import yaml

from mosaic_assets.demo.scenes import (
    BAND_NAMES,
    Scene,
    SceneSetConfig,
    collection_document,
    generate_scenes,
    scene_item,
)
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.catalog import scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import GtiFiles, build_gti
from mosaic_assets.engine.spec import MosaicSpec, parse_specs
from mosaic_assets.engine.store import ensure_template

REPO = Path(__file__).resolve().parents[1]
TEST_STAC_PORT = os.environ.get("TEST_STAC_PORT", "8093")
TEST_PG_PORT = os.environ.get("TEST_STAC_PG_PORT", "5449")
COLLECTION = "test-scenes"
SMALL_SCENES = SceneSetConfig(
    collection=COLLECTION,
    dates=(date(2024, 6, 1), date(2024, 6, 3)),
    scenes_per_date=4,
    scene_size=512,
    spread_m=2500.0,
    seed=7,
)


def _stac_env() -> dict[str, str]:
    return {
        **os.environ,
        "STAC_PORT": TEST_STAC_PORT,
        "STAC_PG_PORT": TEST_PG_PORT,
        "STAC_DATA_DIR": str(REPO / ".local" / f"test-stac-{TEST_STAC_PORT}"),  # sessions on other ports apart
    }


@pytest.fixture(scope="session")
def stac_api() -> str:
    """A running stac-fastapi-pgstac on loopback, started (and stopped) by the repo's own script."""
    script = REPO / "scripts" / "stac_server.sh"
    proc = subprocess.run([str(script), "start"], env=_stac_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"STAC API did not start:\n{proc.stdout}\n{proc.stderr}")
    url = proc.stdout.strip().splitlines()[-1].strip()
    yield url
    subprocess.run([str(script), "stop"], env=_stac_env(), capture_output=True, timeout=120)


def reset_collection(api: str, collection: str) -> None:
    requests.delete(f"{api}/collections/{collection}", timeout=30)


@dataclass(frozen=True)
class LoadedScenes:
    api: str
    collection: str
    scenes: list[Scene]
    items: list[dict]


@pytest.fixture(scope="session")
def small_scenes(stac_api: str, tmp_path_factory: pytest.TempPathFactory) -> LoadedScenes:
    """Small scenes (two UTM zones, two dates) loaded fresh into the test STAC collection."""
    scenes = generate_scenes(tmp_path_factory.mktemp("scenes"), SMALL_SCENES)
    now = datetime.now(UTC)
    items = [scene_item(s, COLLECTION, now) for s in scenes]
    reset_collection(stac_api, COLLECTION)
    upsert_collection(stac_api, collection_document(COLLECTION, items))
    upsert_items(stac_api, COLLECTION, items)
    return LoadedScenes(stac_api, COLLECTION, scenes, items)


def spec_document(api: str, **overrides) -> dict:
    """The test mosaic: the demo's shape, scaled down so several blocks and chunks exist."""
    mosaic = {
        "name": "testmosaic",
        "stac": {"url": api, "collections": [COLLECTION]},
        "bands": [{"name": n, "asset": "data", "index": i + 1} for i, n in enumerate(BAND_NAMES)],
        "area": {"bbox": [11.93, 47.05, 12.07, 47.15], "crs": "EPSG:4326"},
        "crs": "EPSG:32632",
        "resolution": 10,
        "time": {"start": "2024-06-01", "step": "daily"},
        "chunks": {"y": 256, "x": 256},
        "partition_bytes": "1MiB",
    }
    mosaic.update(overrides)
    return {"mosaics": [mosaic]}


@dataclass(frozen=True)
class BuiltMosaic:
    spec_path: Path
    data_dir: Path
    dagster_home: Path
    store: str
    output: str
    env: dict[str, str]


def dagster_env(tmp: Path, spec: dict, api: str) -> dict[str, str]:
    """Environment of a Dagster process pointed at a fresh instance, data dir and spec file."""
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOSAIC_SPECS": str(spec_path),
        "MOSAIC_DATA_DIR": str(tmp / "data"),
        "MOSAIC_STAC_API_URL": api,
    }


def run_build(env: dict[str, str], returncode: int = 0) -> subprocess.CompletedProcess:
    """`python -m mosaic_assets.run build` (the demo's own command) in ``env``; asserts it exited with
    ``returncode`` (0: built; 3: some mosaic or cube source has no items yet)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mosaic_assets.run", "build", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert proc.returncode == returncode, f"build exited {proc.returncode}, not {returncode}:\n{output}"
    return proc


@pytest.fixture(scope="session")
def built_mosaic(small_scenes: LoadedScenes, tmp_path_factory: pytest.TempPathFactory) -> BuiltMosaic:
    """The whole asset graph materialized through Dagster by the same command the demo uses."""
    tmp = tmp_path_factory.mktemp("build")
    env = dagster_env(tmp, spec_document(small_scenes.api), small_scenes.api)
    proc = run_build(env)
    return BuiltMosaic(
        Path(env["MOSAIC_SPECS"]),
        tmp / "data",
        tmp / "dagster_home",
        str(tmp / "data" / "stores" / "testmosaic.zarr"),
        proc.stdout,
        env,
    )


def run_reference_warp(job: dict) -> dict:
    """gdal.Warp in its own process (osgeo bindings only); see reference_warp.py."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("reference_warp.py"))],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class EngineSetup:
    """A time step ready for the writer, built by the engine alone (no STAC API, no Dagster)."""

    spec: MosaicSpec
    grid: MosaicGrid
    table: gpd.GeoDataFrame
    files: GtiFiles
    store: str


def local_scene_items(folder: Path, collection: str, seed: int) -> list[dict]:
    """Four overlapping 512² scenes of 2024-06-01 as STAC items with local hrefs, for engine-only tests."""
    config = SceneSetConfig(
        collection=collection, dates=(date(2024, 6, 1),), scenes_per_date=4, scene_size=512, spread_m=2500.0, seed=seed
    )
    return [scene_item(s, collection, datetime.now(UTC)) for s in generate_scenes(folder, config)]


def engine_setup(items: list[dict], tmp: Path, **spec_overrides) -> EngineSetup:
    """Spec -> grid -> scene table -> GTI of 2024-06-01 -> template with one time step."""
    return engine_setup_for(parse_specs(spec_document("http://127.0.0.1:1", **spec_overrides))[0], items, tmp)


def engine_setup_for(spec: MosaicSpec, items: list[dict], tmp: Path) -> EngineSetup:
    """``engine_setup`` for a spec of the caller's own (catalog fixtures, composites)."""
    grid = MosaicGrid.from_spec(spec)
    table = scene_table(spec, items)
    files = GtiFiles.for_step(tmp / "gti", "2024-06-01")
    build_gti(spec, grid, table, files)
    store = str(tmp / "store.zarr")
    ensure_template(spec, grid, store, 1)
    return EngineSetup(spec, grid, table, files, store)


def chunk_hashes(store: str) -> dict[str, str]:
    """sha256 of every chunk object of the mosaic variable, by its path in the store."""
    root = Path(store) / "mosaic"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("zarr.")
    }


def run_sensor_request(result, keys: list, assets: list, resources: dict, instance) -> dict:
    """Run what a sensor's one run request asks for, asset by asset in ``keys``' order (dependency
    order), one partition per run: what a backfill of the request does. Returns the partitions that ran
    per asset key (``[None]`` for an unpartitioned asset); asserts nothing outside ``keys`` was asked."""
    import dagster as dg

    (request,) = result.run_requests
    subset = request.asset_graph_subset
    asked = set(subset.non_partitioned_asset_keys) | set(subset.partitions_subsets_by_asset_key)
    assert asked <= set(keys), f"the request asks for other assets too: {asked - set(keys)}"
    ran: dict = {}
    for key in keys:
        if key in subset.non_partitioned_asset_keys:
            partitions = [None]
        elif key in subset.partitions_subsets_by_asset_key:
            partitions = sorted(subset.partitions_subsets_by_asset_key[key].get_partition_keys())
        else:
            continue
        for partition in partitions:
            outcome = dg.materialize(
                assets, selection=[key], partition_key=partition, instance=instance, resources=resources
            )
            assert outcome.success, (key, partition)
        ran[key] = partitions
    return ran


def evaluate_sensor(defs, instance, name: str, cursor: str | None):
    """One tick of sensor ``name`` on ``instance`` from ``cursor``, its dynamic partitions added as the
    daemon adds them; returns the tick's result (a SensorResult or a SkipReason)."""
    import dagster as dg

    sensor = defs.get_sensor_def(name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    result = sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result
