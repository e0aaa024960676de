"""The writer's GDAL settings: GDAL's per-file cache is on only where the kernel's page cache is not."""

from __future__ import annotations

import pytest
import rasterio

from mosaic_assets.engine.gdal_env import all_local, gdal_env, worker_config


@pytest.mark.parametrize(
    ("paths", "local"),
    [
        (["/data/a.tif", "relative/b.tif"], True),
        (["/data/a.tif", "s3://bucket/b.tif"], False),
        (["https://example.com/a.tif"], False),
        (["/vsicurl/https://example.com/a.tif"], False),
        (["/vsis3/bucket/a.tif"], False),
        (["gs://bucket/a.tif"], False),
        ([], False),  # nothing known about the scenes: the remote default
    ],
)
def test_all_local_says_whether_every_scene_is_a_local_file(paths: list[str], local: bool) -> None:
    assert all_local(paths) is local


def test_vsi_cache_is_off_for_local_scenes_only() -> None:
    assert worker_config(2.0, local_scenes=True)["VSI_CACHE"] == "FALSE"
    assert worker_config(2.0)["VSI_CACHE"] == "TRUE"
    # what GDAL itself is told inside the writer's environment
    with gdal_env(2.0, local_scenes=True):
        assert rasterio.env.getenv()["VSI_CACHE"] in ("FALSE", False)
    with gdal_env(2.0):
        assert rasterio.env.getenv()["VSI_CACHE"] in ("TRUE", True)
