"""A block composited scene by scene: masks (``spec.mask``), temporal reducers and the count band.

Why not one GTI read, as a plain mosaic does: GDAL's GTI composites by z-order and nodata only; a mask
from another asset (Sentinel-2's 20 m SCL) and a median over every observation need each scene's own
pixels on the block's grid. Each layer is still read through the time step's GTI, left to one scene
by its ``FILTER`` (the same warp, resampling and overview policy as the plain path), so the pixels of
a scene are the same whichever way the block is composited.

Memory stays bounded whatever the scene count: first_valid, mean, min, max and the count stream one
scene at a time (O(block)); the median holds every observation of a row strip, sized from the worker's
memory (``composite.median_strip_rows``). Scenes are taken in item-id order (z-order for first_valid),
so the bytes never depend on the order scenes arrived in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import rasterio
from rasterio.windows import Window

from .bandgroups import ReadGroup, mask_group, read_groups
from .composite import StreamingReducer, median, median_strip_rows
from .gdal_env import gdal_env, worker_memory_gb
from .grid import Block, MosaicGrid
from .gti import SORT_FIELD, GtiFiles
from .masks import usable
from .object_store import vsi_path
from .signed_read import signed_gti
from .spec import MosaicSpec

MEDIAN_MEMORY_FRACTION = 0.35  # of the worker's memory: one strip of one group's stack, a band's sorted copy


def needs_scene_reads(spec: MosaicSpec) -> bool:
    """Whether a block needs this path: a mask, a reducer or the count band (else one GTI read does)."""
    return spec.mask is not None or spec.composite.method != "first_valid" or spec.composite.count_band


def _only(item_id: str) -> str:
    return "item_id = '" + item_id.replace("'", "''") + "'"


class SceneLayers:
    """Reads one scene's rows of the block, per read group, through the GTI left to that scene."""

    def __init__(self, spec: MosaicSpec, grid: MosaicGrid, files: GtiFiles, block: Block) -> None:
        self.spec, self.grid, self.files, self.block = spec, grid, files, block

    def group(self, group: ReadGroup, scene: dict, rows: slice, margin: int = 0) -> np.ndarray:
        """The group's pixels of ``rows`` of the block, grown by ``margin`` pixels on every side the grid
        has room for (a dilation must see the clouds just outside the block)."""
        height, width = self.grid.shape
        top, left = max(0, self.block.rows.start + rows.start - margin), max(0, self.block.cols.start - margin)
        bottom = min(height, self.block.rows.start + rows.stop + margin)
        right = min(width, self.block.cols.stop + margin)
        window = Window(left, top, right - left, bottom - top)
        if "signed" in scene:
            with signed_gti(self.spec, self.grid, group, [scene]) as gti:
                return gti.read(window=window)
        with rasterio.open(vsi_path(self.files.group_xml(group)), FILTER=_only(scene["item_id"])) as gti:
            return gti.read(window=window)

    def pixels(self, scene: dict, rows: slice) -> np.ndarray:
        """(band, rows, x) of the spec's bands."""
        out = np.empty((len(self.spec.bands), rows.stop - rows.start, self.block.shape[1]), dtype=self.spec.dtype)
        for group in read_groups(self.spec):
            out[list(group.positions)] = self.group(group, scene, rows)
        return out

    def usable(self, scene: dict) -> np.ndarray | None:
        """(y, x) of the whole block: what the scene's mask band lets through (None without a mask).
        Always the whole block and a margin as wide as the dilation, so a dilation never stops at a
        strip's or a block's edge: the bytes do not depend on how the grid is cut into partitions."""
        group = mask_group(self.spec)
        if group is None:
            return None
        margin = self.spec.mask.dilate_pixels
        values = self.group(group, scene, slice(0, self.block.shape[0]), margin)[0]
        top = self.block.rows.start - max(0, self.block.rows.start - margin)
        left = self.block.cols.start - max(0, self.block.cols.start - margin)
        height, width = self.block.shape
        return usable(self.spec, self.spec.mask, values)[top : top + height, left : left + width]


def composite_block(
    spec: MosaicSpec, grid: MosaicGrid, files: GtiFiles, block: Block, scenes: list[dict]
) -> np.ndarray:
    """(band, y, x) of the block's composite, ``valid_count`` last when the spec asks for it."""
    layers = SceneLayers(spec, grid, files, block)
    by_id = sorted(scenes, key=lambda s: s["item_id"])
    with gdal_env(stac=spec.stac):
        if spec.composite.method == "median":
            data, count = _median(spec, block, layers, by_id)
        else:
            data, count = _streamed(spec, block, layers, by_id)
    if not spec.composite.count_band:
        return data
    limit = np.iinfo(spec.dtype).max if np.dtype(spec.dtype).kind in "ui" else np.finfo(spec.dtype).max
    return np.concatenate([data, np.minimum(count, limit).astype(spec.dtype)[np.newaxis]])


def _holds_data(spec: MosaicSpec, pixels: np.ndarray) -> np.ndarray:
    """(bands, y, x): where each band holds data. A band's own nodata is no observation of that band,
    so a median never takes a fill value (a 20 m band's footprint edge under 10 m bands)."""
    return ~np.isnan(pixels) if np.isnan(spec.nodata) else pixels != spec.nodata_value


def _observations(spec: MosaicSpec, pixels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(bands, y, x): usable observations of each band (its data, under the scene's mask)."""
    holds = _holds_data(spec, pixels)
    if mask is not None:
        holds &= mask
    return holds


def _streamed(spec, block, layers, scenes) -> tuple[np.ndarray, np.ndarray]:
    """first_valid (z-order, worst first: the best scene's usable pixels are drawn last), mean, min, max:
    one scene's pixels and mask at a time. The count: pixels where any band is a usable observation."""
    whole = slice(0, block.shape[0])
    shape = (len(spec.bands), *block.shape)
    count = np.zeros(block.shape, dtype=np.int32)
    method = spec.composite.method
    if method != "first_valid":
        reducer = StreamingReducer(method, shape, spec.dtype, spec.nodata)
        for scene in scenes:
            pixels = layers.pixels(scene, whole)
            valid = _observations(spec, pixels, layers.usable(scene))
            reducer.add(pixels, valid)
            count += valid.any(axis=0)
        return reducer.result(), count
    out = np.full(shape, spec.nodata_value, dtype=spec.dtype)
    for scene in sorted(scenes, key=lambda s: int(s[SORT_FIELD])):
        pixels = layers.pixels(scene, whole)
        valid = _observations(spec, pixels, layers.usable(scene))
        np.copyto(out, pixels, where=valid)
        count += valid.any(axis=0)
    return out, count


def _strips(height: int, rows: int) -> Iterator[slice]:
    for start in range(0, height, rows):
        yield slice(start, min(start + rows, height))


def _median(spec, block, layers, scenes) -> tuple[np.ndarray, np.ndarray]:
    """Per row strip, read group by read group (each band is read once per scene, whatever the others):
    every scene's strip of the group stacked, then the masked median band by band, sorting the stack in
    place. Strips are sized for the widest group's stack, so a block of single-band assets is usually
    one strip. The scenes' masks are made once on the whole block and kept as bits (a year of scenes:
    n x block / 8 bytes), unpacked once per strip for every group."""
    height, width = block.shape
    masks = {}
    for scene in scenes:
        mask = layers.usable(scene)
        masks[scene["item_id"]] = None if mask is None else np.packbits(mask, axis=1)
    budget = int(worker_memory_gb() * 1024**3 * MEDIAN_MEMORY_FRACTION)
    groups = read_groups(spec)
    widest = max(len(g.bands) for g in groups)
    rows = median_strip_rows(max(1, len(scenes)), width, np.dtype(spec.dtype).itemsize, budget, bands=widest, flags=3)
    out = np.empty((len(spec.bands), height, width), dtype=spec.dtype)
    count = np.zeros(block.shape, dtype=np.int32)
    for strip in _strips(height, rows):
        shape = (len(scenes), strip.stop - strip.start, width)
        usable = np.ones(shape, dtype=bool)
        for n, scene in enumerate(scenes):
            bits = masks[scene["item_id"]]
            if bits is not None:
                usable[n] = np.unpackbits(bits[strip], axis=1, count=width).view(bool)
        seen = np.zeros(shape, dtype=bool)  # a usable observation of any band: the count band
        for group in groups:
            stack = np.empty((len(scenes), len(group.bands), *shape[1:]), dtype=spec.dtype)
            for n, scene in enumerate(scenes):
                stack[n] = layers.group(group, scene, strip)
            for i, position in enumerate(group.positions):
                valid = _holds_data(spec, stack[:, i])
                valid &= usable
                seen |= valid
                out[position, strip] = median(stack[:, i], valid, spec.dtype, spec.nodata, overwrite_input=True)
            del stack
        count[strip] = seen.sum(axis=0, dtype=np.int32)
    return out, count
