"""What a step's writers pass around: a block to write (``BlockTask``), what became of it
(``BlockOutcome``), and ``write_one``, which writes one block and catches its error into the outcome,
whichever way the writers split the work (``parallel_write``, ``layered_write``)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

from .grid import Block, MosaicGrid
from .gti import GtiFiles
from .spec import MosaicSpec
from .store import WHOLE_MOSAIC, Placement, StoreMismatch
from .writer import BlockWriteResult, SceneReadError, write_block


@dataclass(frozen=True)
class BlockTask:
    """One block to write: ``key`` names it in messages (the partition key); ``placement``: where in the
    store (a cube's source writes its own bands)."""

    key: str
    files: GtiFiles
    time_index: int
    block: Block
    placement: Placement = WHOLE_MOSAIC


@dataclass(frozen=True)
class BlockOutcome:
    """What became of a task: its result, or the error (``kind``: ``scene``, ``store`` or ``bug``, the
    last with the worker's traceback) and whether a retry may help."""

    key: str
    result: BlockWriteResult | None = None
    error: str | None = None
    kind: str = ""
    transient: bool = False


def write_one(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    task: BlockTask,
    write: Callable[[], BlockWriteResult] | None = None,
    scenes: list[dict] | None = None,
) -> BlockOutcome:
    """One block, its error caught into the outcome (exceptions with extra state do not pickle whole).
    ``write``: how to write it, when not ``write_block`` (``layered_write`` writes its merged layers);
    ``scenes``: the block's scenes when known (``writer.block_pixels``)."""
    try:
        if write is None:
            written = write_block(
                spec, grid, store, task.files, task.time_index, task.block, task.placement, scenes=scenes
            )
            return BlockOutcome(task.key, written)
        return BlockOutcome(task.key, write())
    except SceneReadError as exc:
        return BlockOutcome(task.key, error=str(exc), kind="scene", transient=exc.transient)
    except StoreMismatch as exc:
        return BlockOutcome(task.key, error=str(exc), kind="store")
    except Exception as exc:  # a bug: the caller raises it with the worker's traceback
        return BlockOutcome(task.key, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", kind="bug")


def failed_outcomes(run: list[BlockTask], error: str, kind: str, transient: bool) -> list[BlockOutcome]:
    return [BlockOutcome(piece.key, error=error, kind=kind, transient=transient) for piece in run]
