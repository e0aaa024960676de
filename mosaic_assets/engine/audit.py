"""Audits of what is in the store, independent of the code that wrote it (the asset checks call these).

- ``chunk_audit``: every chunk of a block that a scene's valid-data footprint (the STAC geometry)
  covers must exist in the store; chunks no footprint touches are legitimately absent.
- ``coverage_audit``: the block's valid-pixel fraction in the store against the fraction of the block
  that the footprints cover: a read that failed silently (nodata where a scene promised data) shows up
  as a valid fraction well below the coverage.
- ``georeferencing_problems``: the store's grid fingerprint and its CF georeferencing (what rioxarray
  and GDAL read) against the spec's grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import fsspec
import geopandas as gpd
import numpy as np
import rasterio
import shapely
import zarr
from odc.geo import geom
from odc.geo.crs import CRS
from shapely.geometry import box

from .gdal_env import gdal_env
from .grid import Block, MosaicGrid
from .object_store import storage_options, vsi_path
from .spec import CubeSpec, MosaicSpec
from .store import FINGERPRINT_ATTR, VARIABLE, WHOLE_MOSAIC, Placement, differences, fingerprint

# A chunk counts as "covered" only where the footprint, shrunk by this many pixels, still reaches it:
# STAC geometries are often drawn a pixel or two generously around the data.
FOOTPRINT_MARGIN_PIXELS = 2
DENSIFY_DEGREES = 0.01  # longest lon/lat footprint edge before projection


@dataclass(frozen=True)
class ChunkAudit:
    expected: list[tuple[int, int]] = field(default_factory=list)  # (chunk row, chunk col) a footprint covers
    present: list[tuple[int, int]] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing


def _footprints(grid: MosaicGrid, scenes: gpd.GeoDataFrame, block: Block):
    """Union of the scenes' valid-data footprints (STAC geometry, lon/lat) in the grid CRS, as far as
    it matters to ``block``: only scenes whose lon/lat bounds reach the block (grown by a margin wider
    than the edge band the coverage audit buffers) are projected.

    Why: projecting and uniting every scene of the time step, twice per partition, was 75 % of a
    ranged chunk run (odc-geo's per-segment densify in Python; quick benchmark: 1 s per call). A scene
    left out cannot reach the block, so the union inside the block and its edges near it are unchanged.
    Lon/lat edges are densified to ``DENSIFY_DEGREES`` (~1 km): the chord then departs from the
    projected curve by far less than a pixel."""
    res = abs(grid.geobox.resolution.x)
    near = _block_box(grid, block).buffer(4 * FOOTPRINT_MARGIN_PIXELS * res, join_style="mitre")
    box_edge = max(near.bounds[2] - near.bounds[0], near.bounds[3] - near.bounds[1])
    lonlat_bounds = geom.Geometry(near, grid.geobox.crs).to_crs("EPSG:4326", resolution=box_edge / 32).boundingbox
    candidates = scenes.geometry.iloc[scenes.sindex.query(box(*lonlat_bounds))]
    shapes = np.array([g for g in candidates if g is not None and not g.is_empty], dtype=object)
    if not len(shapes):
        return shapely.Polygon()
    to_grid = CRS("EPSG:4326").transformer_to_crs(grid.geobox.crs)
    projected = shapely.transform(
        shapely.segmentize(shapes, DENSIFY_DEGREES),
        lambda xy: np.column_stack(to_grid(xy[:, 0], xy[:, 1])),
    )
    return shapely.union_all(projected)


def _chunk_boxes(grid: MosaicGrid, block: Block):
    cy, cx = grid.chunk_shape
    affine = grid.geobox.affine
    for r in range(block.rows.start // cy, -(-block.rows.stop // cy)):
        for c in range(block.cols.start // cx, -(-block.cols.stop // cx)):
            y0, y1 = r * cy, min((r + 1) * cy, grid.shape[0])
            x0, x1 = c * cx, min((c + 1) * cx, grid.shape[1])
            (ax, ay), (bx, by) = affine * (x0, y0), affine * (x1, y1)
            yield (r, c), box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def _chunk_keys(placement: Placement, time_index: int, row: int, col: int) -> list[str]:
    """The object keys of a source's chunks at (row, col): one per band chunk it writes (a cube with
    several time-varying sources stores a band per chunk; a static source a variable per band)."""
    if placement.static:
        return [f"{v}/c/{row}/{col}" for v in placement.static_variables]
    bands = max(1, placement.bands)
    return [
        f"{VARIABLE}/c/{time_index}/{b}/{row}/{col}"
        for b in range(placement.band_offset, placement.band_offset + bands)
    ]


def chunk_audit(
    grid: MosaicGrid,
    store: str,
    time_index: int,
    block: Block,
    scenes: gpd.GeoDataFrame,
    masked: bool = False,
    placement: Placement = WHOLE_MOSAIC,
) -> ChunkAudit:
    """``masked``: the mosaic has a cloud mask, so a covered chunk may be legitimately empty (all cloud):
    the expected chunks are listed, none counts as missing. A chunk of a cube's source is present when
    any of its band chunks is."""
    res = abs(grid.geobox.resolution.x)
    covered = _footprints(grid, scenes, block).buffer(-FOOTPRINT_MARGIN_PIXELS * res)
    fs, root = fsspec.core.url_to_fs(store, **(storage_options(store) or {}))
    expected, present, missing = [], [], []
    for index, chunk_box in _chunk_boxes(grid, block):
        exists = any(fs.exists(f"{root.rstrip('/')}/{k}") for k in _chunk_keys(placement, time_index, *index))
        if exists:
            present.append(index)
        if covered.intersects(chunk_box):
            expected.append(index)
            if not exists and not masked:
                missing.append(index)
    return ChunkAudit(expected, present, missing)


@dataclass(frozen=True)
class CoverageAudit:
    valid_fraction: float
    footprint_fraction: float
    tolerance: float
    masked: bool = False  # a cloud mask: the footprints bound the valid pixels from above only

    @property
    def passed(self) -> bool:
        if self.masked:
            return self.valid_fraction <= self.footprint_fraction + self.tolerance
        return self.valid_fraction >= self.footprint_fraction - self.tolerance


def coverage_audit(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    time_index: int,
    block: Block,
    scenes: gpd.GeoDataFrame,
    placement: Placement = WHOLE_MOSAIC,
) -> CoverageAudit:
    """Valid fraction of the block in the store (any of the spec's bands valid) vs the footprints' share
    of the block.

    The tolerance is the share of the block within two pixels of a footprint edge, plus 1 %: pixels a
    generously drawn footprint includes but no scene fills."""
    options = storage_options(store)
    if placement.static:
        data = np.stack(
            [
                np.asarray(zarr.open_array(store, path=v, mode="r", storage_options=options)[block.rows, block.cols])
                for v in placement.static_variables
            ]
        )
    else:
        array = zarr.open_array(store, path=VARIABLE, mode="r", storage_options=options)
        bands = slice(placement.band_offset, placement.band_offset + len(spec.band_names))
        data = np.asarray(array[time_index, bands, block.rows, block.cols])
    valid = float(spec.valid_mask(data).mean())
    block_box = _block_box(grid, block)
    footprints = _footprints(grid, scenes, block)
    res = abs(grid.geobox.resolution.x)
    coverage = footprints.intersection(block_box).area / block_box.area
    edge = footprints.boundary.buffer(FOOTPRINT_MARGIN_PIXELS * res).intersection(block_box).area / block_box.area
    return CoverageAudit(round(valid, 6), round(coverage, 6), round(edge + 0.01, 6), spec.mask is not None)


def _block_box(grid: MosaicGrid, block: Block):
    affine = grid.geobox.affine
    (ax, ay), (bx, by) = affine * (block.cols.start, block.rows.start), affine * (block.cols.stop, block.rows.stop)
    return box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def georeferencing_problems(spec: MosaicSpec | CubeSpec, grid: MosaicGrid, store: str) -> list[str]:
    """What about the store's grid disagrees with the spec (empty: it matches)."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    problems = []
    group = zarr.open_group(store, mode="r", storage_options=storage_options(store))
    found = json.loads(group.attrs.get(FINGERPRINT_ATTR, "null") or "null")
    wanted = json.loads(json.dumps(fingerprint(spec, grid), sort_keys=True))
    if found != wanted:
        diffs = differences(found, wanted) if found else ["<no fingerprint>"]
        problems.append(f"grid fingerprint differs in {diffs}")
    ds = xr.open_zarr(store, consolidated=False, mask_and_scale=False, storage_options=storage_options(store))
    var = ds[VARIABLE]
    crs = var.rio.crs
    if crs is None or not grid.geobox.crs.proj.equals(crs.to_wkt(), ignore_axis_order=True):
        problems.append(f"CF CRS is {crs}, the spec's grid is {grid.geobox.crs}")
    transform = tuple(var.rio.transform())[:6]
    if not np.allclose(transform, tuple(grid.geobox.affine)[:6], rtol=0, atol=1e-6 * spec.resolution):
        problems.append(f"CF transform is {transform}, the spec's grid is {tuple(grid.geobox.affine)[:6]}")
    if tuple(var.shape[2:]) != grid.shape:
        problems.append(f"y/x shape is {tuple(var.shape[2:])}, the spec's grid is {grid.shape}")
    # and as GDAL's Zarr driver sees it (it reads the spatial_ref GeoTransform / WKT, not the coordinates)
    with gdal_env(), rasterio.open(f'ZARR:"{vsi_path(store)}":/{VARIABLE}') as gdal_view:
        if gdal_view.crs is None or not grid.geobox.crs.proj.equals(gdal_view.crs.to_wkt(), ignore_axis_order=True):
            problems.append(f"GDAL reads CRS {gdal_view.crs}, the spec's grid is {grid.geobox.crs}")
        gdal_transform = tuple(gdal_view.transform)[:6]
        if not np.allclose(gdal_transform, tuple(grid.geobox.affine)[:6], rtol=0, atol=1e-6 * spec.resolution):
            problems.append(
                f"GDAL reads transform {gdal_transform}, the spec's grid is {tuple(grid.geobox.affine)[:6]}"
            )
    return problems
