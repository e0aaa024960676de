"""One GDAL Raster Tile Index (GTI) per time step: a GeoPackage of scene footprints plus a ``.gti``
XML file carrying the complete mosaic metadata (grid, SRS, data type, bands, nodata, resampling,
z-order), so GDAL never opens a scene just to learn its shape or the mosaic's.

The GTI's grid is exactly the mosaic grid, so pixel (row, col) of the GTI is pixel (row, col) of the
Zarr array and a block read is a plain window read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
import pyogrio
from odc.geo import geom
from pyproj import CRS

from .bandgroups import ReadGroup, index_groups, shares_grid, stacks, stacks_in
from .catalog import MISSING, scene_assets
from .grid import MosaicGrid
from .object_store import Location, fetch, is_remote, join, local_cache_dir, upload, vsi_path
from .spec import Band, MosaicSpec
from .stac_meta import BandMetadata

INDEX_LAYER = "tiles"
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
    """Where a time step's index lives: the vector index and the XML that GDAL opens, one XML per read
    group (``bandgroups``): group 0 is ``<step>.gti``, group k ``<step>.g<k>.gti``, all over one index.

    Both are local paths or object-store URLs; GDAL opens either through ``vsi_path``.
    """

    index: Location
    xml: Location

    @classmethod
    def for_step(cls, folder: Location, step_key: str) -> GtiFiles:
        return cls(join(folder, f"{step_key}.gpkg"), join(folder, f"{step_key}.gti"))

    def group_xml(self, group: ReadGroup) -> Location:
        if group.number == 0 and not group.members:
            return self.xml
        name = str(self.xml).removesuffix(".gti") + f".{group.name}.gti"
        return Path(name) if isinstance(self.xml, Path) else name


@functools.lru_cache(maxsize=256)
def _wkt(crs: str) -> str:
    return CRS.from_user_input(crs).to_wkt()


def tile_location(spec: MosaicSpec, group: ReadGroup, asset: dict, href: str | None = None) -> str:
    """The dataset name GDAL opens for one scene's asset, exposing exactly the group's bands in order.

    ``asset``: the scene table's entry (href, own grid, declared band metadata); ``href`` replaces its
    href (a writer's freshly signed one). The plain case (raw numbers, no source nodata other than the
    mosaic's) is a ``vrt://`` connection string: band selection, and ``ovr=NONE`` unless the spec allows
    overviews, so a coarser grid still reads full resolution. Otherwise an inline VRT on the asset's own
    grid that maps the source nodata to the mosaic's and, for ``values: physical``, applies scale and offset.
    """
    path = href or asset["href"]
    metadata = _metadata(group, asset)
    # a signed href stays in an inline VRT: vrt:// ends its path at the first '?', dropping the token
    plain = href is None and spec.values == "raw" and all(m.nodata is None or m.nodata == spec.nodata for m in metadata)
    if plain:
        options = ["bands=" + ",".join(str(b.index) for b in group.bands)]
        if not spec.use_overviews:
            options.append("ovr=NONE")
        return f"vrt://{path}?{'&'.join(options)}"
    return _inline_vrt(spec, asset, [(path, band, meta) for band, meta in zip(group.bands, metadata)])


def stack_location(spec: MosaicSpec, stack: ReadGroup, assets: dict, hrefs: dict[str, str] | None = None) -> str:
    """One scene's inline VRT of a stack's bands (``bandgroups.stacks``), each from its own asset's file,
    on the grid they share; empty when they do not share one (``bandgroups.shares_grid``): that scene
    is read group by group. Each band is the same source as in its own group's ``tile_location``."""
    if not shares_grid(stack, assets):
        return ""
    sources = []
    for band in stack.bands:
        asset = assets[band.asset]
        (meta,) = _metadata(ReadGroup(0, band.asset, stack.resampling, (band,), (0,)), asset)
        sources.append(((hrefs or {}).get(band.asset) or asset["href"], band, meta))
    return _inline_vrt(spec, assets[stack.bands[0].asset], sources)


def scene_location(spec: MosaicSpec, group: ReadGroup, assets: dict, hrefs: dict[str, str] | None = None) -> str:
    """A scene's dataset name for any index group (``assets``: its scene-table entries; ``hrefs``:
    signed paths by asset); empty for an asset the item lacks (``catalog.MISSING``): the writer refuses
    that scene before reading (``writer.verify_scenes``), so GDAL never opens it."""
    if group.members:
        return stack_location(spec, group, assets, hrefs)
    asset = assets[group.asset]
    if MISSING in asset:
        return ""
    return tile_location(spec, group, asset, (hrefs or {}).get(group.asset))


def _metadata(group: ReadGroup, asset: dict) -> list[BandMetadata]:
    metadata = [BandMetadata.from_json(asset.get("bands", {}).get(str(b.index), {})) for b in group.bands]
    if not group.positions:  # the mask band: raw class values, never scaled
        metadata = [BandMetadata(nodata=m.nodata) for m in metadata]
    return metadata


def _inline_vrt(spec: MosaicSpec, grid_of: dict, sources: list[tuple[str, Band, BandMetadata]]) -> str:
    """A VRT on ``grid_of``'s grid (an asset entry), band n from ``sources[n-1]``: (path, band, metadata)."""
    a, b, c, d, e, f = grid_of["transform"]
    height, width = grid_of["shape"]
    dtype = GDAL_TYPES[spec.dtype]
    rect = f'xOff="0" yOff="0" xSize="{width}" ySize="{height}"'
    # OVERVIEW_LEVEL=NONE hides the file's overviews, so the VRT has no implicit ones either
    options = "" if spec.use_overviews else '<OpenOptions><OOI key="OVERVIEW_LEVEL">NONE</OOI></OpenOptions>'
    bands = []
    for n, (path, band, meta) in enumerate(sources, start=1):
        scaled = spec.values == "physical" and (meta.scale is not None or meta.offset is not None)
        source = f'<SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>{options}'
        source += f"<SourceBand>{band.index}</SourceBand><SrcRect {rect}/><DstRect {rect}/>"
        if meta.nodata == spec.nodata and not scaled:
            # the source's nodata is the mosaic's: a plain copy (a ComplexSource would compare every pixel
            # with a nodata it maps onto itself, ~a fifth of a stacked read)
            bands.append(
                f'<VRTRasterBand dataType="{dtype}" band="{n}"><NoDataValue>{_number(spec.nodata)}</NoDataValue>'
                f"<SimpleSource>{source}</SimpleSource></VRTRasterBand>"
            )
            continue
        # the declared source nodata; undeclared (Planetary Computer's Sentinel-2), the file's own nodata or
        # mask decides at read time (UseMaskBand), so no scene is opened in the catalog step to learn it
        if meta.nodata is not None:
            valid = f"<NODATA>{_number(meta.nodata)}</NODATA>"
        else:
            valid = "<UseMaskBand>true</UseMaskBand>"
        scaling = ""
        if scaled:
            scale, offset = _number(meta.scale or 1.0), _number(meta.offset or 0.0)
            scaling = f"<ScaleOffset>{offset}</ScaleOffset><ScaleRatio>{scale}</ScaleRatio>"
        bands.append(
            f'<VRTRasterBand dataType="{dtype}" band="{n}"><NoDataValue>{_number(spec.nodata)}</NoDataValue>'
            f"<ComplexSource>{source}{valid}{scaling}</ComplexSource></VRTRasterBand>"
        )
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{escape(_wkt(grid_of["crs"]))}</SRS>'
        f"<GeoTransform>{c!r},{a!r},{b!r},{f!r},{d!r},{e!r}</GeoTransform>{''.join(bands)}</VRTDataset>"
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
    groups = index_groups(spec) + stacks(spec, scene_assets(scenes))
    index = _index_frame(spec, grid, scenes, groups)
    if not is_remote(files.index):
        _write_local(spec, grid, index, Path(files.index), Path(files.xml), groups)
        return len(index)
    with tempfile.TemporaryDirectory(prefix="gti-") as tmp:
        local = GtiFiles.for_step(Path(tmp), "step")
        index.to_file(local.index, layer=INDEX_LAYER, driver="GPKG", engine="pyogrio")
        upload(Path(local.index), files.index)
        for group in groups:
            Path(local.group_xml(group)).write_text(gti_xml(spec, grid, files.index, group))
            upload(Path(local.group_xml(group)), files.group_xml(group))
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
    fields = pyogrio.read_info(str(local.index), layer=INDEX_LAYER)["fields"]
    for group in index_groups(spec) + stacks_in(spec, fields):
        xml, path = gti_xml(spec, grid, local.index, group), Path(local.group_xml(group))
        if not path.exists() or path.read_text() != xml:
            tmp = Path(str(path) + f".{os.getpid()}.tmp")
            tmp.write_text(xml)
            tmp.replace(path)
    return local


def _index_frame(
    spec: MosaicSpec, grid: MosaicGrid, scenes: gpd.GeoDataFrame, groups: tuple[ReadGroup, ...]
) -> gpd.GeoDataFrame:
    assets = [json.dumps(a, sort_keys=True) for a in scene_assets(scenes)]
    columns: dict[str, list] = {
        group.location_field: [scene_location(spec, group, json.loads(a)) for a in assets] for group in groups
    }
    return gpd.GeoDataFrame(
        {
            **columns,
            SORT_FIELD: priorities(spec, scenes) if len(scenes) else np.array([], dtype=np.int64),
            "item_id": scenes["item_id"].to_list(),
            "collection": scenes["collection"].to_list(),
            # what STAC promised about each scene, so a writer can check the files against it (writer.verify_scenes)
            # and sign their hrefs again just before reading (stac.modifier)
            "hrefs": scenes["hrefs"].to_list(),
            "assets": assets,
        },
        geometry=scene_footprints(grid, scenes),
        crs=grid.geobox.crs.to_wkt(),
    )


def _write_local(
    spec: MosaicSpec,
    grid: MosaicGrid,
    index: gpd.GeoDataFrame,
    index_path: Path,
    xml: Path,
    groups: tuple[ReadGroup, ...],
) -> None:
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_index = index_path.with_name(index_path.name + ".tmp.gpkg")
    tmp_index.unlink(missing_ok=True)
    index.to_file(tmp_index, layer=INDEX_LAYER, driver="GPKG", engine="pyogrio")
    tmp_index.replace(index_path)
    files = GtiFiles(index_path, xml)
    for group in groups:
        path = Path(files.group_xml(group))
        tmp_xml = path.with_name(path.name + ".tmp")
        tmp_xml.write_text(gti_xml(spec, grid, index_path, group))
        tmp_xml.replace(path)


def gti_xml(spec: MosaicSpec, grid: MosaicGrid, index_path: Location | str, group: ReadGroup) -> str:
    """The XML of one read group's GTI: the mosaic grid, the group's bands (named), its resampling."""
    left, bottom, right, top = grid.geobox.extent.boundingbox
    res = abs(grid.geobox.resolution.x)
    bands = "".join(
        f'<Band band="{n}" dataType="{GDAL_TYPES[spec.dtype]}"><Description>{escape(b.name)}</Description>'
        f"<NoDataValue>{_number(spec.nodata)}</NoDataValue></Band>"
        for n, b in enumerate(group.bands, start=1)
    )
    return (
        "<GDALTileIndexDataset>"
        f"<IndexDataset>{escape(vsi_path(index_path))}</IndexDataset>"
        f"<IndexLayer>{INDEX_LAYER}</IndexLayer>"
        f"<LocationField>{group.location_field}</LocationField>"
        f"<SortField>{SORT_FIELD}</SortField><SortFieldAsc>true</SortFieldAsc>"
        f"<SRS>{escape(grid.geobox.crs.to_wkt())}</SRS>"
        f"<ResX>{res!r}</ResX><ResY>{res!r}</ResY>"
        f"<MinX>{left!r}</MinX><MinY>{bottom!r}</MinY><MaxX>{right!r}</MaxX><MaxY>{top!r}</MaxY>"
        f"<BlockXSize>{grid.chunk_shape[1]}</BlockXSize><BlockYSize>{grid.chunk_shape[0]}</BlockYSize>"
        f"<Resampling>{group.resampling}</Resampling>"
        f"{bands}</GDALTileIndexDataset>"
    )


def _number(value: float) -> str:
    """A number as GDAL reads it in XML: integers bare, NaN as 'nan'."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)
