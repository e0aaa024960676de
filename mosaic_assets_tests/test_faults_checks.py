"""Asset checks against a real store built through Dagster: they pass on a good mosaic and fail (ERROR,
blocking) on lost chunks, silent nodata and a store whose georeferencing no longer matches the spec."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import zarr

from mosaic_assets.defs.checks import build_mosaic_checks
from mosaic_assets.defs.mosaic import MosaicPartitions, build_mosaic_assets
from mosaic_assets.defs.resources import DataRootResource, StacApiResource
from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.spec import parse_specs

from .conftest import LoadedScenes, spec_document

pytestmark = pytest.mark.faults
STEP = "2024-06-01"


class Built:
    def __init__(self, api: str, tmp: Path, instance: dg.DagsterInstance):
        self.spec = parse_specs(spec_document(api))[0]
        self.mosaic, assets = build_mosaic_assets(self.spec)
        self.checks = build_mosaic_checks(self.mosaic)
        self.defs = [*assets, *self.checks]
        self.instance = instance
        self.resources = {"stac_api": StacApiResource(), "data_root": DataRootResource(path=str(tmp / "data"))}
        self.layout = MosaicLayout(self.spec, tmp / "data")
        self.grid = self.mosaic.grid

    def run(self, selection, partition: str | None, **kwargs) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.defs,
            selection=selection,
            partition_key=partition,
            instance=self.instance,
            resources=self.resources,
            raise_on_error=False,
            **kwargs,
        )

    def blocks(self) -> list[str]:
        return sorted(b.key for b in blocks_with_scenes(self.grid, load_scene_table(self.layout.scene_table(STEP))))

    def chunk_key(self, block: str) -> str:
        return str(MosaicPartitions.chunk_key(STEP, block))

    def check_results(self, result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
        return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture()
def built(small_scenes: LoadedScenes, tmp_path: Path):
    with dg.instance_for_test() as instance:
        b = Built(small_scenes.api, tmp_path, instance)
        instance.add_dynamic_partitions(b.mosaic.partitions.time.name, [STEP])
        for key, partition in ((b.mosaic.catalog, STEP), (b.mosaic.gti, STEP), (b.mosaic.template, None)):
            assert b.run([key], partition).success
        yield b


def test_checks_pass_on_a_good_mosaic_and_are_blocking_errors(built: Built) -> None:
    for block in built.blocks():
        result = built.run([built.mosaic.chunks], built.chunk_key(block))
        assert result.success
        checks = built.check_results(result)
        assert set(checks) == {"chunks_complete", "valid_pixels_match_footprints", "no_skipped_scenes"}
        assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    template = built.check_results(built.run([built.mosaic.template], None))
    assert template["store_georeferencing"].passed
    for check in built.checks:
        for spec in check.check_specs:
            # ERROR checks block downstream automation; a skipped scene (bad_scenes: skip) only warns
            assert spec.blocking == (spec.name != "no_skipped_scenes"), spec.key


def _materialize_block_then_check(built: Built, sabotage) -> dict:
    block = built.blocks()[len(built.blocks()) // 2]
    assert built.run([built.mosaic.chunks], built.chunk_key(block)).success
    sabotage(built, built.grid.block(BlockIndex.parse(block)))
    check_keys = [
        dg.AssetCheckKey(built.mosaic.chunks, n) for n in ("chunks_complete", "valid_pixels_match_footprints")
    ]
    # a check-only run of one partition (execute_in_process cannot validate a partition key
    # without a selected asset, so the partition tags are set directly)
    job = dg.define_asset_job("audit", selection=dg.AssetSelection.checks(*check_keys))
    defs = dg.Definitions(assets=built.defs, jobs=[job], resources=built.resources)
    step_key, block_key = MosaicPartitions.split_chunk_key(built.chunk_key(block))
    tags = {
        "dagster/partition": built.chunk_key(block),
        "dagster/partition/time": step_key,
        "dagster/partition/xy": block_key,
    }
    result = defs.resolve_job_def("audit").execute_in_process(instance=built.instance, raise_on_error=False, tags=tags)
    return built.check_results(result)


def _store_chunks(built: Built, block) -> list[Path]:
    cy, cx = built.grid.chunk_shape
    root = Path(built.layout.store) / "mosaic" / "c" / "0" / "0"
    return sorted(
        p
        for r in range(block.rows.start // cy, -(-block.rows.stop // cy))
        for c in range(block.cols.start // cx, -(-block.cols.stop // cx))
        if (p := root / str(r) / str(c)).exists()
    )


def test_lost_chunk_fails_chunks_complete(built: Built) -> None:
    def lose_one(b: Built, block) -> None:
        _store_chunks(b, block)[0].unlink()

    checks = _materialize_block_then_check(built, lose_one)
    assert not checks["chunks_complete"].passed
    assert checks["chunks_complete"].severity == dg.AssetCheckSeverity.ERROR
    assert "missing chunks" in checks["chunks_complete"].description


def test_silent_nodata_fails_valid_fraction(built: Built) -> None:
    """Nodata where a scene promised pixels (what a read that failed silently leaves): the chunks still
    exist, but the valid fraction falls below the footprints' coverage."""

    def blank_half(b: Built, block) -> None:
        array = zarr.open_array(b.layout.store, path="mosaic", mode="r+")
        rows = slice(block.rows.start, block.rows.start + (block.rows.stop - block.rows.start) // 2)
        current = np.asarray(array[0, :, rows, block.cols])
        current[:, :, : current.shape[2] // 2] = 0
        current[:, :, current.shape[2] // 2 + 1 :] = 0  # keep one column so no chunk is all-nodata
        array[0, :, rows, block.cols] = current

    checks = _materialize_block_then_check(built, blank_half)
    assert checks["chunks_complete"].passed
    assert not checks["valid_pixels_match_footprints"].passed
    assert "silent nodata suspected" in checks["valid_pixels_match_footprints"].description


def _shift_x_coords(store: Path) -> None:
    x = zarr.open_array(str(store), path="x", mode="r+")
    x[:] = np.asarray(x[:]) + 10.0  # one pixel east: what rioxarray / xarray users see


def test_wrong_georeferencing_fails_and_blocks_the_chunk_writers(built: Built) -> None:
    """A store whose georeferencing was altered with its fingerprint intact (so the template step itself
    passes): store_georeferencing fails at ERROR and, being blocking, keeps the chunk writer of the same
    run from executing."""
    _shift_x_coords(Path(built.layout.store))
    block = built.blocks()[0]
    result = built.run([built.mosaic.template, built.mosaic.chunks], built.chunk_key(block))
    checks = built.check_results(result)
    assert not checks["store_georeferencing"].passed, checks["store_georeferencing"].description
    assert checks["store_georeferencing"].severity == dg.AssetCheckSeverity.ERROR
    assert "CF transform" in checks["store_georeferencing"].description
    assert "GDAL reads transform" in checks["store_georeferencing"].description
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert built.mosaic.template in materialized
    assert built.mosaic.chunks not in materialized, "the blocking check held back the chunk writer"
