"""Which pixels of a scene are usable, from its mask band (``spec.mask``): pure numpy, no I/O.

The mask band is read ``nearest`` onto the block's grid from its own asset (Sentinel-2's 20 m SCL under
10 m bands), so a class value is never interpolated. Three rules, one per catalog family: classes to
exclude (SCL), bit flags to exclude (Landsat C2 QA_PIXEL), values that are clear (GLAD ARD's QA).
A mask pixel that is the mosaic's nodata (outside the scene, or the band's own fill mapped to it) is
never usable. Excluded areas grow by ``dilate_pixels`` output pixels (a square), because cloud edges
are where clouds leak into composites.
"""

from __future__ import annotations

import numpy as np

from .spec import Mask, MosaicSpec


def usable(spec: MosaicSpec, mask: Mask, values: np.ndarray) -> np.ndarray:
    """(y, x) bool: pixels the mask band ``values`` (y, x) lets through, dilation applied."""
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2 and not np.isnan(spec.nodata):
        inside = values != spec.nodata_value
        bad = excluded_lookup(mask, values.dtype)[values]  # one gather: 20-50x faster than np.isin
        return inside & ~dilate(bad & inside, mask.dilate_pixels)
    if np.isnan(spec.nodata):
        inside = ~np.isnan(values)
        codes = np.where(inside, values, 0).astype(np.int64)
    else:
        inside = values != spec.nodata_value
        codes = values.astype(np.int64)
    if mask.exclude is not None:
        bad = np.isin(codes, mask.exclude)
    elif mask.exclude_bits is not None:
        bits = np.int64(sum(1 << b for b in mask.exclude_bits))
        bad = (codes & bits) != 0
    else:
        bad = ~np.isin(codes, mask.valid)
    bad = dilate(bad & inside, mask.dilate_pixels)
    return inside & ~bad


def excluded_lookup(mask: Mask, dtype: np.dtype) -> np.ndarray:
    """bool[v] for every value v of an unsigned ``dtype`` of at most 16 bits: is a pixel of class v excluded."""
    codes = np.arange(2 ** (8 * dtype.itemsize), dtype=np.int64)
    if mask.exclude is not None:
        return np.isin(codes, mask.exclude)
    if mask.exclude_bits is not None:
        return (codes & sum(1 << b for b in mask.exclude_bits)) != 0
    return ~np.isin(codes, mask.valid)


def dilate(flags: np.ndarray, pixels: int) -> np.ndarray:
    """``flags`` grown by ``pixels`` in every direction (a (2p+1)² square), as two separable running
    maxima: O(p) shifted ORs per axis instead of O(p²)."""
    if pixels <= 0 or not flags.any():
        return flags
    out = flags.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, pixels + 1):
            if shift >= out.shape[axis]:
                break
            ahead = [slice(None)] * 2
            behind = [slice(None)] * 2
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(behind)] |= out[tuple(ahead)]
            grown[tuple(ahead)] |= out[tuple(behind)]
        out = grown
    return out


def check_mask_values(mask: Mask, data_type: str | None, where: str) -> None:
    """Class values or bits the mask asset's declared data type cannot hold are a spec error naming
    the key (``mask.exclude: 300 does not fit uint8``); unknown data types pass."""
    try:
        info = np.iinfo(np.dtype(data_type)) if data_type else None
    except TypeError:
        return
    if info is None:
        return
    for key in ("exclude", "valid"):
        outside = [v for v in getattr(mask, key) or () if not info.min <= v <= info.max]
        if outside:
            raise ValueError(f"{where}: mask.{key}: {outside} do not fit the mask asset's data type {data_type}")
    too_high = [b for b in mask.exclude_bits or () if b >= info.bits]
    if too_high:
        raise ValueError(f"{where}: mask.exclude_bits: {too_high} are beyond the {info.bits} bits of {data_type}")
