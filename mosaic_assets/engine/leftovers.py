"""Temporary files a killed local write leaves in the store, and their removal.

zarr's local store writes each chunk to ``<chunk>.<uuid>.partial`` and renames it into place, so a
reader never sees half a chunk; a writer killed between the two (SIGKILL, OOM, node loss) leaves the
empty temporary behind. The next write of the same block removes them, so a rerun ends in a store
byte-identical to one never interrupted. Object stores need nothing: a PUT lands whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

from .grid import Block, MosaicGrid
from .object_store import Location, as_location


def block_partials(
    store: Location,
    variable: str,
    grid: MosaicGrid,
    time_index: int | None,
    block: Block,
    band_chunks: list[int] | None = None,
) -> list[Path]:
    """The ``.partial`` temporaries of the chunks of ``block`` at ``time_index`` (empty for object stores).

    ``band_chunks``: only these chunks along ``band`` (a cube's source never touches another's
    temporaries, which may be a live write); ``time_index`` None: a static ``(y, x)`` variable."""
    root = as_location(store)
    if not isinstance(root, Path):
        return []
    cy, cx = grid.chunk_shape
    rows = range(block.rows.start // cy, -(-block.rows.stop // cy))
    cols = range(block.cols.start // cx, -(-block.cols.stop // cx))
    if time_index is None:
        parents = [root / variable / "c"]
    elif band_chunks is None:
        parents = list((root / variable / "c" / str(time_index)).glob("*"))
    else:
        parents = [root / variable / "c" / str(time_index) / str(b) for b in band_chunks]
    found: list[Path] = []
    for parent in parents:
        for row in rows:
            folder = parent / str(row)
            if folder.is_dir():
                found += [p for col in cols for p in folder.glob(f"{col}.*.partial")]
    return sorted(found)


def remove_block_partials(
    store: Location,
    variable: str,
    grid: MosaicGrid,
    time_index: int | None,
    block: Block,
    band_chunks: list[int] | None = None,
) -> int:
    """Delete what a killed earlier write of this block left; returns how many files went."""
    partials = block_partials(store, variable, grid, time_index, block, band_chunks)
    for path in partials:
        path.unlink(missing_ok=True)
    return len(partials)
