"""The composites' independent reference: every scene's every band and mask warped alone by GDAL's own
``gdal.Warp`` (reference_warp.py, the osgeo bindings) onto the mosaic grid, masks evaluated and dilated
here with scipy.ndimage, and numpy's reducers over that stack. Shared by the composite and cube tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

from mosaic_assets.engine.catalog import scene_assets
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import priorities
from mosaic_assets.engine.spec import MosaicSpec

from .conftest import run_reference_warp


def file_nodata(path: str, fallback: float) -> float:
    with rasterio.open(path) as src:
        return fallback if src.nodata is None else float(src.nodata)


def reference_stack(spec: MosaicSpec, grid: MosaicGrid, table, tmp: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """(scene, band, y, x) pixels and (scene, y, x) mask values, each warped alone by gdal.Warp; scenes
    in the table's order (with their z-order rank)."""
    assets = scene_assets(table)
    jobs, outputs = [], []
    wanted = [(b.asset, b.index, spec.band_resampling(b)) for b in spec.bands] + [
        (spec.mask.asset, spec.mask.index, "nearest")
    ]
    for n, scene in enumerate(assets):
        for k, (asset, index, resampling) in enumerate(wanted):
            path = scene[asset]["href"]
            declared = scene[asset]["bands"].get(str(index), {}).get("nodata")
            out = str(tmp / f"s{n}-{k}.tif")
            jobs.append(
                {
                    "sources": [path],
                    "bands": [index],
                    "srs": grid.geobox.crs.to_wkt(),
                    "bounds": list(grid.geobox.extent.boundingbox),
                    "res": spec.resolution,
                    "resampling": resampling,
                    "nodata": spec.nodata,
                    "src_nodata": float(declared) if declared is not None else file_nodata(path, spec.nodata),
                    "use_overviews": False,
                    "out": out,
                }
            )
            outputs.append(out)
    tmp.mkdir(parents=True, exist_ok=True)
    run_reference_warp({"jobs": jobs})
    arrays = [rasterio.open(o).read(1) for o in outputs]
    per_scene = len(wanted)
    stack = np.array([arrays[n * per_scene : n * per_scene + len(spec.bands)] for n in range(len(assets))])
    masks = np.array([arrays[n * per_scene + len(spec.bands)] for n in range(len(assets))])
    return stack, masks, list(priorities(spec, table))


def usable_pixels(spec: MosaicSpec, stack: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The reference's own reading of the mask rules (not masks.usable), dilated by scipy.ndimage."""
    rule = spec.mask
    inside = masks != spec.nodata
    codes = masks.astype(np.int64)
    if rule.exclude is not None:
        bad = np.isin(codes, rule.exclude)
    elif rule.exclude_bits is not None:
        bad = np.zeros(codes.shape, dtype=bool)
        for bit in rule.exclude_bits:
            bad |= (codes >> bit) & 1 == 1
    else:
        bad = ~np.isin(codes, rule.valid)
    bad &= inside
    if rule.dilate_pixels:
        square = np.ones((2 * rule.dilate_pixels + 1,) * 2, dtype=bool)
        bad = np.array([ndimage.binary_dilation(b, structure=square) for b in bad])
    data = np.any(stack != spec.nodata, axis=1)
    return inside & ~bad & data


def rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def composite_reference(spec: MosaicSpec, stack: np.ndarray, usable: np.ndarray, ranks: list) -> np.ndarray:
    """Per band over its own observations: a usable scene pixel where that band holds data."""
    method = spec.composite.method
    nodata = np.array(spec.nodata, dtype=spec.dtype)
    observed = usable[:, np.newaxis] & (stack != spec.nodata)
    if method == "first_valid":
        out = np.full(stack.shape[1:], nodata, dtype=spec.dtype)
        for n in np.argsort(ranks):  # worst first: the best usable pixel is drawn last
            out[observed[n]] = stack[n][observed[n]]
        return out
    masked = np.where(observed, stack.astype(np.float64), np.nan)
    reducer = {"median": np.nanmedian, "mean": np.nanmean, "min": np.nanmin, "max": np.nanmax}[method]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: pixels without a clear observation
        values = reducer(masked, axis=0)
    out = rounded(np.nan_to_num(values), spec.dtype)
    out[~observed.any(axis=0)] = nodata
    return out
