"""Pixel-for-pixel agreement of two mosaics, strip by strip (bounded memory), with the differences
sorted by cause so a seam can be told from a bug:

- ``mask_edge``: one side is nodata, the other is not (footprint edges: odc-stac clips scenes to the
  item geometry, GTI to the raster bounds);
- ``neighbour_pick``: all bands equal ours one pixel away (nearest-neighbour picks that differ where
  a reprojected source pixel centre sits on the rounding boundary, e.g. per-chunk vs per-block warps);
- ``other``: anything else (a wrong z-order or a real bug).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import rasterio
import zarr
from rasterio.windows import Window

from mosaic_assets.engine.store import VARIABLE

Reader = Callable[[int, int], np.ndarray]  # (row start, row stop) -> (band, rows, x)

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass
class Agreement:
    pixels: int = 0
    valid_pixels: int = 0  # valid on either side
    equal: int = 0
    mask_edge: int = 0
    neighbour_pick: int = 0
    other: int = 0

    @property
    def equal_fraction(self) -> float:
        return self.equal / self.pixels if self.pixels else 1.0

    @property
    def equal_valid_fraction(self) -> float:
        return 1 - (self.pixels - self.equal) / self.valid_pixels if self.valid_pixels else 1.0

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "equal_fraction": self.equal_fraction,
            "equal_valid_fraction": self.equal_valid_fraction,
        }


def zarr_reader(store: str, time_index: int) -> Reader:
    """Rows of one time step of a (time, band, y, x) store (ours, Dagster's, odc-stac's)."""
    array = zarr.open_array(store, path=VARIABLE, mode="r")
    return lambda r0, r1: array[time_index, :, r0:r1, :]


def gdal_zarr_reader(store: str, array: str) -> Reader:
    """Rows of GDAL's (band, y, x) Zarr array, read back through GDAL: its v3 metadata says
    ``fill_value: null`` (no nodata), which zarr-python refuses to open."""

    def read(r0: int, r1: int) -> np.ndarray:
        with rasterio.open(f'ZARR:"{store}":/{array}') as src:
            return src.read(window=Window(0, r0, src.width, r1 - r0))

    return read


def compare(
    ours: Reader, theirs: Reader, height: int, nodata: float, into: Agreement | None = None, strip: int = 1024
) -> Agreement:
    """Compare two (band, y, x) mosaics of ``height`` rows, ``strip`` rows at a time (adding to ``into``)."""
    result = into if into is not None else Agreement()
    for r0 in range(0, height, strip):
        r1 = min(r0 + strip, height)
        lo, hi = max(r0 - 1, 0), min(r1 + 1, height)  # one halo row each side for neighbour picks
        a_halo = ours(lo, hi)
        a, b = a_halo[:, r0 - lo : r0 - lo + (r1 - r0)], theirs(r0, r1)
        _accumulate(result, a, b, a_halo, r0 - lo, nodata)
    return result


def _accumulate(result: Agreement, a: np.ndarray, b: np.ndarray, a_halo: np.ndarray, off: int, nodata: float) -> None:
    a_void, b_void = np.all(a == nodata, axis=0), np.all(b == nodata, axis=0)
    differs = np.any(a != b, axis=0)
    result.pixels += differs.size
    result.valid_pixels += int((~(a_void & b_void)).sum())
    result.equal += int((~differs).sum())
    edge = differs & (a_void != b_void)
    result.mask_edge += int(edge.sum())
    ys, xs = np.nonzero(differs & ~edge)
    picked = np.zeros(len(ys), dtype=bool)
    height, width = a_halo.shape[1:]
    for dy, dx in _NEIGHBOURS:
        yy, xx = ys + off + dy, xs + dx
        inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        match = np.zeros(len(ys), dtype=bool)
        match[inside] = np.all(a_halo[:, yy[inside], xx[inside]] == b[:, ys[inside], xs[inside]], axis=0)
        picked |= match
    result.neighbour_pick += int(picked.sum())
    result.other += int((~picked).sum())
