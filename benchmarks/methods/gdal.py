"""GDAL alone: each time step's GTI copied to a Zarr array by ``gdal_translate`` (GDAL's C++ path,
GDAL threads), with the spec's chunks and codec and the writer's GDAL settings.

Workaround, said plainly: GDAL's Zarr CreateCopy of a multi-band source with nodata into one array
cannot store the nodata ("SetRawNoDataValue() not implemented"), so the copy runs with
``-a_nodata none``: the array has no fill value, its pixel values are unchanged (nodata pixels hold
the nodata value, 0) and, unlike ours, all-nodata chunks are written too.
One Zarr store per time step (``<step>.zarr``, array ``mosaic`` of band × y × x): GDAL writes no
time axis.
"""

from __future__ import annotations

from pathlib import Path

from mosaic_assets.engine.gdal_env import worker_config, worker_memory_gb
from mosaic_assets.engine.spec import MosaicSpec

from ..compare import Reader, gdal_zarr_reader
from ..gdal_c import translate
from ..job import Job
from ..mosaic import grid_of, layout_of, spec_of

ARRAY = "mosaic"
_SHUFFLE = {"shuffle": "BYTE", "bitshuffle": "BIT", "noshuffle": "NONE"}


def creation_options(spec: MosaicSpec, chunk_shape: tuple[int, int]) -> list[str]:
    """Zarr v3, one (band, y, x) array chunked (all bands, chunk y, chunk x), the spec's codec."""
    codec = spec.codec
    if codec.name == "blosc":
        compress = ["COMPRESS=BLOSC", f"BLOSC_CNAME={codec.cname}", f"BLOSC_CLEVEL={codec.clevel}"]
        compress.append(f"BLOSC_SHUFFLE={_SHUFFLE[codec.shuffle]}")
    elif codec.name == "zstd":
        compress = ["COMPRESS=ZSTD", f"ZSTD_LEVEL={codec.clevel}"]
    else:
        compress = ["COMPRESS=NONE"]
    options = [
        "FORMAT=ZARR_V3",
        "SINGLE_ARRAY=YES",
        f"ARRAY_NAME={ARRAY}",
        f"BLOCKSIZE={len(spec.bands)},{chunk_shape[0]},{chunk_shape[1]}",
        *compress,
    ]
    return [arg for option in options for arg in ("-co", option)]


def store_path(job: Job, step: str) -> str:
    return str(Path(job.out) / f"{step}.zarr")


def run(job: Job, context: None = None) -> dict:
    spec, grid = spec_of(job.spec), grid_of(job.spec)
    config = worker_config(worker_memory_gb(), local_scenes=True)  # the benchmark scenes are local files, as for ours
    args = ["-of", "Zarr", "-a_nodata", "none", *creation_options(spec, grid.chunk_shape)]
    for step in job.steps:
        translate(str(layout_of(job.spec, job.data_root).gti(step).xml), store_path(job, step), args, config)
    return {"stores": len(job.steps)}


def output(job: Job, step: str) -> Reader:
    return gdal_zarr_reader(store_path(job, step), ARRAY)
