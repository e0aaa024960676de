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

from .bandgroups import ReadGroup, mask_group, read_plan
from .composite import StreamingReducer, fills_with_nodata, median, median_filled, median_strip_rows
from .gdal_env import gdal_env, worker_memory_gb
from .grid import Block, MosaicGrid
from .gti import SORT_FIELD, GtiFiles
from .masks import usable
from .nested_read import read_mapped_band, read_nested_band
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

    def group(
        self, group: ReadGroup, scene: dict, rows: slice, margin: int = 0, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The group's pixels of ``rows`` of the block, grown by ``margin`` pixels on every side the grid
        has room for (a dilation must see the clouds just outside the block); read into ``out`` if given."""
        window = self._window(rows, margin)
        if "signed" in scene:
            with signed_gti(self.spec, self.grid, group, [scene]) as gti:
                return gti.read(window=window, out=out)
        with rasterio.open(vsi_path(self.files.group_xml(group)), FILTER=_only(scene["item_id"])) as gti:
            return gti.read(window=window, out=out)

    def _window(self, rows: slice, margin: int) -> Window:
        height, width = self.grid.shape
        top, left = max(0, self.block.rows.start + rows.start - margin), max(0, self.block.cols.start - margin)
        bottom = min(height, self.block.rows.start + rows.stop + margin)
        right = min(width, self.block.cols.stop + margin)
        return Window(left, top, right - left, bottom - top)

    def pixels(self, scene: dict, rows: slice) -> np.ndarray:
        """(band, rows, x) of the spec's bands: one read per group of the scene's ``read_plan``."""
        groups = read_plan(self.spec, [scene])
        if len(groups) == 1:
            return self.group(groups[0], scene, rows)
        out = np.empty((len(self.spec.bands), rows.stop - rows.start, self.block.shape[1]), dtype=self.spec.dtype)
        for group in groups:
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
        whole = slice(0, self.block.shape[0])
        values = None
        if "assets" in scene:  # on its own grid where that nests in the mosaic's (nested_read)
            asset, path = scene["assets"][group.asset], scene.get("signed", {}).get(group.asset)
            window = self._window(whole, margin)
            values = read_nested_band(self.spec, self.grid, group.bands[0], asset, window, path)
            if values is None:  # another CRS: its own grid, GDAL's nearest picks shared by the scenes on it
                values = read_mapped_band(self.spec, self.grid, group.bands[0], asset, window, path)
        if values is None:
            values = self.group(group, scene, whole, margin)[0]
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
    """Per row strip, read group by read group (each band is read once per scene, whatever the others;
    a stack where every scene has it, ``read_plan``): every scene's strip of the group stacked, then the
    masked median band by band, sorting the stack in place. Strips are sized for the widest group's
    stack, so a block of single-band assets is usually one strip. The scenes' masks are made once on the
    whole block and kept as bits (a year of scenes: n x block / 8 bytes), unpacked once per strip.

    Reflectance (unsigned, nodata 0 or the max: ``fills_with_nodata``) takes no per-band mask: a masked
    entry is set to nodata by one AND (OR) with the strip's mask, and nodata marks the invalid in the
    sort. The count band ORs (ANDs) the filled bands. Other dtypes build each band's bool mask."""
    height, width = block.shape
    masks = {}
    for scene in scenes:
        mask = layers.usable(scene)
        masks[scene["item_id"]] = None if mask is None else np.packbits(mask, axis=1)
    budget = int(worker_memory_gb() * 1024**3 * MEDIAN_MEMORY_FRACTION)
    groups = read_plan(spec, scenes)
    widest = max(len(g.bands) for g in groups)
    itemsize = np.dtype(spec.dtype).itemsize
    filled = fills_with_nodata(spec.dtype, spec.nodata)
    flags = 2 * itemsize + 1 if filled else 3  # the strip's mask (and its fill), the count's accumulator
    rows = median_strip_rows(max(1, len(scenes)), width, itemsize, budget, bands=widest, flags=flags)
    out = np.empty((len(spec.bands), height, width), dtype=spec.dtype)
    count = np.zeros(block.shape, dtype=np.int32)
    for strip in _strips(height, rows):
        shape = (len(scenes), strip.stop - strip.start, width)
        usable = _strip_masks(scenes, masks, strip, shape)
        if filled:
            fill = None if usable is None else _nodata_fill(spec, usable)
            usable = None  # the fill holds it now
            seen = np.full(shape, spec.nodata_value, dtype=spec.dtype)
        else:
            seen = np.zeros(shape, dtype=bool)  # a usable observation of any band: the count band
        for group in groups:
            stack = np.empty((len(scenes), len(group.bands), *shape[1:]), dtype=spec.dtype)
            for n, scene in enumerate(scenes):
                layers.group(group, scene, strip, out=stack[n])
            for i, position in enumerate(group.positions):
                band = stack[:, i]
                if filled:
                    _fill_and_see(spec, band, fill, seen)
                    out[position, strip] = median_filled(band, spec.nodata, spec.dtype, overwrite_input=True)
                    continue
                valid = _holds_data(spec, band)
                if usable is not None:
                    valid &= usable
                seen |= valid
                out[position, strip] = median(band, valid, spec.dtype, spec.nodata, overwrite_input=True)
            del stack
        count[strip] = (seen != spec.nodata_value if filled else seen).sum(axis=0, dtype=np.int32)
    return out, count


def _strip_masks(scenes: list[dict], masks: dict, strip: slice, shape: tuple[int, int, int]) -> np.ndarray | None:
    """(n, rows, x) bool: each scene's usable pixels in the strip, None when no scene has a mask."""
    if all(bits is None for bits in masks.values()):
        return None
    usable = np.ones(shape, dtype=bool)
    for n, scene in enumerate(scenes):
        bits = masks[scene["item_id"]]
        if bits is not None:
            usable[n] = np.unpackbits(bits[strip], axis=1, count=shape[2]).view(bool)
    return usable


def _nodata_fill(spec: MosaicSpec, usable: np.ndarray) -> np.ndarray:
    """What turns masked entries into nodata: all ones where usable (an AND, nodata 0), or all ones
    where not (an OR, nodata the max)."""
    fill = (usable if spec.nodata_value == 0 else ~usable).view(np.uint8).astype(spec.dtype)
    return np.negative(fill, out=fill)  # 1 -> all ones, 0 -> 0


def _fill_and_see(spec: MosaicSpec, band: np.ndarray, fill: np.ndarray | None, seen: np.ndarray) -> None:
    """Masked entries of ``band`` (n, rows, x) become nodata, in place; ``seen`` keeps, per scene, whether
    any band so far holds a usable value (it stays nodata where none does)."""
    if spec.nodata_value == 0:
        if fill is not None:
            np.bitwise_and(band, fill, out=band)
        np.bitwise_or(seen, band, out=seen)
    else:
        if fill is not None:
            np.bitwise_or(band, fill, out=band)
        np.bitwise_and(seen, band, out=seen)
