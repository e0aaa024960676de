"""``use_overviews`` decides whether a coarser grid reads COG overviews; each setting matches a GDAL
warp made with the same choice (like with like), and the two settings really differ."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from mosaic_assets.demo.scenes import SceneSetConfig, generate_scenes, scene_item
from mosaic_assets.engine.gti import priorities
from mosaic_assets.engine.writer import write_block

from .conftest import COLLECTION, engine_setup, run_reference_warp


@pytest.fixture(scope="module")
def scenes_with_overviews(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    config = SceneSetConfig(
        collection=COLLECTION, dates=(date(2024, 6, 1),), scenes_per_date=2, scene_size=1024, spread_m=1500.0, seed=3
    )
    scenes = generate_scenes(tmp_path_factory.mktemp("ovr"), config)
    with rasterio.open(scenes[0].path) as src:
        assert src.overviews(1), "the scenes must carry overviews for this test to mean anything"
    return [scene_item(s, COLLECTION, datetime.now(UTC)) for s in scenes]


def _mosaic(items: list[dict], tmp: Path, use_overviews: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    built = engine_setup(items, tmp, resolution=30, use_overviews=use_overviews)
    spec, grid, table, files, store = built.spec, built.grid, built.table, built.files, built.store
    for block in grid.blocks():
        write_block(spec, grid, store, files, 0, block)
    ours = xr.open_zarr(store, consolidated=True, mask_and_scale=False)["mosaic"][0].values
    order = np.argsort(priorities(spec, table))
    paths = [json.loads(h)["data"] for h in table["hrefs"]]
    crs = np.array(list(table["crs"]))[order]
    job = {
        "sources": [paths[i] for i in order],
        "bands": [1, 2, 3, 4],
        "srs": grid.geobox.crs.to_wkt(),
        "bounds": list(grid.geobox.extent.boundingbox),
        "res": spec.resolution,
        "resampling": spec.resampling,
        "nodata": spec.nodata,
        "use_overviews": use_overviews,
        "out": str(tmp / "ref.tif"),
        "source_map": str(tmp / "map.tif"),
    }
    run_reference_warp(job)
    with rasterio.open(job["out"]) as ref, rasterio.open(job["source_map"]) as smap:
        reference, source = ref.read(), smap.read(1)
    native = (source >= 0) & (crs[np.clip(source, 0, None)] == spec.crs) & np.any(ours != 0, axis=0)
    return ours, reference, {"native": native}


def test_each_setting_matches_a_like_for_like_warp(scenes_with_overviews: list[dict], tmp_path: Path) -> None:
    full, full_ref, m1 = _mosaic(scenes_with_overviews, tmp_path / "full", use_overviews=False)
    fast, fast_ref, m2 = _mosaic(scenes_with_overviews, tmp_path / "fast", use_overviews=True)
    assert m1["native"].sum() > 5_000 and m2["native"].sum() > 5_000
    assert np.all(full == full_ref, axis=0)[m1["native"]].mean() >= 0.9999
    assert np.all(fast == fast_ref, axis=0)[m2["native"]].mean() >= 0.9999
    # overviews are averaged pixels: reading them must change most values, or the option did nothing
    both = m1["native"] & m2["native"]
    assert np.all(fast == full, axis=0)[both].mean() < 0.5
