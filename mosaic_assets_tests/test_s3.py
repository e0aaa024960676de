"""Object storage end to end on a real S3-compatible server (rclone serve s3 on loopback, not a mock):
scenes live in a bucket, items with s3:// hrefs are served by the real STAC API, the mosaic is built
through Dagster with MOSAIC_DATA_DIR=s3://..., read back by xarray and checked against gdal.Warp."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import zarr

from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.object_store import (
    as_location,
    gdal_s3_config,
    join,
    read_bytes,
    s3_endpoint_url,
    s3_environment,
    storage_options,
    version_tag,
    vsi_path,
    write_bytes,
)
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.spec import MosaicSpec, load_specs
from mosaic_assets.engine.writer import write_block

from . import s3_fixtures
from .conftest import dagster_env, run_build, spec_document
from .pixels import assert_matches_gdal_warp
from .s3_fixtures import S3_COLLECTION, S3Scenes, S3Server

pytestmark = pytest.mark.s3
s3_server, s3_environ, s3_scenes = s3_fixtures.s3_server, s3_fixtures.s3_environ, s3_fixtures.s3_scenes  # fixtures
MOSAIC = "s3mosaic"


def test_locations_map_to_each_library() -> None:
    """One URL, three spellings: fsspec's, GDAL's, and a Path that collapsed the URL's double slash."""
    assert as_location(Path("s3://bucket/root")) == "s3://bucket/root"  # Path() made it "s3:/bucket/root"
    assert join("s3://bucket/root/", "stores", "m.zarr") == "s3://bucket/root/stores/m.zarr"
    assert join(Path("/data"), "stores") == Path("/data/stores")
    assert vsi_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert vsi_path("gs://bucket/a.tif") == "/vsigs/bucket/a.tif"
    env = s3_environment("http://127.0.0.1:9000")
    assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:9000" and env["AWS_HTTPS"] == "NO"
    assert s3_endpoint_url({"AWS_S3_ENDPOINT": "minio:9000", "AWS_HTTPS": "NO"}) == "http://minio:9000"
    assert gdal_s3_config({"AWS_ENDPOINT_URL": "https://s3.example.com"}) == {
        "AWS_S3_ENDPOINT": "s3.example.com",
        "AWS_HTTPS": "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    assert gdal_s3_config({"AWS_S3_ENDPOINT": "minio:9000"}) == {}  # GDAL reads its own variables


def test_storage_options_carry_no_credentials(s3_environ: S3Server) -> None:
    options = storage_options("s3://bucket/store.zarr")
    assert options == {"client_kwargs": {"endpoint_url": s3_environ.endpoint}}
    assert s3_environ.secret_key not in json.dumps(options) and storage_options(Path("/tmp/x")) is None


@dataclass(frozen=True)
class S3Build:
    spec: MosaicSpec
    layout: MosaicLayout
    dagster_home: Path
    env: dict[str, str]
    output: str
    seconds: float


@pytest.fixture(scope="session")
def s3_build(s3_scenes: S3Scenes, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> S3Build:
    """The whole asset graph through Dagster, with the data root (tables, GTIs, store) in the bucket."""
    tmp = tmp_path_factory.mktemp("s3-build")
    spec_doc = spec_document(s3_scenes.api, name=MOSAIC, stac={"url": s3_scenes.api, "collections": [S3_COLLECTION]})
    env = {
        **dagster_env(tmp, spec_doc, s3_scenes.api),
        **s3_server.env(),
        "MOSAIC_DATA_DIR": s3_server.url("data"),
    }
    started = time.perf_counter()
    proc = run_build(env)
    seconds = time.perf_counter() - started
    spec = load_specs(Path(env["MOSAIC_SPECS"]))[0]
    return S3Build(spec, MosaicLayout(spec, env["MOSAIC_DATA_DIR"]), tmp / "dagster_home", env, proc.stdout, seconds)


def test_everything_shared_lives_in_the_bucket(s3_build: S3Build, s3_server: S3Server) -> None:
    layout = s3_build.layout
    assert layout.store == s3_server.url(f"data/stores/{MOSAIC}.zarr")
    stored = s3_server.objects(s3_server.url("data"))
    for step in ("2024-06-01", "2024-06-03"):
        assert _key(layout.scene_table(step)) in stored
        gti = layout.gti(step)
        assert _key(gti.index) in stored
        # other pods open the index through GDAL's S3 driver: the XML names it by its /vsis3/ path
        assert f"<IndexDataset>{vsi_path(gti.index)}</IndexDataset>" in stored[_key(gti.xml)].decode()
    assert _key(layout.store + "/zarr.json") in stored
    chunks = [k for k in stored if k.startswith(_key(layout.store + "/mosaic/c/"))]
    assert len(chunks) > 4
    print(f"\n[s3] build through Dagster against local S3: {s3_build.seconds:.1f} s, {len(chunks)} chunk objects")


def test_scene_table_version_changes_when_the_object_does(s3_build: S3Build, s3_environ: S3Server) -> None:
    """What the repair schedule's cache keys on, on an object store: the ETag + size of the scene table."""
    table = s3_build.layout.scene_table("2024-06-01")
    copy = join(s3_build.layout.work_location, "catalog", "version-probe.parquet")
    assert version_tag(copy) is None
    write_bytes(copy, read_bytes(table))
    first = version_tag(copy)
    assert first and version_tag(copy) == first, "stable while the object is unchanged"
    write_bytes(copy, read_bytes(table) + b"\0")
    assert version_tag(copy) not in (None, first)


def _key(url: object) -> str:
    return str(url).removeprefix("s3://")


def test_store_reads_back_as_a_georeferenced_cube(s3_build: S3Build, s3_environ: S3Server) -> None:
    grid = MosaicGrid.from_spec(s3_build.spec)
    ds = xr.open_zarr(s3_build.layout.store, consolidated=True, mask_and_scale=False)  # s3fs, keys from env
    assert ds["mosaic"].dims == ("time", "band", "y", "x")
    assert ds["mosaic"].shape == (3, 4, *grid.shape)
    assert ds["mosaic"].rio.crs.to_epsg() == 32632
    assert tuple(ds["mosaic"].rio.transform())[:6] == pytest.approx(tuple(grid.geobox.affine)[:6])


@pytest.mark.parametrize("step_key, time_index", [("2024-06-01", 0), ("2024-06-03", 2)])
def test_pixels_match_gdal_warp(
    s3_build: S3Build, s3_scenes: S3Scenes, s3_environ: S3Server, tmp_path: Path, step_key: str, time_index: int
) -> None:
    """The same check as test_end_to_end: the reference warps local copies of the scenes in z-order."""
    spec, grid = s3_build.spec, MosaicGrid.from_spec(s3_build.spec)
    scenes = load_scene_table(s3_build.layout.scene_table(step_key))
    assert all(json.loads(h)["data"].startswith("/vsis3/") for h in scenes["hrefs"])  # GDAL read them from S3
    local = {s.item_id: str(s.path) for s in s3_scenes.scenes}
    figures = assert_matches_gdal_warp(spec, grid, s3_build.layout.store, time_index, scenes, tmp_path, local)
    assert figures["native_pixels"] > 10_000 and figures["reprojected_pixels"] > 10_000


def test_rerun_through_the_engine_writes_identical_objects(s3_build: S3Build, s3_server: S3Server, s3_environ) -> None:
    """A block rewritten by the engine straight to S3 leaves every object byte-identical."""
    spec, grid, layout = s3_build.spec, MosaicGrid.from_spec(s3_build.spec), s3_build.layout
    before = s3_server.objects(layout.store)
    mtimes = {k: s3_server.fs().info(k)["LastModified"] for k in before if "/c/" in k}
    block = sorted(blocks_with_scenes(grid, load_scene_table(layout.scene_table("2024-06-01"))))[0]
    result = write_block(spec, grid, layout.store, layout.gti("2024-06-01"), 0, grid.block(BlockIndex.parse(block.key)))
    assert result.scenes > 0 and result.chunks_written > 0
    after = s3_server.objects(layout.store)
    fs = s3_server.fs()
    fs.invalidate_cache()
    assert any(fs.info(k)["LastModified"] != m for k, m in mtimes.items()), "the rerun wrote nothing"
    assert {k: hashlib.sha256(v).hexdigest() for k, v in before.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in after.items()
    }


def test_credentials_never_stored_or_logged(s3_build: S3Build, s3_server: S3Server) -> None:
    """The secret key reached every process through the environment only: it is in no object, no
    Dagster event (run config, metadata, logs), no compute log and no output of the build."""
    secret = s3_server.secret_key.encode()
    assert [k for k, v in s3_server.objects(s3_server.url("")).items() if secret in v] == []
    server_files = [p for p in s3_server.folder.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert server_files == []  # volumes and filer metadata: not even an object's metadata holds it
    instance_files = [p for p in s3_build.dagster_home.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert instance_files == []
    assert s3_server.secret_key not in s3_build.output


def test_write_throughput_against_local_s3(s3_environ: S3Server, tmp_path: Path) -> None:
    """Measured, not asserted tightly: MB/s of 8 MiB zarr chunk PUTs to the local S3 server vs local disk."""
    data = np.random.default_rng(0).integers(0, 4000, size=(8, 1024, 1024), dtype=np.uint16)  # 16 MiB ...
    figures = {}
    for name, store in (("s3", join(s3_environ.url("bench"), "t.zarr")), ("disk", str(tmp_path / "t.zarr"))):
        started = time.perf_counter()
        array = zarr.create_array(
            str(store),
            shape=(32, 1024, 1024),
            chunks=(4, 1024, 1024),
            dtype="uint16",
            storage_options=storage_options(store),
            overwrite=True,
            compressors=None,
        )
        for i in range(4):  # ... four times: 64 MiB in 8 chunks of 8 MiB
            array[i * 8 : (i + 1) * 8] = data
        figures[name] = 64 / (time.perf_counter() - started)
    print(f"\n[s3] zarr chunk writes: local S3 {figures['s3']:.0f} MB/s, local disk {figures['disk']:.0f} MB/s")
    assert figures["s3"] > 5
