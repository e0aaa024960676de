"""Bad scenes: truncated or corrupt files, 404 hrefs, files that contradict their STAC metadata.

The partitions whose blocks such a scene touches fail with an error naming the item id and href;
nothing is written into their regions (never silent nodata); every other partition completes.
Real COGs, real GDAL (GTI), a real HTTP server on loopback, a real STAC API and Dagster instance.
"""

from __future__ import annotations

import copy
import functools
import http.server
import shutil
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import rasterio
import zarr

from mosaic_assets.defs.mosaic import MosaicPartitions
from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.catalog import scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.writer import SceneReadError, write_block

from .conftest import engine_setup, reset_collection, spec_document
from .pixels import assert_matches_gdal_warp

pytestmark = pytest.mark.faults
FAULT_COLLECTION = "fault-scenes"
CONFIG = SceneSetConfig(
    collection=FAULT_COLLECTION, dates=(date(2024, 6, 1),), scenes_per_date=4, scene_size=512, spread_m=2500.0, seed=7
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> list:
    return generate_scenes(tmp_path_factory.mktemp("fault-scenes"), CONFIG)


def _items(scenes: list, folder: Path, base_href: str | None = None) -> list[dict]:
    """Items whose hrefs point at copies of the scenes in ``folder`` (or at ``base_href`` + file name)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for scene in scenes:
        shutil.copy(scene.path, folder / scene.path.name)
        item = scene_item(scene, FAULT_COLLECTION, datetime.now(UTC))
        href = f"{base_href}/{scene.path.name}" if base_href else str(folder / scene.path.name)
        item["assets"]["data"]["href"] = href
        items.append(item)
    return items


def _rewrite(path: Path, **changes) -> None:
    """Rewrite a scene as a plain GeoTIFF with some of its properties changed (crs, transform, crop, bands)."""
    with rasterio.open(path) as src:
        data = src.read()
        profile = dict(driver="GTiff", dtype=data.dtype, count=src.count, crs=src.crs, transform=src.transform)
        profile.update(nodata=src.nodata, width=src.width, height=src.height)
    if "bands" in changes:
        data = data[: changes.pop("bands")]
    if "crop" in changes:
        data = data[:, : changes["crop"], : changes.pop("crop")]
    profile.update(changes, count=data.shape[0], height=data.shape[1], width=data.shape[2])
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _truncate(fraction: float):
    def corrupt(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return corrupt


FAULTS = {
    "truncated_body": (_truncate(0.5), "IReadBlock failed"),
    "truncated_header": (lambda p: p.write_bytes(p.read_bytes()[:300]), "cannot be opened"),
    "garbage": (lambda p: p.write_bytes(b"<html>404 Not Found</html>" * 50), "cannot be opened"),
    "missing": (lambda p: p.unlink(), "cannot be opened"),
    "wrong_crs": (lambda p: _rewrite(p, crs="EPSG:32633"), "CRS is EPSG:32633, STAC says EPSG:32632"),
    "wrong_size": (lambda p: _rewrite(p, crop=500), "shape is [500, 500], STAC says [512, 512]"),
    "shifted": (
        lambda p: _rewrite(p, transform=rasterio.open(p).transform * rasterio.Affine.translation(100, 0)),
        "transform is",
    ),
    "too_few_bands": (lambda p: _rewrite(p, bands=2), "has 2 bands, the spec reads band 4"),
}


def _setup(items: list[dict], tmp: Path):
    built = engine_setup(items, tmp)
    return built.spec, built.grid, built.table, built.files, built.store


def _chunk_files(store: str, grid: MosaicGrid, block) -> list[Path]:
    cy, cx = grid.chunk_shape
    return [
        Path(store) / "mosaic" / "c" / "0" / "0" / str(r) / str(c)
        for r in range(block.rows.start // cy, -(-block.rows.stop // cy))
        for c in range(block.cols.start // cx, -(-block.cols.stop // cx))
    ]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_scene_fails_exactly_its_blocks_naming_item_and_href(pristine: list, tmp_path: Path, fault: str) -> None:
    items = _items(pristine, tmp_path / "scenes")
    spec, grid, table, files, store = _setup(items, tmp_path)
    victim = items[0]
    href = victim["assets"]["data"]["href"]
    corrupt, expected = FAULTS[fault]
    corrupt(Path(href))

    bad_blocks = blocks_with_scenes(grid, table[table["item_id"] == victim["id"]])
    failed, written = set(), set()
    for block in grid.blocks():
        try:
            result = write_block(spec, grid, store, files, 0, block)
        except SceneReadError as exc:
            failed.add(block.index)
            assert f"item {victim['id']}: asset 'data' href {href}" in str(exc), str(exc)
            assert expected in str(exc), str(exc)
            assert not exc.transient, "a broken file is not worth retrying"
            assert not any(p.exists() for p in _chunk_files(store, grid, block)), "nothing written for a failed block"
            continue
        if result.scenes:
            written.add(block.index)
    assert failed == bad_blocks and bad_blocks, "exactly the blocks the bad scene touches fail"
    assert written, "the other blocks complete"
    with rasterio.open(items[1]["assets"]["data"]["href"]):
        pass  # the other scenes are untouched


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_skip_policy_writes_the_blocks_without_the_bad_scene_and_lists_it(
    pristine: list, tmp_path: Path, fault: str
) -> None:
    """``bad_scenes: skip``: every block is written; those the bad scene touches list it (item id, href,
    cause) as skipped, and the store equals GDAL's own warp of the other scenes."""
    items = _items(pristine, tmp_path / "scenes")
    built = engine_setup(items, tmp_path, bad_scenes="skip")
    spec, grid, table, files, store = built.spec, built.grid, built.table, built.files, built.store
    victim = items[0]
    href = victim["assets"]["data"]["href"]
    corrupt, expected = FAULTS[fault]
    corrupt(Path(href))

    bad_blocks = blocks_with_scenes(grid, table[table["item_id"] == victim["id"]])
    skipped_in = set()
    for block in grid.blocks():
        result = write_block(spec, grid, store, files, 0, block)
        for skipped in result.skipped:
            assert skipped.item_id == victim["id"]
            assert f"item {victim['id']}: asset 'data' href {href}" in skipped.reason and expected in skipped.reason
            skipped_in.add(block.index)
    assert skipped_in == bad_blocks and bad_blocks, "exactly the blocks the bad scene touches skip it"
    if fault in ("truncated_body", "wrong_crs"):  # one read-time and one header-time fault against GDAL
        assert_matches_gdal_warp(spec, grid, store, 0, table[table["item_id"] != victim["id"]], tmp_path)


@pytest.fixture()
def scene_server(tmp_path: Path):
    """A plain HTTP server on loopback serving a folder (404 for anything not in it)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges, as GDAL's /vsicurl/ needs (the stdlib handler has none)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start, end = int(first or 0), min(int(last) if last else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start : end + 1])


def test_http_404_href_fails_naming_item_and_url(pristine: list, scene_server, tmp_path: Path) -> None:
    folder, base = scene_server
    items = _items(pristine, folder, base_href=base)
    spec, grid, table, files, store = _setup(items, tmp_path)
    (folder / pristine[0].path.name).unlink()  # now a 404
    url = items[0]["assets"]["data"]["href"]
    outcomes = {}
    for block in grid.blocks():
        try:
            outcomes[block.index] = write_block(spec, grid, store, files, 0, block).scenes
        except SceneReadError as exc:
            assert f"item {items[0]['id']}: asset 'data' href /vsicurl/{url}: cannot be opened" in str(exc)
            assert "404" in str(exc) and not exc.transient
            outcomes[block.index] = "failed"
    bad = blocks_with_scenes(grid, table[table["item_id"] == items[0]["id"]])
    assert {k for k, v in outcomes.items() if v == "failed"} == bad
    assert any(isinstance(v, int) and v > 0 for v in outcomes.values())


def test_clean_scenes_over_http_write_the_same_pixels_as_local(pristine: list, scene_server, tmp_path: Path) -> None:
    """The verification costs no correctness: with every scene readable, HTTP and local stores agree."""
    folder, base = scene_server
    stores = []
    for name, items in (("local", _items(pristine, tmp_path / "local")), ("http", _items(pristine, folder, base))):
        spec, grid, _, files, store = _setup(items, tmp_path / name)
        for block in grid.blocks():
            write_block(spec, grid, store, files, 0, block)
        stores.append(zarr.open_group(store, mode="r")["mosaic"][:])
    assert np.array_equal(stores[0], stores[1]) and (stores[0] != 0).mean() > 0.3


def _dagster_fault_setup(pristine: list, stac_api: str, tmp_path: Path, **overrides):
    """The scenes in the real STAC API, and a mosaic's assets (with their checks) over them."""
    from mosaic_assets.defs.checks import build_mosaic_checks
    from mosaic_assets.defs.mosaic import build_mosaic_assets
    from mosaic_assets.defs.resources import DataRootResource, StacApiResource

    items = _items(pristine, tmp_path / "scenes")
    reset_collection(stac_api, FAULT_COLLECTION)
    upsert_collection(stac_api, collection_document(FAULT_COLLECTION, items))
    upsert_items(stac_api, FAULT_COLLECTION, copy.deepcopy(items))
    doc = spec_document(stac_api, stac={"url": stac_api, "collections": [FAULT_COLLECTION]}, **overrides)
    spec = parse_specs(doc)[0]
    mosaic, assets = build_mosaic_assets(spec)
    resources = {"stac_api": StacApiResource(), "data_root": DataRootResource(path=str(tmp_path / "data"))}
    return items, spec, mosaic, [*assets, *build_mosaic_checks(mosaic)], resources


def _materialize_step(instance: dg.DagsterInstance, mosaic, assets: list, resources: dict) -> None:
    """Catalog, GTI and template of 2024-06-01."""
    instance.add_dynamic_partitions(mosaic.partitions.time.name, ["2024-06-01"])
    for key, partition in ((mosaic.catalog, "2024-06-01"), (mosaic.gti, "2024-06-01"), (mosaic.template, None)):
        result = dg.materialize(
            assets, selection=[key], partition_key=partition, instance=instance, resources=resources
        )
        assert result.success


def test_truncated_scene_through_dagster_fails_its_partitions_and_the_rest_land(
    pristine: list, stac_api: str, tmp_path: Path
) -> None:
    """Real STAC API, real Dagster instance: the partitions touching a truncated COG are FAILED with the
    item id and href in the error, every other partition is materialized, and the failed regions hold no chunk."""
    items, spec, mosaic, assets, resources = _dagster_fault_setup(pristine, stac_api, tmp_path)
    grid = mosaic.grid
    try:
        with dg.instance_for_test() as instance:
            _materialize_step(instance, mosaic, assets, resources)
            _truncate(0.5)(Path(items[0]["assets"]["data"]["href"]))
            table = scene_table(spec, items)
            bad = {b.key for b in blocks_with_scenes(grid, table[table["item_id"] == items[0]["id"]])}
            touched = {b.key for b in blocks_with_scenes(grid, table)}
            for block_key in sorted(touched):
                key = MosaicPartitions.chunk_key("2024-06-01", block_key)
                result = dg.materialize(
                    assets,
                    selection=[mosaic.chunks],
                    partition_key=key,
                    instance=instance,
                    resources=resources,
                    raise_on_error=False,
                )
                assert result.success == (block_key not in bad), block_key
                if not result.success:
                    error = result.get_step_failure_events()[0].step_failure_data.error.to_string()
                    assert f"item {items[0]['id']}" in error and items[0]["assets"]["data"]["href"] in error
            parts = mosaic.partitions.chunks
            keys = [str(MosaicPartitions.chunk_key("2024-06-01", b)) for b in sorted(touched)]
            status = instance.get_status_by_partition(mosaic.chunks, keys, parts)
            assert {k.split("|")[1] for k, s in status.items() if s == dg.AssetPartitionStatus.FAILED} == bad
            assert {k.split("|")[1] for k, s in status.items() if s == dg.AssetPartitionStatus.MATERIALIZED} == (
                touched - bad
            )
        store = str(tmp_path / "data" / "stores" / "testmosaic.zarr")
        for block_key in bad:
            block = grid.block(BlockIndex.parse(block_key))
            assert not any(p.exists() for p in _chunk_files(store, grid, block))
    finally:
        reset_collection(stac_api, FAULT_COLLECTION)


def test_writer_gdal_config_is_accepted_by_gdal(pristine: list, scene_server, caplog: pytest.LogCaptureFixture) -> None:
    """GDAL rejects out-of-range config values with only a warning and silently uses its own (a 12 MiB
    CPL_VSIL_CURL_CHUNK_SIZE became 16 KiB): no such warning under the writer's config."""
    from mosaic_assets.engine.gdal_env import gdal_env

    folder, base = scene_server
    shutil.copy(pristine[0].path, folder / "a.tif")
    with caplog.at_level("WARNING"), gdal_env(), rasterio.open(f"/vsicurl/{base}/a.tif") as src:
        src.read(1, window=((0, 16), (0, 16)))
    assert not [r for r in caplog.records if "Invalid value" in r.getMessage()], caplog.text


def test_truncated_scene_under_skip_policy_through_dagster_lands_with_a_warning(
    pristine: list, stac_api: str, tmp_path: Path
) -> None:
    """``bad_scenes: skip`` through Dagster with its asset checks: every partition materializes; those the
    truncated COG touches list it in their metadata and fail the WARN check ``no_skipped_scenes``; the ERROR
    checks pass (the block is complete without the scene); a rerun after the scene is repaired clears it."""
    items, spec, mosaic, assets, resources = _dagster_fault_setup(pristine, stac_api, tmp_path, bad_scenes="skip")
    victim, href = items[0]["id"], items[0]["assets"]["data"]["href"]
    try:
        with dg.instance_for_test() as instance:
            _materialize_step(instance, mosaic, assets, resources)
            original = Path(href).read_bytes()
            _truncate(0.5)(Path(href))
            table = scene_table(spec, items)
            bad = {b.key for b in blocks_with_scenes(mosaic.grid, table[table["item_id"] == victim])}
            assert bad
            for block in blocks_with_scenes(mosaic.grid, table):
                key = str(MosaicPartitions.chunk_key("2024-06-01", block.key))
                result = dg.materialize(
                    assets, selection=[mosaic.chunks], partition_key=key, instance=instance, resources=resources
                )
                assert result.success, block.key
                checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
                assert checks["chunks_complete"].passed and checks["valid_pixels_match_footprints"].passed, {
                    k: c.description for k, c in checks.items()
                }
                warning = checks["no_skipped_scenes"]
                assert warning.severity == dg.AssetCheckSeverity.WARN
                (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == mosaic.chunks]
                metadata = event.materialization.metadata
                if block.key in bad:
                    assert not warning.passed and victim in warning.description
                    assert metadata["skipped_scenes"].value == 1
                    (listed,) = metadata["skipped"].value
                    assert listed["item_id"] == victim and href in listed["reason"], listed
                else:
                    assert warning.passed and metadata["skipped_scenes"].value == 0

            Path(href).write_bytes(original)  # the scene is repaired: the rerun writes it, the warning clears
            key = str(MosaicPartitions.chunk_key("2024-06-01", sorted(bad)[0]))
            result = dg.materialize(
                assets, selection=[mosaic.chunks], partition_key=key, instance=instance, resources=resources
            )
            assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["no_skipped_scenes"]
    finally:
        reset_collection(stac_api, FAULT_COLLECTION)


def test_a_scene_file_replaced_between_blocks_is_checked_again(tmp_path: Path) -> None:
    """verify_scenes keeps each file's header for the process (a scene under many blocks is opened once),
    but a file replaced on disk is opened again: the next block names its contradiction."""
    from affine import Affine

    from mosaic_assets.engine.writer import verify_scenes

    spec = parse_specs(spec_document("http://127.0.0.1:1"))[0]
    path = tmp_path / "scene.tif"
    transform = Affine(10, 0, 700000, 0, -10, 5230000)

    def write(width: int) -> None:
        with rasterio.open(
            path, "w", driver="GTiff", width=width, height=64, count=4, dtype="uint16", crs="EPSG:32632",
            transform=transform,
        ) as dst:  # fmt: skip
            dst.write(np.ones((4, 64, width), dtype=np.uint16))

    write(64)
    declared = {"href": str(path), "crs": "EPSG:32632", "shape": [64, 64], "transform": list(transform)[:6]}
    scene = {"item_id": "S1", "assets": {"data": declared}}
    verify_scenes(spec, [scene])
    verify_scenes(spec, [scene])  # the kept header: still fine
    write(80)  # replaced: another size
    with pytest.raises(SceneReadError, match=r"item S1: asset 'data' .* shape is \[64, 80\], STAC says \[64, 64\]"):
        verify_scenes(spec, [scene])
