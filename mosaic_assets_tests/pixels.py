"""The pixel check shared by the end-to-end tests: our mosaic against GDAL's own warp of the same scenes.

Scenes already in the target CRS must match on >= 99.99 % of valid pixels. Reprojected ones on
>= 95 %, and every differing pixel must be a nearest-neighbour pick off by at most one *source*
pixel from the exact position of the target pixel centre (checked in the source scenes themselves:
with two UTM zones rotated ~1.5 degrees against each other, gdalwarp never picks some source pixels,
so "present in the reference's 3x3 window" is not a sound criterion - measured: 38 of 399 differing
pixels fail it while all are one-source-pixel picks). Valid/nodata masks agree on >= 99.9 %.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import xarray as xr
from pyproj import Transformer

from mosaic_assets.engine.catalog import scene_assets
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import priorities
from mosaic_assets.engine.spec import MosaicSpec
from mosaic_assets.engine.store import WHOLE_MOSAIC, Placement

from .conftest import run_reference_warp


def _source_nodata(spec: MosaicSpec, declared: float | None, path: str | None) -> float:
    """The scenes' nodata as the mosaic honours it: STAC's, else the file's own (DEA's ARD writes -999 and
    its fmask 0 only in the files), else the mosaic's."""
    if declared is not None:
        return float(declared)
    if path:
        with rasterio.open(path) as src:
            if src.nodata is not None:
                return float(src.nodata)
    return spec.nodata


def stored_bands(store: str, time_index: int, positions: list[int], placement: Placement, spec: MosaicSpec):
    """The raw pixels of ``spec``'s bands ``positions`` as the store keeps them: ``(band, y, x)``."""
    dataset = xr.open_zarr(store, consolidated=True, mask_and_scale=False)
    if placement.static:
        return np.stack([dataset[spec.bands[p].name].values for p in positions])
    return dataset["mosaic"][time_index].values[[placement.band_offset + p for p in positions]]


def assert_matches_gdal_warp(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    time_index: int,
    scenes: gpd.GeoDataFrame,
    tmp: Path,
    local_paths: dict[str, str] | None = None,
    positions: list[int] | None = None,
    min_valid: int = 20_000,
    placement: Placement = WHOLE_MOSAIC,
) -> dict:
    """Assert the time step equals the reference within the rules above; returns the figures.

    ``local_paths`` (item id -> file) lets the reference read local copies of remote scenes.
    ``positions``: the mosaic bands to check, all of one asset (default: every band, of the first
    band's asset); the reference warps that asset's files with its declared nodata and the band's
    resampling. ``placement``: where a cube's source keeps its bands (``spec`` is then the source's)."""
    positions = positions if positions is not None else list(range(len(spec.bands)))
    bands = [spec.bands[p] for p in positions]
    asset = bands[0].asset
    assert all(b.asset == asset for b in bands), "one asset per check: each is warped from its own grid"
    tmp.mkdir(parents=True, exist_ok=True)
    order = np.argsort(priorities(spec, scenes))  # worst first: gdal.Warp draws later sources on top
    assets = scene_assets(scenes)
    paths = [local_paths[i] if local_paths else a[asset]["href"] for i, a in zip(scenes["item_id"], assets)]
    declared = assets[0][asset].get("bands", {}).get(str(bands[0].index), {}).get("nodata") if assets else None
    job = {
        "sources": [paths[i] for i in order],
        "bands": [b.index for b in bands],
        "srs": grid.geobox.crs.to_wkt(),
        "bounds": list(grid.geobox.extent.boundingbox),
        "res": spec.resolution,
        "resampling": spec.band_resampling(bands[0]),
        "nodata": spec.nodata,
        "src_nodata": _source_nodata(spec, declared, paths[0] if paths else None),
        "use_overviews": spec.use_overviews,
        "out": str(tmp / "reference.tif"),
        "source_map": str(tmp / "source_map.tif"),
    }
    run_reference_warp(job)
    with rasterio.open(job["out"]) as ref_ds, rasterio.open(job["source_map"]) as map_ds:
        assert ref_ds.shape == grid.shape
        reference = ref_ds.read()
        source = map_ds.read(1)
    ours = stored_bands(store, time_index, positions, placement, spec)
    crs_of_source = np.array([scenes["crs"].iloc[i] for i in order])

    ref_valid = np.any(reference != spec.nodata, axis=0)
    our_valid = np.any(ours != spec.nodata, axis=0)
    assert ref_valid.sum() > min_valid, "the reference is almost empty: the comparison would prove nothing"
    assert (ref_valid == our_valid).mean() >= 0.999

    both = ref_valid & our_valid
    native = both & (source >= 0) & (crs_of_source[np.clip(source, 0, None)] == spec.crs)
    warped = both & ~native
    equal = np.all(ours == reference, axis=0)
    assert not native.any() or equal[native].mean() >= 0.9999, f"native-CRS pixels equal: {equal[native].mean():.5f}"
    assert not warped.any() or equal[warped].mean() >= 0.95, f"reprojected pixels equal: {equal[warped].mean():.5f}"
    # every differing reprojected pixel must be a nearest-neighbour pick off by at most one source pixel:
    # its value must sit in some scene within +-1 source pixel of where the pixel centre falls exactly
    rows, cols = np.nonzero(warped & ~equal)
    assert len(rows) > 0 or equal[warped].all()
    xs, ys = grid.geobox.affine * (cols + 0.5, rows + 0.5)
    explained = np.zeros(len(rows), dtype=bool)
    for path, crs in zip(paths, scenes["crs"]):
        with rasterio.open(path) as src:
            pixels = src.read([b.index for b in bands])
            to_src = Transformer.from_crs(spec.crs, crs, always_xy=True)
            sx, sy = to_src.transform(xs, ys)
            src_rows, src_cols = rasterio.transform.rowcol(src.transform, sx, sy, op=np.floor)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r, c = np.asarray(src_rows, dtype=int) + dr, np.asarray(src_cols, dtype=int) + dc
                inside = (r >= 0) & (r < pixels.shape[1]) & (c >= 0) & (c < pixels.shape[2])
                hit = np.zeros(len(rows), dtype=bool)
                hit[inside] = np.all(pixels[:, r[inside], c[inside]] == ours[:, rows[inside], cols[inside]], axis=0)
                explained |= hit
    assert explained.all(), f"{(~explained).sum()} of {len(rows)} differing pixels are not one-pixel neighbour picks"
    return {
        "valid_pixels": int(ref_valid.sum()),
        "mask_agreement": float((ref_valid == our_valid).mean()),
        "native_pixels": int(native.sum()),
        "native_equal": float(equal[native].mean()) if native.any() else 1.0,
        "reprojected_pixels": int(warped.sum()),
        "reprojected_equal": float(equal[warped].mean()) if warped.any() else 1.0,
        "neighbour_picks": int(len(rows)),
    }
