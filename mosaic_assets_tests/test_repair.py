"""The repair schedule: failed partitions whose chunks were lost are re-run, exactly those, in
ceil(N / n) ranged runs, and the store comes back byte for byte."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from mosaic_assets.definitions import build_definitions
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.spec import load_specs

from .conftest import LoadedScenes, dagster_env, run_build, spec_document

pytestmark = [pytest.mark.incremental, pytest.mark.slow]
PER_RUN = 2
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _digest(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()
    }


def _chunk_files(store: Path, grid: MosaicGrid, time_index: int, block_key: str) -> list[Path]:
    block = grid.block(BlockIndex.parse(block_key))
    cy, cx = grid.chunk_shape
    return [
        store / "mosaic" / "c" / str(time_index) / "0" / str(r) / str(c)
        for r in range(block.rows.start // cy, -(-block.rows.stop // cy))
        for c in range(block.cols.start // cx, -(-block.cols.stop // cx))
    ]


def test_repair_schedule_reruns_exactly_the_failed_partitions(
    small_scenes: LoadedScenes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = spec_document(small_scenes.api, operations={"partitions_per_run": PER_RUN})
    env = dagster_env(tmp_path, doc, small_scenes.api)
    run_build(env)
    for name in ("DAGSTER_HOME", "MOSAIC_SPECS", "MOSAIC_DATA_DIR", "MOSAIC_STAC_API_URL"):
        monkeypatch.setenv(name, env[name])
    spec = load_specs(env["MOSAIC_SPECS"])[0]
    grid = MosaicGrid.from_spec(spec)
    layout = MosaicLayout(spec, Path(env["MOSAIC_DATA_DIR"]))
    store = Path(layout.store)
    defs = build_definitions(Path(env["MOSAIC_SPECS"]))
    chunks_key = dg.AssetKey(["testmosaic", "mosaic_chunks"])
    schedule = defs.get_schedule_def("testmosaic_repair_schedule")

    with dg.DagsterInstance.get() as instance:
        assets_def = defs.get_assets_def(chunks_key)
        ordered = assets_def.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
        done = instance.get_materialized_partitions(chunks_key)
        # the longest run of consecutive materialized keys: the partitions we will break
        best, run = [], []
        for key in ordered:
            run = run + [key] if key in done else []
            best = max(best, run, key=len)
        victims = best[:5]
        assert len(victims) >= 3, "the test mosaic must have several adjacent materialized partitions"
        before = _digest(store)

        # lose their chunks, and make their next attempt fail for real (the GTI is gone meanwhile)
        step = victims[0].split("|")[0]
        gti = layout.gti(step).xml
        shutil.move(gti, gti.with_suffix(".away"))
        for key in victims:
            for path in _chunk_files(store, grid, 0, key.split("|")[1]):
                path.unlink(missing_ok=True)
            result = dg.materialize(
                list(defs.assets),
                selection=[chunks_key],
                partition_key=key,
                instance=instance,
                resources=defs.resources,
                raise_on_error=False,
            )
            assert not result.success
        shutil.move(gti.with_suffix(".away"), gti)
        status = instance.get_status_by_partition(chunks_key, victims, assets_def.partitions_def)
        assert set(status.values()) == {dg.AssetPartitionStatus.FAILED}

        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 1, 1, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
            resources=defs.resources,
        )
        requests = schedule.evaluate_tick(context).run_requests
        assert len(requests) == math.ceil(len(victims) / PER_RUN)
        covered = []
        for request in requests:
            start, end = request.tags[RANGE_START], request.tags[RANGE_END]
            covered += ordered[ordered.index(start) : ordered.index(end) + 1]
        assert sorted(covered) == sorted(victims), "exactly the failed partitions, nothing else"

        for request in requests:  # run them as the daemon would: ranged runs of the chunks asset
            result = dg.materialize(
                list(defs.assets),
                selection=[chunks_key],
                instance=instance,
                resources=defs.resources,
                tags={k: v for k, v in request.tags.items() if k in (RANGE_START, RANGE_END)},
            )
            assert result.success
        assert _digest(store) == before, "the repaired store is byte-identical to the original"
        again = schedule.evaluate_tick(context)
        assert not again.run_requests and again.skip_message
    os.environ.pop("DAGSTER_HOME", None)


def test_expected_blocks_follow_the_scene_table_when_it_changes(small_scenes: LoadedScenes, tmp_path: Path) -> None:
    """The repair schedule's per-table cache: no table -> None; the table's blocks; a rewritten table (one
    scene fewer) is read again, not served from the cache."""
    from mosaic_assets.engine.catalog import save_scene_table, scene_table
    from mosaic_assets.engine.planner import blocks_in_scene_table, blocks_with_scenes
    from mosaic_assets.engine.spec import parse_specs

    from .conftest import spec_document

    spec = parse_specs(spec_document(small_scenes.api))[0]
    grid = MosaicGrid.from_spec(spec)
    items = [i for i in small_scenes.items if i["properties"]["datetime"].startswith("2024-06-01")]
    path = tmp_path / "catalog" / "2024-06-01.parquet"
    assert blocks_in_scene_table(grid, path) is None
    table = scene_table(spec, items)
    save_scene_table(table, path)
    assert blocks_in_scene_table(grid, path) == {b.key for b in blocks_with_scenes(grid, table)}
    fewer = table.iloc[:1]
    save_scene_table(fewer, path)
    expected = {b.key for b in blocks_with_scenes(grid, fewer)}
    assert expected < {b.key for b in blocks_with_scenes(grid, table)}, "precondition: one scene covers less"
    assert blocks_in_scene_table(grid, path) == expected
