"""One GDAL Raster Tile Index (GTI) per time step: a GeoPackage of scene footprints plus a ``.gti``
XML file carrying the complete mosaic metadata (grid, SRS, data type, bands, nodata, resampling,
z-order), so GDAL never opens a scene just to learn its shape or the mosaic's.

The GTI's grid is exactly the mosaic grid, so pixel (row, col) of the GTI is pixel (row, col) of the
Zarr array and a block read is a plain window read.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
from odc.geo import geom
from pyproj import CRS

from .grid import MosaicGrid
from .object_store import Location, fetch, is_remote, join, local_cache_dir, upload, vsi_path
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
    """Where a time step's index lives: the vector index and the XML that GDAL opens.

    Both are local paths or object-store URLs; GDAL opens either through ``vsi_path``.
    """

    index: Location
    xml: Location

    @classmethod
    def for_step(cls, folder: Location, step_key: str) -> GtiFiles:
        return cls(join(folder, f"{step_key}.gpkg"), join(folder, f"{step_key}.gti"))


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
    """Raster bounds of each scene in the mosaic CRS, grown by one pixel, as shapely.

    Edges are densified into 32 segments before reprojection: a curved edge then departs from its
    chords by far less than a pixel, at a fraction of the cost of one vertex per pixel."""
    res = abs(grid.geobox.resolution.x)
    shapes = []
    for transform, shape, crs in zip(scenes["transform"], scenes["shape"], scenes["crs"]):
        a, _, c, _, e, f = transform
        h, w = shape
        xs, ys = sorted((c, c + a * w)), sorted((f, f + e * h))
        box = geom.box(xs[0], ys[0], xs[1], ys[1], crs)
        if box.crs != grid.geobox.crs:
            box = box.to_crs(grid.geobox.crs, resolution=max(xs[1] - xs[0], ys[1] - ys[0]) / 32)
        shapes.append(box.buffer(res).geom)
    return shapes


def build_gti(spec: MosaicSpec, grid: MosaicGrid, scenes: gpd.GeoDataFrame, files: GtiFiles) -> int:
    """Write the index and its XML (each whole or not at all); returns the number of tiles indexed.

    For an object-store location both are built in a local temp folder and uploaded (index first),
    the XML naming the index by its ``/vsi…`` path so any pod can open it.
    """
    index = _index_frame(spec, grid, scenes)
    if not is_remote(files.index):
        _write_local(spec, grid, index, Path(files.index), Path(files.xml))
        return len(index)
    with tempfile.TemporaryDirectory(prefix="gti-") as tmp:
        local = GtiFiles.for_step(Path(tmp), "step")
        index.to_file(local.index, layer=INDEX_LAYER, driver="GPKG", engine="pyogrio")
        Path(local.xml).write_text(gti_xml(spec, grid, files.index))
        upload(Path(local.index), files.index)
        upload(Path(local.xml), files.xml)
    return len(index)


def staged_locally(spec: MosaicSpec, grid: MosaicGrid, files: GtiFiles) -> GtiFiles:
    """The GTI as local files for a writer: the index fetched once per version, an XML naming that copy.

    Why not read the GeoPackage over /vsis3/: SQLite over HTTP costs a round trip per page, and with
    the writer's GDAL_DISABLE_READDIR_ON_OPEN (which spares a request per scene) GDAL reads it as
    malformed. Scenes themselves are still read straight from the object store. Local GTIs pass through.
    """
    if not is_remote(files.index):
        return files
    local = GtiFiles.for_step(local_cache_dir(str(files.index)).parent, Path(str(files.index)).stem)
    try:
        fetch(files.index, Path(local.index))
    except FileNotFoundError:
        return files  # no index: the time step has no scenes, the writer finds none
    xml = gti_xml(spec, grid, local.index)
    if not Path(local.xml).exists() or Path(local.xml).read_text() != xml:
        tmp = Path(str(local.xml) + f".{os.getpid()}.tmp")
        tmp.write_text(xml)
        tmp.replace(local.xml)
    return local


def _index_frame(spec: MosaicSpec, grid: MosaicGrid, scenes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    locations = [
        tile_location(spec, json.loads(h), tuple(s), list(t), c)
        for h, s, t, c in zip(scenes["hrefs"], scenes["shape"], scenes["transform"], scenes["crs"])
    ]
    return gpd.GeoDataFrame(
        {
            LOCATION_FIELD: locations,
            SORT_FIELD: priorities(spec, scenes) if len(scenes) else np.array([], dtype=np.int64),
            "item_id": scenes["item_id"].to_list(),
            # what STAC promised about each scene, so a writer can check the files against it (writer.verify_scenes)
            "hrefs": scenes["hrefs"].to_list(),
            "scene_crs": scenes["crs"].to_list(),
            "scene_shape": [json.dumps([int(v) for v in s]) for s in scenes["shape"]],
            "scene_transform": [json.dumps([float(v) for v in t]) for t in scenes["transform"]],
        },
        geometry=scene_footprints(grid, scenes),
        crs=grid.geobox.crs.to_wkt(),
    )


def _write_local(spec: MosaicSpec, grid: MosaicGrid, index: gpd.GeoDataFrame, index_path: Path, xml: Path) -> None:
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_index = index_path.with_name(index_path.name + ".tmp.gpkg")
    tmp_index.unlink(missing_ok=True)
    index.to_file(tmp_index, layer=INDEX_LAYER, driver="GPKG", engine="pyogrio")
    tmp_index.replace(index_path)
    tmp_xml = xml.with_name(xml.name + ".tmp")
    tmp_xml.write_text(gti_xml(spec, grid, index_path))
    tmp_xml.replace(xml)


def gti_xml(spec: MosaicSpec, grid: MosaicGrid, index_path: Location) -> str:
    left, bottom, right, top = grid.geobox.extent.boundingbox
    res = abs(grid.geobox.resolution.x)
    bands = "".join(
        f'<Band band="{n}" dataType="{GDAL_TYPES[spec.dtype]}"><Description>{escape(b.name)}</Description>'
        f"<NoDataValue>{_number(spec.nodata)}</NoDataValue></Band>"
        for n, b in enumerate(spec.bands, start=1)
    )
    return (
        "<GDALTileIndexDataset>"
        f"<IndexDataset>{escape(vsi_path(index_path))}</IndexDataset>"
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
