"""End to end on the real STAC API: scenes -> Dagster materializations -> Zarr, checked against GDAL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.spec import load_specs
from mosaic_assets.run import RANGE_START

from .conftest import BuiltMosaic, LoadedScenes
from .pixels import assert_matches_gdal_warp

CHUNK_CHECKS = ("chunks_complete", "valid_pixels_match_footprints", "no_skipped_scenes")

pytestmark = pytest.mark.slow


def _spec_and_grid(built: BuiltMosaic):
    spec = load_specs(built.spec_path)[0]
    return spec, MosaicGrid.from_spec(spec)


def test_store_is_georeferenced_cube(built_mosaic: BuiltMosaic, small_scenes: LoadedScenes) -> None:
    spec, grid = _spec_and_grid(built_mosaic)
    ds = xr.open_zarr(built_mosaic.store, consolidated=True, mask_and_scale=False)
    var = ds["mosaic"]
    assert var.dims == ("time", "band", "y", "x")
    assert var.shape == (3, 4, *grid.shape)  # 2024-06-01 .. 2024-06-03 on a daily grid
    assert [str(b) for b in ds["band"].values] == list(spec.band_names)
    assert [str(t)[:10] for t in ds["time"].values] == ["2024-06-01", "2024-06-02", "2024-06-03"]
    assert np.allclose(ds["x"].values, grid.x_coords()) and np.allclose(ds["y"].values, grid.y_coords())
    assert var.attrs["grid_mapping"] == "spatial_ref"
    assert var.dtype == np.uint16
    # rioxarray reads the CF georeferencing ...
    assert ds["mosaic"].rio.crs.to_epsg() == 32632
    assert tuple(ds["mosaic"].rio.transform())[:6] == pytest.approx(tuple(grid.geobox.affine)[:6])
    # ... and so does GDAL's own Zarr driver
    with rasterio.open(f'ZARR:"{built_mosaic.store}":/mosaic') as zarr_ds:
        assert zarr_ds.crs.to_epsg() == 32632
        assert tuple(zarr_ds.transform)[:6] == pytest.approx(tuple(grid.geobox.affine)[:6])
    assert "preview" in built_mosaic.output and Path(built_mosaic.output.split("preview ")[-1].strip()).exists()


def test_every_asset_materialized_in_dagster(built_mosaic: BuiltMosaic) -> None:
    import os

    os.environ["DAGSTER_HOME"] = str(built_mosaic.dagster_home)
    with dg.DagsterInstance.get() as instance:
        for name in ("scene_catalog", "gti_index", "preview"):
            key = dg.AssetKey(["testmosaic", name])
            assert instance.get_materialized_partitions(key) == {"2024-06-01", "2024-06-03"}, name
        assert instance.get_latest_materialization_event(dg.AssetKey(["testmosaic", "zarr_template"])) is not None
        chunk_parts = instance.get_materialized_partitions(dg.AssetKey(["testmosaic", "mosaic_chunks"]))
        assert len(chunk_parts) > 4 and all(k.split("|")[0] in ("2024-06-01", "2024-06-03") for k in chunk_parts)


def test_every_check_ran_and_passed_in_each_build_run(built_mosaic: BuiltMosaic) -> None:
    """Build's runs (one cached job per selection, the chunk checks in one step) still evaluate every
    check: the template's once, each chunk check once per partition, in the ranged run that wrote it."""
    import os

    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    os.environ["DAGSTER_HOME"] = str(built_mosaic.dagster_home)
    chunks, template = dg.AssetKey(["testmosaic", "mosaic_chunks"]), dg.AssetKey(["testmosaic", "zarr_template"])
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        georeferencing_key = dg.AssetCheckKey(template, "store_georeferencing")
        georeferencing = storage.get_asset_check_execution_history(georeferencing_key, limit=9)
        assert [h.status for h in georeferencing] == [AssetCheckExecutionRecordStatus.SUCCEEDED]
        chunk_runs = {r.run_id for r in instance.get_runs() if RANGE_START in r.tags}  # build ranges chunks only
        partitions = instance.get_materialized_partitions(chunks)
        assert len(chunk_runs) >= 2 and len(partitions) > len(chunk_runs), (chunk_runs, partitions)
        for name in CHUNK_CHECKS:
            history = storage.get_asset_check_execution_history(dg.AssetCheckKey(chunks, name), limit=1000)
            # each partition of a ranged run has its own evaluation (chunk_audits reports them per
            # partition): none left planned, none without a partition, every one passed
            assert sorted(str(h.partition) for h in history) == sorted(partitions), name
            assert all(h.status == AssetCheckExecutionRecordStatus.SUCCEEDED for h in history), name
            assert {h.run_id for h in history} == chunk_runs, name


def test_each_chunk_partition_shows_its_own_check_results_through_graphql(
    built_mosaic: BuiltMosaic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the UI's Checks tab reads: Dagster's GraphQL (the webserver's schema, in process, over the
    build's instance and the code location of workspace.yaml) gives every chunk partition each check's
    own result, passed, from the ranged run that wrote it."""
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    from .conftest import REPO

    query = (
        "query($k: AssetKeyInput!, $n: String!, $p: String) { assetCheckExecutions(assetKey: $k, "
        "checkName: $n, limit: 1000, partition: $p) { partition status runId evaluation { success } } }"
    )
    for name, value in built_mosaic.env.items():
        monkeypatch.setenv(name, value)
    chunks = dg.AssetKey(["testmosaic", "mosaic_chunks"])
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(built_mosaic.dagster_home))) as instance:
        partitions = sorted(instance.get_materialized_partitions(chunks))
        target = WorkspaceFileTarget([str(REPO / "workspace.yaml")])
        with WorkspaceProcessContext(instance, target) as workspace:
            context = workspace.create_request_context()
            for name in CHUNK_CHECKS:
                variables = {"k": {"path": chunks.path}, "n": name, "p": None}
                rows = execute_dagster_graphql(context, query, variables).data["assetCheckExecutions"]
                assert sorted(r["partition"] for r in rows) == partitions, name
                assert all(r["status"] == "SUCCEEDED" and r["evaluation"]["success"] for r in rows), name
                one = execute_dagster_graphql(context, query, {**variables, "p": partitions[0]}).data
                assert [r["partition"] for r in one["assetCheckExecutions"]] == [partitions[0]], name


@pytest.mark.parametrize("step_key, time_index", [("2024-06-01", 0), ("2024-06-03", 2)])
def test_pixels_match_gdal_warp(built_mosaic: BuiltMosaic, tmp_path: Path, step_key: str, time_index: int) -> None:
    spec, grid = _spec_and_grid(built_mosaic)
    layout = MosaicLayout(spec, built_mosaic.data_dir)
    figures = assert_matches_gdal_warp(
        spec, grid, built_mosaic.store, time_index, load_scene_table(layout.scene_table(step_key)), tmp_path
    )
    assert figures["native_pixels"] > 10_000 and figures["reprojected_pixels"] > 10_000


def test_rerun_of_a_partition_writes_identical_bytes(built_mosaic: BuiltMosaic) -> None:
    store = Path(built_mosaic.store) / "mosaic"
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()}
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    key = sorted(k for k in _materialized_chunk_keys(built_mosaic) if k.startswith("2024-06-01|"))[0]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mosaic_assets.run import materialize; materialize('testmosaic/mosaic_chunks', {key!r})",
        ],
        env=built_mosaic.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()}
    assert any(p.stat().st_mtime_ns != m for p, m in mtimes.items()), "the rerun wrote nothing"
    assert before == after


def _materialized_chunk_keys(built: BuiltMosaic) -> set[str]:
    import os

    os.environ["DAGSTER_HOME"] = str(built.dagster_home)
    with dg.DagsterInstance.get() as instance:
        return set(instance.get_materialized_partitions(dg.AssetKey(["testmosaic", "mosaic_chunks"])))
