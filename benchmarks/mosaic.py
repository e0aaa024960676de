"""The benchmark mosaic as the engine sees it: spec, grid, layout and the partitions with work,
loaded once per process (pool workers call these too)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.keys import parse_time_key
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.spec import MosaicSpec, load_specs
from mosaic_assets.engine.timegrid import step_index


@cache
def spec_of(path: str) -> MosaicSpec:
    (spec,) = load_specs(path)
    return spec


@cache
def grid_of(path: str) -> MosaicGrid:
    return MosaicGrid.from_spec(spec_of(path))


def layout_of(spec_path: str, data_root: str) -> MosaicLayout:
    return MosaicLayout(spec_of(spec_path), Path(data_root))


def time_index(spec: MosaicSpec, step: str) -> int:
    return step_index(spec.time, parse_time_key(step))


def time_length(spec: MosaicSpec, steps: tuple[str, ...] | list[str]) -> int:
    """Length of the store's time axis: up to the last step with scenes (as zarr_template does)."""
    return max(time_index(spec, s) for s in steps) + 1


def planned_partitions(spec_path: str, data_root: str, steps: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(time step, block key) pairs that scenes touch, in the order the build runs them."""
    grid, layout = grid_of(spec_path), layout_of(spec_path, data_root)
    return [
        (step, block.key)
        for step in steps
        for block in sorted(blocks_with_scenes(grid, load_scene_table(layout.scene_table(step))))
    ]
