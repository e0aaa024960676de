"""Which partitions need work: the blocks that a time step's scenes touch.

Footprints are the scenes' raster bounds in the mosaic CRS, the same ones the GTI indexes, so a
block is planned exactly when the writer would find scenes in it.
"""

from __future__ import annotations

import geopandas as gpd
from odc.geo import geom

from .grid import MosaicGrid
from .gti import scene_footprints
from .keys import BlockIndex


def blocks_with_scenes(grid: MosaicGrid, scenes: gpd.GeoDataFrame) -> set[BlockIndex]:
    touched: set[BlockIndex] = set()
    for footprint in scene_footprints(grid, scenes):
        touched |= grid.blocks_touching(geom.Geometry(footprint, grid.geobox.crs))
    return touched
