"""GDAL configuration for partition writers: the one place GDAL settings are decided.

Sizes derive from the worker's memory (the seed's heuristics: a third for each HTTP/VSI cache, half
for the block cache) so a pod's memory request and its GDAL caches cannot disagree.
"""

from __future__ import annotations

import os
import re
import resource
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import rasterio

from .capacity import worker_cpus
from .object_store import gdal_s3_config, is_remote
from .spec import StacSource

MEMORY_ENV = "MOSAIC_WORKER_MEMORY_GB"
OPERATOR_OVERRIDES = ("GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY", "GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT")
DEFAULT_MEMORY_GB = 2.0
GDAL_POOL_MOST = 1000  # GDAL clamps GDAL_MAX_DATASET_POOL_SIZE to [2, 1000]
_NOT_LOCAL = re.compile(r"^(/vsi|[a-z][a-z0-9+.-]*://)", re.IGNORECASE)
_THIS_THREAD: ContextVar[float | None] = ContextVar("mosaic_writer_memory_gb", default=None)


def worker_memory_gb() -> float:
    """Memory the writer may use: this thread's share (``memory_in_this_thread``), else
    MOSAIC_WORKER_MEMORY_GB (set from the pod's limit on Kubernetes)."""
    share = _THIS_THREAD.get()
    if share is not None:
        return share
    raw = os.environ.get(MEMORY_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_MEMORY_GB
    except ValueError:
        raise ValueError(f"{MEMORY_ENV}={raw!r} is not a number of gigabytes") from None
    if value <= 0:
        raise ValueError(f"{MEMORY_ENV}={raw!r} must be > 0")
    return value


@contextmanager
def memory_in_this_thread(memory_gb: float) -> Iterator[None]:
    """``worker_memory_gb()`` is ``memory_gb`` in this thread within the block (see
    ``capacity.cpus_in_this_thread``): GDAL's caches sized from one writer's share of the step."""
    token = _THIS_THREAD.set(memory_gb)
    try:
        yield
    finally:
        _THIS_THREAD.reset(token)


def worker_config(
    memory_gb: float, debug: bool = False, threads: int | None = None, local_scenes: bool = False
) -> dict[str, str]:
    """GDAL config options for a writer process with ``memory_gb`` of memory and ``threads`` CPUs for
    GDAL's own threads (decompression, GTI tiles; None: every CPU). ``local_scenes``: every scene is a
    local file (``all_local``), so GDAL's per-file cache is off."""
    gib = 1024**3
    return {
        # GDAL retries HTTP 429/5xx itself with exponential backoff (measured: delays d, ~2d, ~4d, ...), so
        # the seed's 20 retries from 30 s would wait ~30 s x 2^20 (a year) on a store that stays down.
        # 5 from 1 s is ~31-60 s; past that the error reaches Dagster, whose RetryPolicy retries the step.
        "GDAL_HTTP_MAX_RETRY": "5",
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "GDAL_HTTP_VERSION": "2",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_CACHE_SIZE": str(int(gib * memory_gb / 3)),
        # GDAL's ceiling is 10 MiB: a larger value (the seed's 12 MiB) is rejected and GDAL falls back
        # to 16 KiB chunks, i.e. hundreds of times more range requests.
        "CPL_VSIL_CURL_CHUNK_SIZE": str(10 * 1024**2),
        # Per open file, on top of the kernel's page cache for a local file: each writer thread opens its
        # own handle, so the same bytes sat in memory once per thread (measured on the quick benchmark,
        # 2 writer threads: peak RSS 2.29-2.42 -> 2.02-2.06 GB). Kept for object-store and HTTP scenes.
        "VSI_CACHE": "FALSE" if local_scenes else "TRUE",
        # VSI_CACHE_SIZE is per open file, not global: the seed's third of memory per file would
        # multiply by the scenes a block touches, so it is capped.
        "VSI_CACHE_SIZE": str(min(int(gib * memory_gb / 3), 64 * 1024**2)),
        # A quarter, not the seed's half: the writer keeps its GTIs open between blocks (gti_cache), so the
        # cache fills to its limit, and gti_cache closes them (dropping every decoded tile) past 3/4 of the
        # memory. At half, a full cache plus two writers' blocks crossed that on nearly every block of the
        # quick benchmark. A quarter still holds what neighbouring blocks share: 2 writers decoded 369
        # scene tiles where one writer with an unbounded cache decodes 288 (454 before), and used
        # 5.4-5.8 CPU s against 5.8-6.3 (medians of 5-6, same hour; GDAL alone 5.3-5.6 at either size).
        "GDAL_CACHEMAX": str(int(gib * memory_gb / 4)),
        # Datasets a VRT (a scene's band stack, a vrt:// connection) opens through GDAL's proxy pool, one
        # pool for the process: at GDAL's default of 100, two writer threads each keeping 20 scenes of 4
        # band files open (the scaling benchmark) closed each other's files, and with them the tiles
        # decoded from them: 5,072 tile decodes where 3,360 suffice (GDAL's most, 1,000, fixed that).
        # Bounded by the open-file limit. The pool's RAM limit is set too: by GDAL's documented default, a
        # quarter of the usable RAM minus GDAL_CACHEMAX, it would be nothing on a pod whose cache is a
        # quarter of its memory (not measured: no pod here).
        "GDAL_MAX_DATASET_POOL_SIZE": str(dataset_pool_size()),
        "GDAL_MAX_DATASET_POOL_RAM_USAGE": f"{int(1024 * memory_gb / 4)}MB",
        "GDAL_NUM_THREADS": "ALL_CPUS" if threads is None else str(threads),
        # GDAL 3.12's GTI reads tiles on the GDAL_NUM_THREADS pool, and a reprojected tile's warp
        # queues jobs on that same pool and waits for them: with 2 threads both wait forever (seen
        # under gdb in the benchmark). Parallelism comes from processes over partitions anyway.
        "GTI_NUM_THREADS": "1",
        "CPL_DEBUG": "ON" if debug else "OFF",
        "CPL_CURL_VERBOSE": "YES" if debug else "NO",
    }


def dataset_pool_size() -> int:
    """GDAL's proxy pool size: its most (1,000), or half the process's open-file limit when that is lower,
    so pooled scenes leave room for every other file the writer opens."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return GDAL_POOL_MOST
    return GDAL_POOL_MOST if soft == resource.RLIM_INFINITY else max(2, min(GDAL_POOL_MOST, soft // 2))


def source_config(stac: StacSource | None) -> dict[str, str]:
    """What a mosaic's source asks of GDAL to reach its scenes: unsigned or requester-pays buckets."""
    if stac is None:
        return {}
    options = {}
    if stac.aws_no_sign_request:
        options["AWS_NO_SIGN_REQUEST"] = "YES"
    if stac.aws_request_payer:
        options["AWS_REQUEST_PAYER"] = "requester"
    return options


def all_local(paths: Iterable[str]) -> bool:
    """Whether every path is a local file (no object-store URL, no HTTP URL, no GDAL ``/vsi`` prefix),
    and there is at least one: ``worker_config``'s ``local_scenes``."""
    paths = [str(p) for p in paths]
    return bool(paths) and not any(is_remote(p) or _NOT_LOCAL.match(p) for p in paths)


def gdal_env(
    memory_gb: float | None = None, stac: StacSource | None = None, local_scenes: bool = False
) -> rasterio.Env:
    """A rasterio.Env with the worker config applied (rasterio wants CPL_DEBUG as a bool; the string
    form is what a pod's environment carries), plus the object-store endpoint when only botocore's
    spelling of it is set (see object_store), plus what the mosaic's ``stac`` source needs
    (``source_config``); ``local_scenes`` as in ``worker_config``. GDAL_CACHEMAX is not in the Env: it
    is set for the process (``use_cache_max``)."""
    # GDAL's own threads share this process's CPUs, not the machine's: a pool worker has one
    # (capacity.worker_cpus), so N workers never run N x ALL_CPUS threads
    memory = memory_gb if memory_gb is not None else worker_memory_gb()
    options: dict[str, str | bool] = dict(worker_config(memory, threads=worker_cpus(), local_scenes=local_scenes))
    options.update(gdal_s3_config())
    options.update(source_config(stac))
    for key in OPERATOR_OVERRIDES:  # an operator's explicit setting in the environment wins
        if os.environ.get(key):
            options[key] = os.environ[key]
    options["CPL_DEBUG"] = options["CPL_DEBUG"] == "ON"
    use_cache_max(int(options.pop("GDAL_CACHEMAX")))
    return rasterio.Env(**options)


_CACHE_LOCK = threading.Lock()


def use_cache_max(size: int) -> None:
    """Set GDAL's block cache limit for the whole process (there is one cache; it is not a per-thread
    option). Why not through ``rasterio.Env``: an Env sets the limit on entry and puts back, on exit,
    the limit it found, so writer threads entering and leaving theirs at different times flipped it
    between ours and GDAL's default under each other's reads (seen: 2,048 MB in one thread, GDAL's
    default 1,205 MB in the other, and tiles evicted that a neighbouring block then decoded again)."""
    with _CACHE_LOCK:
        if rasterio.env.get_gdal_config("GDAL_CACHEMAX") != size:
            rasterio.env.set_gdal_config("GDAL_CACHEMAX", size)


def require_gti_driver() -> str:
    """Fail early, and clearly, when the GDAL in this process lacks the GTI driver."""
    with rasterio.Env() as env:
        drivers = env.drivers()
    if "GTI" not in drivers:
        raise RuntimeError(
            f"GDAL {rasterio.__gdal_version__} (from rasterio {rasterio.__version__}) has no GTI driver; "
            "mosaic_assets needs GDAL >= 3.10 with GTI: install rasterio>=1.5 wheels on Python >= 3.12"
        )
    return rasterio.__gdal_version__
