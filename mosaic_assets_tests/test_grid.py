"""The partition planner: every chunk in exactly one block, blocks chunk-aligned and within budget."""

from __future__ import annotations

import numpy as np
import pytest
from odc.geo import geom

from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.keys import BlockIndex
from mosaic_assets.engine.spec import parse_specs

from .conftest import spec_document


def _grid(**overrides) -> tuple:
    spec = parse_specs(spec_document("http://127.0.0.1:1", **overrides))[0]
    return spec, MosaicGrid.from_spec(spec)


CASES = [
    {},
    {"chunks": {"y": 256, "x": 512}, "partition_bytes": "3MiB"},
    {"chunks": {"y": 100, "x": 300}, "partition_bytes": 10_000_000},
    {"chunks": {"y": 1024, "x": 1024}, "partition_bytes": "8MiB"},  # chunk equals budget
    {"chunks": {"y": 4096, "x": 4096}, "partition_bytes": "1GiB"},  # chunk larger than the grid
    {"resolution": 30, "chunks": {"y": 128, "x": 128}, "partition_bytes": "512KiB"},
    {"crs": "EPSG:3035", "resolution": 20},
    {"crs": "EPSG:4326", "resolution": 0.0001},
]


@pytest.mark.parametrize("overrides", CASES)
def test_blocks_tile_the_chunk_grid_exactly_once(overrides: dict) -> None:
    spec, grid = _grid(**overrides)
    h, w = grid.shape
    cy, cx = grid.chunk_shape
    owner = np.zeros(grid.chunk_grid, dtype=int)
    keys = set()
    for block in grid.blocks():
        keys.add(block.key)
        assert BlockIndex.parse(block.key) == block.index
        # aligned with chunks: starts on a chunk edge, ends on a chunk edge or the array edge
        assert block.rows.start % cy == 0 and block.cols.start % cx == 0
        assert block.rows.stop % cy == 0 or block.rows.stop == h
        assert block.cols.stop % cx == 0 or block.cols.stop == w
        # within the partition byte target
        assert block.shape[0] * block.shape[1] * len(spec.bands) * np.dtype(spec.dtype).itemsize <= spec.partition_bytes
        owner[
            block.rows.start // cy : -(-block.rows.stop // cy), block.cols.start // cx : -(-block.cols.stop // cx)
        ] += 1
    assert (owner == 1).all(), "every chunk belongs to exactly one block"
    assert len(keys) == grid.block_grid[0] * grid.block_grid[1]


def test_blocks_use_most_of_the_budget() -> None:
    spec, grid = _grid(chunks={"y": 256, "x": 256}, partition_bytes="8MiB")  # 16 chunks fit
    assert grid.block_chunks[0] * grid.block_chunks[1] == 16


def test_footprint_maps_to_the_blocks_it_touches() -> None:
    _, grid = _grid()
    block = next(iter(grid.blocks()))
    inner = grid.block_geobox(block.index).extent.buffer(-50)  # strictly inside the first block
    assert grid.blocks_touching(inner) == {block.index}
    lonlat = inner.to_crs("EPSG:4326")
    assert grid.blocks_touching(lonlat) == {block.index}
    everything = geom.box(*grid.geobox.extent.boundingbox, grid.geobox.crs)
    assert len(grid.blocks_touching(everything)) == grid.block_grid[0] * grid.block_grid[1]


def test_bad_block_keys_are_refused() -> None:
    _, grid = _grid()
    for bad in ("r1c1", "../r0000c0000", "r0000c0000|x", ""):
        with pytest.raises(ValueError):
            BlockIndex.parse(bad)
    with pytest.raises(KeyError):
        grid.block(BlockIndex(999, 0))
