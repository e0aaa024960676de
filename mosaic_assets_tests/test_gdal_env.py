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


def test_the_block_cache_limit_holds_while_other_writer_threads_come_and_go() -> None:
    """GDAL has one block cache per process. A writer thread inside ``gdal_env`` must see the writer's
    limit however other threads enter and leave theirs (a ``rasterio.Env`` carrying the limit put back
    the one it found on exit, under the other thread's reads), and it stays set after they are done."""
    import threading

    expected = int(worker_config(2.0)["GDAL_CACHEMAX"])
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", 64 * 2**20)  # what a process starts with: something else
    stop = threading.Event()
    seen: list[int] = []

    def come_and_go() -> None:
        while not stop.is_set():
            with gdal_env(2.0):
                pass

    other = threading.Thread(target=come_and_go)
    with gdal_env(2.0):
        other.start()
        try:
            for _ in range(2000):
                seen.append(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
        finally:
            stop.set()
            other.join()
    assert set(seen) == {expected}
    assert rasterio.env.get_gdal_config("GDAL_CACHEMAX") == expected


def test_the_dataset_pool_fits_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL's proxy pool (one per process, shared by every writer thread's scene stacks) at GDAL's most,
    1,000, unless the open-file limit is lower: then half of it."""
    import resource

    from mosaic_assets.engine import gdal_env as module

    monkeypatch.setattr(resource, "getrlimit", lambda _: (20000, 20000))
    assert worker_config(2.0)["GDAL_MAX_DATASET_POOL_SIZE"] == "1000"
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert module.dataset_pool_size() == 512
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert module.dataset_pool_size() == 1000
    with gdal_env(2.0):  # what GDAL is told in the writer's environment
        assert int(rasterio.env.getenv()["GDAL_MAX_DATASET_POOL_SIZE"]) == 1000
