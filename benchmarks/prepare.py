"""The inputs every method starts from: the scene table and GTI of each time step, built by the engine.

Why outside the timed methods: GDAL alone needs a GTI and odc-stac needs STAC items before either
can start; timing starts where the tools differ (from index or items to a finished Zarr store).
"""

from __future__ import annotations

from pathlib import Path

from mosaic_assets.engine.catalog import discover_time_steps, open_client, save_scene_table, search_time_step
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import build_gti
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.spec import MosaicSpec


def prepare_step(spec: MosaicSpec, data_root: Path, step: str) -> None:
    """One time step's scene table and GTI (what the ``scene_catalog`` and ``gti_index`` runs write)."""
    layout = MosaicLayout(spec, data_root)
    table = search_time_step(spec, open_client(spec.stac.url), step)
    save_scene_table(table, layout.scene_table(step))
    build_gti(spec, MosaicGrid.from_spec(spec), table, layout.gti(step))


def prepare(spec: MosaicSpec, data_root: Path) -> list[str]:
    """Search the STAC API, write each time step's scene table and GTI; returns the time-step keys."""
    steps = sorted(discover_time_steps(spec, open_client(spec.stac.url)))
    for step in steps:
        prepare_step(spec, data_root, step)
    return steps
