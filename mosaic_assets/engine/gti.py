"""One GDAL Raster Tile Index (GTI) per time step: a GeoPackage of scene footprints plus a ``.gti``
XML file carrying the complete mosaic metadata (grid, SRS, data type, bands, nodata, resampling,
z-order), so GDAL never opens a scene just to learn its shape or the mosaic's.

The GTI's grid is exactly the mosaic grid, so pixel (row, col) of the GTI is pixel (row, col) of the
Zarr array and a block read is a plain window read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
from odc.geo import geom
from pyproj import CRS

from .grid import MosaicGrid
from .spec import MosaicSpec

INDEX_LAYER = "tiles"
LOCATION_FIELD = "location"
SORT_FIELD = "priority"
GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class GtiFiles:
    """Where a time step's index lives: the vector index and the XML that GDAL opens."""

    index: Path
    xml: Path

    @classmethod
    def for_step(cls, folder: Path, step_key: str) -> GtiFiles:
        return cls(folder / f"{step_key}.gpkg", folder / f"{step_key}.gti")


def tile_location(
    spec: MosaicSpec, hrefs: dict[str, str], shape: tuple[int, int], transform: list[float], crs: str
) -> str:
    """The dataset name GDAL opens for one scene, exposing exactly the spec's bands in order.

    One asset -> a ``vrt://`` connection string (band selection, and ``ovr=NONE`` unless the spec
    allows overviews, so a coarser grid still reads full resolution). Several assets -> an inline VRT.
    """
    assets = {b.asset for b in spec.bands}
    if len(assets) == 1:
        path = hrefs[spec.bands[0].asset]
        options = ["bands=" + ",".join(str(b.index) for b in spec.bands)]
        if not spec.use_overviews:
            options.append("ovr=NONE")
        return f"vrt://{path}?{'&'.join(options)}"
    return _inline_vrt(spec, hrefs, shape, transform, crs)


def _inline_vrt(
    spec: MosaicSpec, hrefs: dict[str, str], shape: tuple[int, int], transform: list[float], crs: str
) -> str:
    a, b, c, d, e, f = transform
    height, width = shape
    dtype = GDAL_TYPES[spec.dtype]
    bands = []
    for n, band in enumerate(spec.bands, start=1):
        source = escape(hrefs[band.asset])
        bands.append(
            f'<VRTRasterBand dataType="{dtype}" band="{n}"><NoDataValue>{spec.nodata}</NoDataValue>'
            f'<ComplexSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
            f"<SourceBand>{band.index}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f"<NODATA>{spec.nodata}</NODATA></ComplexSource></VRTRasterBand>"
        )
    srs = escape(CRS.from_user_input(crs).to_wkt())
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{srs}</SRS>'
        f"<GeoTransform>{c},{a},{b},{f},{d},{e}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )


def priorities(spec: MosaicSpec, scenes: gpd.GeoDataFrame) -> np.ndarray:
    """Z-order: 0 is drawn first; the best scene gets the highest number and ends up on top.

    Ties (and scenes lacking the property, ranked worst) are broken by datetime, then item id, so
    the order, and hence the pixels, never depend on the order the STAC API returned items in.
    """
    value = scenes["sort_value"].astype(float).to_numpy()
    badness = -value if spec.best_on_top.best == "highest" else value
    badness = np.where(np.isnan(badness), np.inf, badness)
    order = np.lexsort((scenes["item_id"].to_numpy(), scenes["datetime"].to_numpy(), -badness))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def scene_footprints(grid: MosaicGrid, scenes: gpd.GeoDataFrame) -> list:
    """Raster bounds of each scene in the mosaic CRS, densified and grown by one pixel, as shapely."""
    res = abs(grid.geobox.resolution.x)
    shapes = []
    for transform, shape, crs in zip(scenes["transform"], scenes["shape"], scenes["crs"]):
        a, _, c, _, e, f = transform
        h, w = shape
        xs, ys = sorted((c, c + a * w)), sorted((f, f + e * h))
        box = geom.box(xs[0], ys[0], xs[1], ys[1], crs)
        if box.crs != grid.geobox.crs:
            box = box.to_crs(grid.geobox.crs, resolution=res)
        shapes.append(box.buffer(res).geom)
    return shapes


def build_gti(spec: MosaicSpec, grid: MosaicGrid, scenes: gpd.GeoDataFrame, files: GtiFiles) -> int:
    """Write the index and its XML (atomically); returns the number of tiles indexed."""
    locations = [
        tile_location(spec, json.loads(h), tuple(s), list(t), c)
        for h, s, t, c in zip(scenes["hrefs"], scenes["shape"], scenes["transform"], scenes["crs"])
    ]
    index = gpd.GeoDataFrame(
        {
            LOCATION_FIELD: locations,
            SORT_FIELD: priorities(spec, scenes) if len(scenes) else np.array([], dtype=np.int64),
            "item_id": scenes["item_id"].to_list(),
        },
        geometry=scene_footprints(grid, scenes),
        crs=grid.geobox.crs.to_wkt(),
    )
    files.index.parent.mkdir(parents=True, exist_ok=True)
    tmp_index = files.index.with_name(files.index.name + ".tmp.gpkg")
    tmp_index.unlink(missing_ok=True)
    index.to_file(tmp_index, layer=INDEX_LAYER, driver="GPKG", engine="pyogrio")
    tmp_index.replace(files.index)
    tmp_xml = files.xml.with_name(files.xml.name + ".tmp")
    tmp_xml.write_text(gti_xml(spec, grid, files.index))
    tmp_xml.replace(files.xml)
    return len(index)


def gti_xml(spec: MosaicSpec, grid: MosaicGrid, index_path: Path) -> str:
    left, bottom, right, top = grid.geobox.extent.boundingbox
    res = abs(grid.geobox.resolution.x)
    bands = "".join(
        f'<Band band="{n}" dataType="{GDAL_TYPES[spec.dtype]}"><Description>{escape(b.name)}</Description>'
        f"<NoDataValue>{_number(spec.nodata)}</NoDataValue></Band>"
        for n, b in enumerate(spec.bands, start=1)
    )
    return (
        "<GDALTileIndexDataset>"
        f"<IndexDataset>{escape(str(index_path.resolve()))}</IndexDataset>"
        f"<IndexLayer>{INDEX_LAYER}</IndexLayer>"
        f"<LocationField>{LOCATION_FIELD}</LocationField>"
        f"<SortField>{SORT_FIELD}</SortField><SortFieldAsc>true</SortFieldAsc>"
        f"<SRS>{escape(grid.geobox.crs.to_wkt())}</SRS>"
        f"<ResX>{res!r}</ResX><ResY>{res!r}</ResY>"
        f"<MinX>{left!r}</MinX><MinY>{bottom!r}</MinY><MaxX>{right!r}</MaxX><MaxY>{top!r}</MaxY>"
        f"<BlockXSize>{grid.chunk_shape[1]}</BlockXSize><BlockYSize>{grid.chunk_shape[0]}</BlockYSize>"
        f"<Resampling>{spec.resampling}</Resampling>"
        f"{bands}</GDALTileIndexDataset>"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and math.isfinite(value) else repr(float(value))
