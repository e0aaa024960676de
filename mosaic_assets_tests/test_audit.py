"""The chunk audits project only the scenes that reach a block (engine.audit._footprints): inside the
block and near its edges, that must be the union of every scene of the time step."""

from __future__ import annotations

import pytest
import shapely
from odc.geo import geom

from mosaic_assets.engine.audit import FOOTPRINT_MARGIN_PIXELS, _block_box, _footprints
from mosaic_assets.engine.catalog import scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import parse_specs

from .conftest import local_scene_items, spec_document


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return local_scene_items(tmp_path_factory.mktemp("audit"), "audit", seed=3)


def test_block_footprints_are_the_whole_union_where_the_audits_look(items: list[dict]) -> None:
    spec = parse_specs(spec_document("http://127.0.0.1:1"))[0]
    grid = MosaicGrid.from_spec(spec)
    table = scene_table(spec, items)
    union = shapely.union_all([geom.Geometry(g, "EPSG:4326").to_crs(grid.geobox.crs).geom for g in table.geometry])
    res = abs(grid.geobox.resolution.x)
    partial = 0
    for block in grid.blocks():
        looked_at = _block_box(grid, block).buffer(2 * FOOTPRINT_MARGIN_PIXELS * res)
        mine = _footprints(grid, table, block)
        partial += 0 < union.intersection(looked_at).area < looked_at.area
        difference = mine.intersection(looked_at).symmetric_difference(union.intersection(looked_at))
        assert difference.area < res * res, block.key  # under one pixel: densifying, not missing scenes
    assert partial, "some blocks are partly covered, so the comparison means something"
