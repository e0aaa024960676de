"""A mask asset whose grid nests in the mosaic's is read on its own grid and repeated: equal to GDAL's own
nearest warp of the file onto the window (rasterio.warp.reproject), at odd shifts, partly outside the
file, with nodata; grids that do not nest are left to the GTI (None)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.nested_read import nesting, read_nested_band
from mosaic_assets.engine.spec import Band, parse_specs

from .conftest import spec_document

BAND = Band(name="mask", asset="scl", index=1)


def _grid(**overrides):
    spec = parse_specs(spec_document("http://127.0.0.1:1", **overrides))[0]
    return spec, MosaicGrid.from_spec(spec)


def _scl(path: Path, transform: Affine, shape: tuple[int, int], crs: str, nodata: float | None, seed: int) -> dict:
    """An SCL-like uint8 class file (values 0..11, 0 its fill) and its scene-table entry."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 12, shape, dtype=np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8", crs=crs,
        transform=transform, nodata=nodata, tiled=True, blockxsize=64, blockysize=64, compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    return {"href": str(path), "crs": crs, "shape": list(shape), "transform": list(transform)[:6], "bands": {}}


def _gdal_reference(spec, grid: MosaicGrid, href: str, window: Window) -> np.ndarray:
    """GDAL's nearest warp of the file onto the window of the mosaic grid, the spec's nodata elsewhere.
    A file without nodata is copied as it is (no destination nodata: GDAL would bump a 0 to 1)."""
    out = np.full((int(window.height), int(window.width)), spec.nodata_value, dtype=spec.dtype)
    with rasterio.open(href) as src:
        fill = None if src.nodata is None else spec.nodata
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=grid.geobox.transform * Affine.translation(window.col_off, window.row_off),
            dst_crs=grid.geobox.crs.to_wkt(),
            dst_nodata=fill,
            resampling=Resampling.nearest,
        )
    return out


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("shift", [(0, 0), (1, 0), (3, 5), (-7, 11)])  # in mosaic pixels, odd ones included
@pytest.mark.parametrize("nodata", [0, None])
def test_nested_read_equals_gdal_nearest(tmp_path: Path, k: int, shift: tuple[int, int], nodata) -> None:
    spec, grid = _grid()
    mosaic = grid.geobox.transform
    res = mosaic.a
    height, width = grid.shape
    # a file starting a little inside the grid (so windows run off its edges), offset by whole mosaic pixels
    origin = mosaic * (37 + shift[0], 23 + shift[1])
    transform = Affine(k * res, 0, origin[0], 0, -k * res, origin[1])
    shape = (height // k - 20, width // k - 15)
    asset = _scl(tmp_path / "scl.tif", transform, shape, "EPSG:32632", nodata, seed=k)
    assert nesting(grid, asset) is not None
    for window in (
        Window(0, 0, width, height),
        Window(101, 57, 333, 211),
        Window(width - 97, height - 51, 97, 51),
    ):
        got = read_nested_band(spec, grid, BAND, asset, window)
        np.testing.assert_array_equal(got, _gdal_reference(spec, grid, asset["href"], window))


def test_a_declared_nodata_is_the_mosaics_nodata(tmp_path: Path) -> None:
    """STAC declares 11 as the fill of a file that declares none: read as the mosaic's nodata (0)."""
    spec, grid = _grid()
    mosaic = grid.geobox.transform
    transform = Affine(2 * mosaic.a, 0, mosaic.c, 0, 2 * mosaic.e, mosaic.f)
    asset = _scl(tmp_path / "scl.tif", transform, (grid.shape[0] // 2, grid.shape[1] // 2), "EPSG:32632", None, 1)
    asset["bands"] = {"1": {"nodata": 11}}
    window = Window(0, 0, 200, 100)
    got = read_nested_band(spec, grid, BAND, asset, window)
    with rasterio.open(asset["href"]) as src:
        raw = np.repeat(np.repeat(src.read(1, window=Window(0, 0, 100, 50)), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(got, np.where(raw == 11, 0, raw))


@pytest.mark.parametrize(
    "change",
    ["half_pixel", "ratio", "crs", "rotation"],
)
def test_grids_that_do_not_nest_are_left_to_the_gti(tmp_path: Path, change: str) -> None:
    spec, grid = _grid()
    mosaic = grid.geobox.transform
    res, x, y, crs = mosaic.a, mosaic.c, mosaic.f, "EPSG:32632"
    transform = Affine(2 * res, 0, x, 0, -2 * res, y)
    if change == "half_pixel":
        transform = Affine(2 * res, 0, x + res / 2, 0, -2 * res, y)
    elif change == "ratio":
        transform = Affine(1.5 * res, 0, x, 0, -1.5 * res, y)
    elif change == "crs":
        crs = "EPSG:32633"
    elif change == "rotation":
        transform = Affine(2 * res, 0.001, x, 0, -2 * res, y)
    asset = {"href": str(tmp_path / "absent.tif"), "crs": crs, "shape": [10, 10], "transform": list(transform)[:6]}
    assert nesting(grid, asset) is None
    assert read_nested_band(spec, grid, BAND, asset, Window(0, 0, 10, 10)) is None


@pytest.mark.parametrize("nodata", [0, None])
def test_a_mask_in_another_crs_takes_gdals_nearest_picks(tmp_path: Path, nodata) -> None:
    """An SCL-like 20 m file in UTM 33 under a 10 m UTM 32 mosaic (the neighbouring zone's scenes): each
    window's pixels are the ones GDAL's own nearest warp of the file gives there (rasterio.warp.reproject
    onto the window; the pick map is an index raster warped the same way), runs off the file included;
    two files on one grid share one pick map."""
    from pyproj import Transformer

    from mosaic_assets.engine.nested_read import _pick_map, read_mapped_band

    spec, grid = _grid()
    height, width = grid.shape
    centre = grid.geobox.transform * (width / 2, height / 2)
    x, y = Transformer.from_crs("EPSG:32632", "EPSG:32633", always_xy=True).transform(*centre)
    origin = (round(x / 20) * 20 - 20 * width // 5, round(y / 20) * 20 + 20 * height // 6)  # off the grid's corner
    transform = Affine(20.0, 0, origin[0], 0, -20.0, origin[1])
    shape = (height // 2, width // 2)
    first = _scl(tmp_path / "a.tif", transform, shape, "EPSG:32633", nodata, seed=5)
    second = _scl(tmp_path / "b.tif", transform, shape, "EPSG:32633", nodata, seed=6)
    assert nesting(grid, first) is None
    _pick_map.cache_clear()
    for window in (Window(0, 0, width, height), Window(101, 57, 333, 211)):
        for asset in (first, second):
            got = read_mapped_band(spec, grid, BAND, asset, window)
            expected = _gdal_reference(spec, grid, asset["href"], window)
            np.testing.assert_array_equal(got, expected)
    assert _pick_map.cache_info().misses == 2 and _pick_map.cache_info().hits == 2
