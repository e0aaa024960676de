"""Which partitions need work: the blocks that scenes touch, per time step.

Footprints are the scenes' raster bounds in the mosaic CRS, the same ones the GTI indexes, so a
block is planned exactly when the writer would find scenes in it.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field

import geopandas as gpd
from odc.geo import geom

from .catalog import CatalogError, load_scene_table, scene_table
from .grid import MosaicGrid
from .gti import scene_footprints
from .keys import BlockIndex
from .object_store import Location, version_tag
from .spec import MosaicSpec


def blocks_with_scenes(grid: MosaicGrid, scenes: gpd.GeoDataFrame) -> set[BlockIndex]:
    touched: set[BlockIndex] = set()
    for footprint in scene_footprints(grid, scenes):
        touched |= grid.blocks_touching(geom.Geometry(footprint, grid.geobox.crs))
    return touched


def blocks_in_scene_table(grid: MosaicGrid, table: Location) -> frozenset[str] | None:
    """Keys of the blocks a time step's scenes touch, from its scene table (None: no table yet).

    Cached per table version, so a process asking every few minutes (the repair schedule) re-reads only
    the tables that changed, not years of time steps."""
    version = version_tag(table)
    return None if version is None else _touched_blocks(grid, str(table), version)


@functools.lru_cache(maxsize=16384)  # > ten years of daily steps, so one tick never evicts its own tables
def _touched_blocks(grid: MosaicGrid, table: str, version: str) -> frozenset[str]:
    return frozenset(b.key for b in blocks_with_scenes(grid, load_scene_table(table)))


@dataclass
class ItemPlan:
    """Blocks to (re)write per time step for a batch of STAC items, and the items left out (with why)."""

    blocks: dict[str, set[BlockIndex]] = field(default_factory=lambda: defaultdict(set))
    skipped: dict[str, str] = field(default_factory=dict)


def plan_items(spec: MosaicSpec, grid: MosaicGrid, items: list[dict]) -> ItemPlan:
    """Group new or updated items by time step and map each to the blocks its footprint touches.

    An unusable item (no projection metadata, ...) is recorded in ``skipped`` instead of stopping the
    batch; the catalog step of its time step fails on it later, naming it."""
    plan = ItemPlan()
    try:
        tables = [scene_table(spec, items)]  # one table for the batch: the common, fast case
    except CatalogError:
        tables = []
        for item in items:
            try:
                tables.append(scene_table(spec, [item]))
            except CatalogError as exc:
                plan.skipped[str(item.get("id"))] = str(exc)
    for table in tables:
        for (_, row), footprint in zip(table.iterrows(), scene_footprints(grid, table)):
            if row["time_step"] is None:
                plan.skipped[row["item_id"]] = f"acquired before the time grid starts ({spec.time.start})"
                continue
            blocks = grid.blocks_touching(geom.Geometry(footprint, grid.geobox.crs))
            if blocks:
                plan.blocks[row["time_step"]] |= blocks
    return plan
