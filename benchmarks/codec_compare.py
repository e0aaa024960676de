"""Codec comparison on the mosaic itself: encode and decode MB/s per core and compression ratio for
the candidate Zarr codecs, so the default (blosc-lz4 + byte shuffle) is chosen by measurement.

Single-threaded (blosc's internal threads off) so figures are per core; the chunks are the mosaic's
stored chunks (all-nodata chunks are never stored, so they are skipped here too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numcodecs
import numpy as np
import zarr
from numcodecs import Blosc, Zstd

from mosaic_assets.engine.store import VARIABLE

CANDIDATES: dict[str, numcodecs.abc.Codec] = {
    "blosc-lz4-5+shuffle (default)": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
    "zstd-3": Zstd(level=3),
    "blosc-zstd-3+shuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE),
    "blosc-lz4-5+bitshuffle": Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE),
}


def stored_chunks(store: str, time_index: int, nodata: float, limit: int) -> Iterator[np.ndarray]:
    """Up to ``limit`` chunks of one time step that hold data, as (band, y, x) arrays."""
    array = zarr.open_array(store, path=VARIABLE, mode="r")
    _, _, cy, cx = array.chunks
    found = 0
    for y in range(0, array.shape[2], cy):
        for x in range(0, array.shape[3], cx):
            chunk = np.ascontiguousarray(array[time_index, :, y : y + cy, x : x + cx])
            if np.any(chunk != nodata):
                yield chunk
                found += 1
                if found >= limit:
                    return


def measure(chunks: list[np.ndarray], repeats: int = 3) -> dict[str, dict]:
    """Best-of-``repeats`` encode and decode throughput (uncompressed MB/s) and the size ratio."""
    numcodecs.blosc.use_threads = False
    raw = sum(c.nbytes for c in chunks)
    out = {}
    for name, codec in CANDIDATES.items():
        enc_s, dec_s = float("inf"), float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            encoded = [codec.encode(c) for c in chunks]
            enc_s = min(enc_s, time.perf_counter() - started)
            started = time.perf_counter()
            for e in encoded:
                codec.decode(e)
            dec_s = min(dec_s, time.perf_counter() - started)
        size = sum(len(e) for e in encoded)
        out[name] = {
            "encode_mb_s": raw / 1e6 / enc_s,
            "decode_mb_s": raw / 1e6 / dec_s,
            "ratio": raw / size,
        }
    return {"chunks": len(chunks), "mb": raw / 1e6, "codecs": out}
