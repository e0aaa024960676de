"""The writer keeps its GTI open between blocks (engine.gti_cache): the pixels must be those of a GTI
opened afresh for each block, and a GTI rebuilt under the same path (new scenes) must be reopened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mosaic_assets.engine import gti_cache
from mosaic_assets.engine.catalog import scene_table
from mosaic_assets.engine.gti import build_gti
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.writer import read_block

from .conftest import engine_setup, local_scene_items


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return local_scene_items(tmp_path_factory.mktemp("gti-cache"), "gti-cache", seed=11)


def _fresh(built, block) -> np.ndarray:
    gti_cache.open_gtis.close()
    return read_block(built.spec, built.grid, built.files, block)


def test_kept_gti_reads_what_a_fresh_one_reads(items: list[dict], tmp_path: Path) -> None:
    built = engine_setup(items, tmp_path)
    blocks = sorted(blocks_with_scenes(built.grid, built.table))
    assert len(blocks) < gti_cache.MAX_READS
    gti_cache.open_gtis.close()  # its read budget from this thread's earlier tests would close it midway
    kept = [read_block(built.spec, built.grid, built.files, built.grid.block(b)) for b in blocks]
    assert gti_cache.open_gtis.entries, "the GTI stayed open between blocks"
    for block, data in zip(blocks, kept):
        assert np.array_equal(data, _fresh(built, built.grid.block(block)))


def test_gti_rebuilt_in_place_is_reopened(items: list[dict], tmp_path: Path) -> None:
    built = engine_setup(items, tmp_path)
    dropped = built.table[built.table["item_id"] == items[0]["id"]]
    block = built.grid.block(sorted(blocks_with_scenes(built.grid, dropped))[0])
    before = read_block(built.spec, built.grid, built.files, block)
    build_gti(built.spec, built.grid, scene_table(built.spec, items[1:]), built.files)  # same paths, one scene less
    after = read_block(built.spec, built.grid, built.files, block)
    assert not np.array_equal(before, after), "the dropped scene's pixels are gone"
    assert np.array_equal(after, _fresh(built, block))


def test_gti_is_closed_when_the_process_passes_its_memory_budget(
    items: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open scenes keep their decoded tiles in GDAL's cache: past the budget the GTI is not kept."""
    built = engine_setup(items, tmp_path)
    block = built.grid.block(sorted(blocks_with_scenes(built.grid, built.table))[0])
    read_block(built.spec, built.grid, built.files, block)
    assert gti_cache.open_gtis.entries
    monkeypatch.setenv("MOSAIC_WORKER_MEMORY_GB", "0.01")  # 10 MB: any Python process is over it
    data = read_block(built.spec, built.grid, built.files, block)
    assert not gti_cache.open_gtis.entries
    assert np.array_equal(data, _fresh(built, block))
