"""The floor: what no mosaic tool can beat on this machine. Decode every source pixel once (GDAL,
all threads, scenes over ``job.workers`` threads) and encode + write the output array once (zarr,
same chunks and codec); no warping, no compositing, no orchestration.

What is encoded is the finished mosaic itself (the reference store, loaded in the untimed
``setup``), so the floor's codec work is exactly what a real mosaic costs. The loaded reference
makes this process's peak RSS the mosaic's size: not comparable with the other methods.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
import zarr

from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.store import VARIABLE, compressors

from ..job import Job
from ..mosaic import grid_of, layout_of, spec_of, time_index

STORE = "floor.zarr"


def setup(job: Job) -> dict[str, np.ndarray]:
    """Each time step's mosaic pixels (band, y, x), from the reference store."""
    spec = spec_of(job.spec)
    var = xr.open_zarr(job.reference, consolidated=False, mask_and_scale=False)[VARIABLE]
    return {step: var.isel(time=time_index(spec, step)).values for step in job.steps}


def _decode(path: str) -> int:
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(path) as src:
        return int(src.read().nbytes)


def scene_paths(job: Job, step: str) -> list[str]:
    table = load_scene_table(layout_of(job.spec, job.data_root).scene_table(step))
    return [path for hrefs in table["hrefs"] for path in json.loads(hrefs).values()]


def run(job: Job, mosaics: dict[str, np.ndarray]) -> dict:
    spec, grid = spec_of(job.spec), grid_of(job.spec)
    length = max(time_index(spec, s) for s in job.steps) + 1
    array = zarr.create_array(
        str(Path(job.out) / STORE),
        shape=(length, len(spec.bands), *grid.shape),
        chunks=(1, len(spec.bands), *grid.chunk_shape),
        dtype=spec.dtype,
        fill_value=np.array(spec.nodata, dtype=spec.dtype).item(),
        compressors=compressors(spec),
        zarr_format=3,
    )
    decoded = 0
    with ThreadPoolExecutor(max_workers=job.workers) as pool:
        for step in job.steps:
            decoded += sum(pool.map(_decode, scene_paths(job, step)))
            array[time_index(spec, step)] = mosaics[step]
    return {"decoded_bytes": decoded}
