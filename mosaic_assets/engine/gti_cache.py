"""The writer's open GTI, kept between the blocks a process writes in a row.

Why: reopening the GTI for every block reopened its index and every scene under the block (COG
headers, and for a scene in another CRS its warper's transformer); measured on the benchmark's quick
scenes, one process reading all 17 blocks spent 3.5 CPU s reopening per block and 2.5 keeping the
GTI open. Consecutive blocks of a ranged run or a pool worker mostly share scenes.

Safety: the key is the XML's and the index's path, inode, size and mtime, so a GTI rebuilt for new
scenes is reopened; one GTI per thread (datasets are not thread-safe), closed after
``MAX_READS`` blocks so the scenes it holds open (each with its VSI cache) cannot pile up over a
long-lived worker; and any read error closes it, so a retry reopens the GTI and its scenes. Only
local GTIs are kept (a writer reads an object-store GTI through a local copy, ``staged_locally``).

Memory: the scenes' decoded tiles stay in GDAL's block cache while their dataset is open, so a kept
GTI fills the cache (``GDAL_CACHEMAX``, a quarter of the worker's memory: ``gdal_env``) where closing
it after each block never did. It is therefore also closed, which frees those tiles and the scenes'
per-file caches, as soon as the process's RSS passes ``KEEP_RSS_FRACTION`` of the worker's memory:
a safety net for what the cache does not bound (remote scenes' ``VSI_CACHE``, one per open file), set
above what a full cache and the writers' blocks take. At half the memory (with the cache at half too)
it fired on nearly every block of two writer threads on the quick benchmark, so each block reopened
its scenes and decoded again the tiles its neighbour had: 454 tile decodes where 288 suffice.

The block buffer: the array a block is read into is kept too (``block_buffer``), for the same
reason. A fresh array of a block's size is fresh memory, and the kernel zeroes each of its pages on
first touch (numpy asks for huge pages on large arrays, which adds compaction). Measured on the quick
benchmark's 228 MB block read alone: 0.9-1.0 s of system CPU into a fresh array, 0.5-0.7 s into a
kept one, for the same 1.4 s of user CPU (within a whole write of the benchmark the difference was
below this machine's noise). It goes whenever the GTIs go, so it never outlives the memory budget.
"""

from __future__ import annotations

import atexit
import os
import threading

import numpy as np
import rasterio
from rasterio.windows import Window

from .gdal_env import worker_memory_gb
from .gti import GtiFiles
from .object_store import is_remote, vsi_path

MAX_READS = 32  # group reads through the kept GTIs before they are closed and reopened
KEEP_RSS_FRACTION = 0.75  # of MOSAIC_WORKER_MEMORY_GB: above this RSS, the GTI is closed after the read


def _rss_bytes() -> int:
    """The process's resident set now (Linux; 0 where /proc is not there, i.e. never over budget)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _identity(files: GtiFiles) -> tuple | None:
    """What must be unchanged for an open GTI to be reused; None when it must not be kept."""
    if is_remote(files.xml) or is_remote(files.index):
        return None
    try:
        stats = [os.stat(files.xml), os.stat(files.index)]
    except OSError:
        return None
    return tuple(
        (str(path), s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
        for path, s in zip((files.xml, files.index), stats)
    )


class OpenGtis(threading.local):
    """The GTIs kept open in this thread (one per read group of the step being written, and per z-order
    layer a writer reads: ``layered_write``), each with the identity it was opened under."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[tuple, object]] = {}  # (xml, filter) -> (identity, dataset)
        self.reads = 0
        self.buffer = np.empty(0, dtype=np.uint8)  # block_buffer's memory

    def close(self) -> None:
        for _, dataset in self.entries.values():
            dataset.close()
        self.entries, self.reads = {}, 0
        self.buffer = np.empty(0, dtype=np.uint8)

    def block_buffer(self, shape: tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` in this thread's kept memory, grown when too
        small. It is valid until this thread's next ``block_buffer`` call: one block at a time."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.buffer.nbytes < size:
            self.buffer = np.empty(size, dtype=np.uint8)
        return self.buffer[:size].view(dtype).reshape(shape)

    def read(
        self, files: GtiFiles, window: Window, out: np.ndarray | None = None, where: str | None = None
    ) -> np.ndarray:
        """Read ``window`` (all bands) through the kept GTI of ``files.xml``, opening it when it is not
        the one kept; into ``out`` when given. ``where``: the GTI's ``FILTER`` (an SQL condition on the
        index: one z-order layer of the scenes, ``layered_write``), kept open apart from the whole GTI.
        Call under the writer's GDAL config (``gdal_env``)."""
        options = {"FILTER": where} if where else {}
        key = _identity(files)
        if key is None:
            self.close()
            with rasterio.open(vsi_path(files.xml), **options) as mosaic:
                return mosaic.read(window=window, out=out)
        name = (str(files.xml), where or "")
        kept = self.entries.get(name)
        if self.reads >= MAX_READS * max(1, len(self.entries)) or (kept is not None and kept[0][1] != key[1]):
            self.close()  # a rebuilt index (or the read budget): every kept group goes
            kept = None
        if kept is None or kept[0] != key:
            if kept is not None:
                kept[1].close()
            kept = self.entries[name] = (key, rasterio.open(vsi_path(files.xml), **options))
        try:
            data = kept[1].read(window=window, out=out)
        except BaseException:
            self.close()
            raise
        self.reads += 1
        if _rss_bytes() > KEEP_RSS_FRACTION * worker_memory_gb() * 1024**3:
            self.close()
        return data


open_gtis = OpenGtis()
# closed before the interpreter tears rasterio down (a dataset finalized after that fails noisily)
atexit.register(open_gtis.close)
