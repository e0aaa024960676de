"""Write one (time step, block) partition: read the block window from the time step's GTI and write
it into its chunk-aligned region of the Zarr store with ``to_zarr(region=...)``.

Why one GDAL read per block (instead of dask reading chunk by chunk): GDAL's GTI then opens each
overlapping scene once per block and can use its own threads (GDAL_NUM_THREADS); the block is
already bounded by ``partition_bytes``. Parallelism comes from running partitions in separate
processes. Rerunning a partition writes identical bytes; a block no scene touches writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyogrio
import rasterio
import xarray as xr
from rasterio.windows import Window

from .gdal_env import gdal_env
from .grid import Block, MosaicGrid
from .gti import INDEX_LAYER, GtiFiles, staged_locally
from .object_store import exists, storage_options, vsi_path
from .spec import MosaicSpec
from .store import VARIABLE


@dataclass(frozen=True)
class BlockWriteResult:
    scenes: int
    pixels: int
    valid_pixels: int
    chunks_written: int
    bytes_uncompressed: int
    seconds: float

    @property
    def empty(self) -> bool:
        return self.scenes == 0


def scenes_in_block(grid: MosaicGrid, files: GtiFiles, block: Block) -> list[str]:
    """Item ids whose footprint intersects the block, from the index's spatial index (no scene I/O)."""
    if not exists(files.index):
        return []
    bounds = grid.block_geobox(block.index).extent.boundingbox
    table = pyogrio.read_dataframe(
        vsi_path(files.index), layer=INDEX_LAYER, columns=["item_id"], bbox=tuple(bounds), read_geometry=False
    )
    return sorted(table["item_id"].tolist())


def read_block(files: GtiFiles, block: Block) -> np.ndarray:
    """(band, y, x) pixels of the block from the GTI, under the writer's GDAL config."""
    window = Window(block.cols.start, block.rows.start, block.shape[1], block.shape[0])
    with gdal_env(), rasterio.open(vsi_path(files.xml)) as mosaic:
        return mosaic.read(window=window)


def write_block(
    spec: MosaicSpec, grid: MosaicGrid, store: str, files: GtiFiles, time_index: int, block: Block
) -> BlockWriteResult:
    started = time.perf_counter()
    files = staged_locally(spec, grid, files)  # an object-store GTI is read from a local copy of its index
    scenes = scenes_in_block(grid, files, block)
    pixels = block.shape[0] * block.shape[1]
    if not scenes:
        return BlockWriteResult(0, pixels, 0, 0, 0, time.perf_counter() - started)
    data = read_block(files, block)
    region = {
        "time": slice(time_index, time_index + 1),
        "band": slice(0, len(spec.bands)),
        "y": block.rows,
        "x": block.cols,
    }
    ds = xr.Dataset({VARIABLE: (("time", "band", "y", "x"), data[np.newaxis])})
    ds.to_zarr(store, region=region, mode="r+", consolidated=False, storage_options=storage_options(store))
    valid = np.any(data != spec.nodata, axis=0)
    return BlockWriteResult(
        scenes=len(scenes),
        pixels=pixels,
        valid_pixels=int(valid.sum()),
        chunks_written=_nonempty_chunks(valid, grid.chunk_shape),
        bytes_uncompressed=int(data.nbytes),
        seconds=time.perf_counter() - started,
    )


def _nonempty_chunks(valid: np.ndarray, chunk_shape: tuple[int, int]) -> int:
    """Chunks holding at least one valid pixel (all-nodata chunks are not stored by zarr)."""
    cy, cx = chunk_shape
    count = 0
    for y in range(0, valid.shape[0], cy):
        for x in range(0, valid.shape[1], cx):
            count += bool(valid[y : y + cy, x : x + cx].any())
    return count
