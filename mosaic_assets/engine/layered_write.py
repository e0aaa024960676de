"""Writer threads that split a step's scenes instead of its pieces: each writer reads every piece
through a GTI of its own z-order layer of the scenes, and the layers are merged top over bottom.

Why: GDAL keeps a decoded scene tile in the block cache of the dataset that read it, and every writer
thread has its own datasets (``gti_cache``), so a tile two writers need is decoded by both. Split by
pieces (``parallel_write.territories_of``), every tile crossing the cut between two writers'
territories is, and the two writers' stacks of scenes share one cache budget: on the scaling
benchmark's 12 one-chunk partitions 20 scenes deep, two writers decoded 5,414 tiles where one decodes
3,520, and were 1.41x one. Split by layers, a scene belongs to one writer for the whole step, so each
tile is decoded once and each writer's cache holds half the scenes: there two writers decode 2,640
tiles with a cache that holds them all, as one writer does (at 2 GB, a 512 MB cache, 4,384), and are
1.88x one with a writer pod's memory per CPU or 8 GB for both, 1.67x with 2 GB for both
(``benchmarks.scaling``, 2026-12-07).

Exact: GTI draws a piece's scenes bottom to top, each from its own file and warped on its own, and a
scene's pixel replaces what is below it wherever that band is not nodata. A layer read through the
GTI's ``FILTER`` (its rank range of ``SORT_FIELD``, the step's z-order) draws that layer's scenes the
same way, so the piece is each band's top-most layer wherever that layer holds data
(``merge_layers``; tested byte for byte against one GTI read).

Balance: scenes do not cost the same (a scene warped from another grid 2.5x one on the mosaic's, a
scene at the edge covers little), so the layers are cut where their estimated costs over this call's
pieces are about equal (``cost_bounds``; equal counts put nearly two thirds of the scaling
benchmark's work in one layer). The estimate is never exact, so a writer keeps to its own layer,
piece after piece, and one whose next read would be ``WINDOW`` pieces past the oldest unwritten one
takes another layer's read of the oldest instead (only that read's tiles on its edges are then
decoded twice), so nobody idles and at most ``WINDOW`` pieces' layers are held (one piece's, when
that many would take more than ``LAYER_MEMORY_FRACTION`` of the worker's memory). The writer
finishing a piece's last layer merges and writes it.

Failures: a layer that cannot be read (or whose scene contradicts STAC) sends its piece to the
whole-piece path (``block_tasks.write_one``), which names the culprit, skips bad scenes when the spec
says so, and writes nothing of a piece that fails. Signed reads and composites never come here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import shapely

from .block_tasks import BlockOutcome, BlockTask, write_one
from .composite_read import needs_scene_reads
from .gdal_env import worker_memory_gb
from .grid import Block, MosaicGrid
from .gti import SORT_FIELD, GtiFiles, staged_locally
from .nested_read import nesting
from .spec import MosaicSpec
from .writer import BlockPixels, BlockWriteResult, block_scenes, read_block, verify_scenes, write_pixels

WINDOW = 2  # pieces a writer may run ahead of the oldest one not yet written
LAYER_MEMORY_FRACTION = 0.25  # of MOSAIC_WORKER_MEMORY_GB the layers in flight may take (GDAL's cache takes as much)
MIN_DEPTH_PER_WRITER = 2  # scenes over a pixel per writer, on average, below which layers are not used


def layer_filter(low: int, high: int) -> str:
    """The GTI ``FILTER`` selecting the scenes of ranks ``low`` .. ``high - 1`` of the step's z-order."""
    return f"{SORT_FIELD} >= {low} AND {SORT_FIELD} < {high}"


def merge_layers(layers: list[np.ndarray | None], nodata: float) -> np.ndarray | None:
    """The (band, y, x) pixels the layers (bottom first; None: no scene of it touches the piece) make
    drawn bottom to top, as GTI draws their scenes: each band's top-most layer where it is not nodata.
    Merged into the lowest layer's array."""
    drawn = [layer for layer in layers if layer is not None]
    if not drawn:
        return None
    merged = drawn[0]
    for layer in drawn[1:]:
        for band, over in zip(merged, layer):
            holds = ~np.isnan(over) if np.isnan(nodata) else over != nodata
            np.copyto(band, over, where=holds)
    return merged


def can_layer(spec: MosaicSpec) -> bool:
    """Whether a spec's pieces can be read in layers: plain GTI mosaics, read unsigned. (A composite
    reads scene by scene, ``composite_read``; a signed read goes through a GTI of the piece's scenes
    signed just then, ``signed_read``.)"""
    return not needs_scene_reads(spec) and spec.stac.modifier is None


@dataclass
class _Piece:
    """One piece and its layers' progress."""

    task: BlockTask
    files: GtiFiles  # the step's GTI, local (``staged_locally``)
    scenes: list[dict]  # every scene touching the piece
    layers: list[list[dict]]  # its scenes by layer, bottom first
    filters: list[str]  # each layer's GTI FILTER
    pending: list[int]  # layers (with scenes) no writer has taken yet
    covered: float = 0.0  # pixels its scenes cover, summed over the scenes (``covered_pixels``)
    data: dict[int, np.ndarray] = field(default_factory=dict)  # layers read
    reading: int = 0  # layers taken and not yet read
    failed: bool = False
    started: float = 0.0
    done: bool = False  # written (or nothing to write)


def _plan(spec: MosaicSpec, grid: MosaicGrid, pieces: list[BlockTask], layers: int) -> list[_Piece]:
    """Each piece's scenes, by the layers of its step (``cost_bounds`` over this call's pieces of it; a
    scene's rank is its index row's ``SORT_FIELD``), and how deep they lie."""
    found = []
    costs: dict[str, dict[int, float]] = {}  # step's index -> rank -> cost of its scene in these pieces
    for task, files, scenes in _scenes_of(spec, grid, pieces):
        covered = [covered_pixels(grid, task.block, scene) for scene in scenes]
        step = costs.setdefault(str(files.index), {})
        for scene, pixels in zip(scenes, covered):
            rank = scene[SORT_FIELD]
            step[rank] = step.get(rank, 0.0) + pixels * warp_weight(spec, grid, scene)
        found.append((task, files, scenes, sum(covered)))
    bounds_of = {index: cost_bounds(step, layers) for index, step in costs.items()}
    planned = []
    for task, files, scenes, covered in found:
        bounds = bounds_of[str(files.index)]
        by_layer = [[s for s in scenes if low <= s[SORT_FIELD] < high] for low, high in bounds]
        pending = [k for k, share in enumerate(by_layer) if share]
        filters = [layer_filter(low, high) for low, high in bounds]
        planned.append(_Piece(task, files, scenes, by_layer, filters, pending, covered=covered, done=not pending))
    return planned


def _scenes_of(
    spec: MosaicSpec, grid: MosaicGrid, pieces: list[BlockTask]
) -> list[tuple[BlockTask, GtiFiles, list[dict]]]:
    """Each piece with its step's local GTI and the scenes touching it (``block_scenes``'s records, with
    footprints): one index query per step, over all of its pieces, then each piece's by intersection
    (the test GDAL's query applies with GEOS), as the decision to layer costs the territories path too."""
    steps: dict[str, tuple[GtiFiles, list[BlockTask]]] = {}
    for task in pieces:
        files = staged_locally(spec, grid, task.files)
        steps.setdefault(str(files.index), (files, []))[1].append(task)
    found = {}
    for files, tasks in steps.values():
        blocks = [t.block for t in tasks]
        hull = Block(
            blocks[0].index,
            slice(min(b.rows.start for b in blocks), max(b.rows.stop for b in blocks)),
            slice(min(b.cols.start for b in blocks), max(b.cols.stop for b in blocks)),
        )
        scenes = block_scenes(grid, files, hull, with_geometry=True)
        for task in tasks:
            box = shapely.box(*grid.window_geobox(task.block).extent.boundingbox)
            found[id(task)] = (task, files, [s for s in scenes if s["geometry"].intersects(box)])
    return [found[id(task)] for task in pieces]


WARP_WEIGHT = 2.5  # CPU of a scene pixel warped from another grid against one copied from the mosaic's


def covered_pixels(grid: MosaicGrid, block: Block, scene: dict) -> float:
    """How many of the block's pixels a scene's footprint (the index's geometry) covers."""
    bounds = grid.window_geobox(block).extent.boundingbox
    pixel = abs(grid.geobox.resolution.x * grid.geobox.resolution.y)
    return scene["geometry"].intersection(shapely.box(*bounds)).area / pixel


def warp_weight(spec: MosaicSpec, grid: MosaicGrid, scene: dict) -> float:
    """What reading a pixel of the scene costs against one copied from a scene on the mosaic's grid:
    ``WARP_WEIGHT`` when its grid does not nest in the mosaic's (``nested_read.nesting``; measured on
    the scaling benchmark's scenes, nearest resampling: 0.042 CPU s per Mpx copied from a UTM 32 scene
    onto the UTM 32 grid, 0.10 warped from UTM 33). Only what balances the layers: a wrong guess costs
    speed, never pixels."""
    asset = scene.get("assets", {}).get(spec.bands[0].asset)
    return 1.0 if asset and nesting(grid, asset) is not None else WARP_WEIGHT


def cost_bounds(costs: dict[int, float], layers: int) -> list[tuple[int, int]]:
    """``layers`` consecutive rank ranges of about equal cost (``costs``: rank -> cost; ranks absent
    cost nothing), together covering every rank of the step from 0."""
    ranks = sorted(costs)
    if not ranks:
        return [(0, 0)] * layers
    total = sum(costs.values())
    cumulative = [0.0]
    for rank in ranks:
        cumulative.append(cumulative[-1] + costs[rank])
    cuts = [0]
    for k in range(1, layers):
        target = total * k / layers
        at = min(range(cuts[-1], len(ranks) + 1), key=lambda i: abs(cumulative[i] - target))
        cuts.append(at)
    edges = [0] + [ranks[i] if i < len(ranks) else ranks[-1] + 1 for i in cuts[1:]] + [ranks[-1] + 1]
    return list(zip(edges[:-1], edges[1:]))


def layer_window(spec: MosaicSpec, pieces: list[BlockTask], writers: int) -> int:
    """How many pieces' layers may be in flight: ``WINDOW``, or 1 when ``WINDOW`` pieces' layers (an
    array of the piece per writer, and as many kept for the next) would take more than
    ``LAYER_MEMORY_FRACTION`` of the worker's memory (``MOSAIC_WORKER_MEMORY_GB``). With one, a piece's
    readers wait while its last reader merges and writes it: slower, never more memory."""
    largest = max((p.block.shape[0] * p.block.shape[1] for p in pieces), default=0)
    held = 2 * WINDOW * writers * largest * len(spec.bands) * np.dtype(spec.dtype).itemsize
    return WINDOW if held <= LAYER_MEMORY_FRACTION * worker_memory_gb() * 1024**3 else 1


class LayeredWrite:
    """The pieces of a step written by ``writers`` threads, one z-order layer each (module docstring):
    ``run(w)`` in each writer thread, then ``results()``."""

    def __init__(self, spec: MosaicSpec, grid: MosaicGrid, store: str, pieces: list[BlockTask], writers: int):
        self.spec, self.grid, self.store, self.writers = spec, grid, store, writers
        self.pieces = _plan(spec, grid, pieces, writers)
        self.outcomes: dict[int, BlockOutcome] = {}
        self._cond = threading.Condition()
        self._free: list[np.ndarray] = []  # arrays of written pieces' layers, for the next ones
        self._closed = False
        self.window = layer_window(spec, pieces, writers)

    @property
    def worthwhile(self) -> bool:
        """Whether the pieces are deep enough for layers: on average ``MIN_DEPTH_PER_WRITER`` scenes over
        each pixel per writer. Shallower (a single date's mosaic: a scene or two deep), a writer's
        layer holds a few scenes far apart, each writer fills and merges whole pieces for them, and
        territories (``parallel_write.territories_of``), which decode twice only what lies along their
        cut, cost less: on the large benchmark (1-2 deep, 256 MiB pieces), layers took 13.6 s and 22.4
        CPU s where territories take 11.3 s and 20.6."""
        pixels = sum(p.task.block.shape[0] * p.task.block.shape[1] for p in self.pieces)
        depth = sum(p.covered for p in self.pieces) / max(1, pixels)
        return depth >= MIN_DEPTH_PER_WRITER * self.writers

    def results(self) -> list[BlockOutcome]:
        """Each piece's outcome, in the pieces' order (a piece no scene touches writes nothing)."""
        for index, piece in enumerate(self.pieces):
            if not piece.scenes:
                nothing = BlockPixels(None, 0)
                result = write_pixels(
                    self.spec, self.grid, self.store, piece.task.time_index, piece.task.block, nothing
                )
                self.outcomes[index] = BlockOutcome(piece.task.key, result)
        return [self.outcomes[i] for i in range(len(self.pieces))]

    def close(self) -> None:
        """Take nothing more (an interrupted step)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def run(self, writer: int) -> None:
        """Writer ``writer``'s loop: read layers, and merge and write each piece whose last layer it read."""
        while (taken := self._take(writer)) is not None:
            index, layer = taken
            piece = self.pieces[index]
            try:
                data, failed = self._read(piece, layer), False
            except Exception:  # the whole-piece path reads the piece again and says what failed
                data, failed = None, True
            with self._cond:
                piece.failed |= failed
                if data is not None:
                    piece.data[layer] = data
                piece.reading -= 1
                last = piece.reading == 0 and not piece.pending
            if last:
                self._finish(index)

    def _take(self, writer: int) -> tuple[int, int] | None:
        """The next (piece, layer) for ``writer``: its own layer of the next piece within ``window`` of
        the oldest piece not yet written, else the layer with most reads left of the oldest piece with
        one left; waits while everything within reach is being read; None when nothing is left."""
        with self._cond:
            while True:
                if self._closed or not any(p.pending for p in self.pieces):
                    return None
                oldest = next(i for i, p in enumerate(self.pieces) if not p.done)
                reach = [
                    i for i in range(oldest, min(oldest + self.window, len(self.pieces))) if self.pieces[i].pending
                ]
                own = [i for i in reach if writer in self.pieces[i].pending]
                if own:
                    return self._claim(own[0], writer)
                if reach:
                    piece = self.pieces[reach[0]]
                    return self._claim(reach[0], max(piece.pending, key=self._reads_left))
                self._cond.wait()

    def _reads_left(self, layer: int) -> int:
        return sum(layer in p.pending for p in self.pieces)

    def _claim(self, index: int, layer: int) -> tuple[int, int]:
        piece = self.pieces[index]
        piece.pending.remove(layer)
        piece.started = piece.started or time.perf_counter()
        piece.reading += 1
        return index, layer

    def _array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A (band, y, x) array of the spec's dtype, a written piece's when one is large enough (fresh
        memory is zeroed by the kernel page by page: ``gti_cache.block_buffer``)."""
        dtype = np.dtype(self.spec.dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        with self._cond:
            for k, free in enumerate(self._free):
                if free.nbytes >= size:
                    return self._free.pop(k)[:size].view(dtype).reshape(shape)
        return np.empty(size, dtype=np.uint8).view(dtype).reshape(shape)

    def _read(self, piece: _Piece, layer: int) -> np.ndarray:
        """One layer of the piece (its scenes checked against STAC first, as a whole piece's are)."""
        verify_scenes(self.spec, piece.layers[layer])
        out = self._array((len(self.spec.bands), *piece.task.block.shape))
        where = piece.filters[layer]
        return read_block(
            self.spec, self.grid, piece.files, piece.task.block, scenes=piece.scenes, out=out, where=where
        )

    def _finish(self, index: int) -> None:
        """Merge the piece's layers and write it; a piece with a failed layer is written whole instead."""
        piece = self.pieces[index]
        try:
            if piece.failed:
                outcome = write_one(self.spec, self.grid, self.store, piece.task)
            else:
                merged = merge_layers([piece.data.get(k) for k in range(self.writers)], self.spec.nodata)
                pixels = BlockPixels(merged, len(piece.scenes))
                outcome = _write_merged(self.spec, self.grid, self.store, piece.task, pixels, piece.started)
            self.outcomes[index] = outcome
        finally:
            with self._cond:
                self._free.extend(_buffer_of(a) for a in piece.data.values())
                piece.data.clear()
                piece.done = True
                self._cond.notify_all()


def _buffer_of(array: np.ndarray) -> np.ndarray:
    """The whole uint8 buffer an array from ``LayeredWrite._array`` is a view of."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _write_merged(
    spec: MosaicSpec, grid: MosaicGrid, store: str, task: BlockTask, pixels: BlockPixels, started: float
) -> BlockOutcome:
    """Write a merged piece, its error caught into the outcome as ``write_one`` does."""

    def write() -> BlockWriteResult:
        return write_pixels(spec, grid, store, task.time_index, task.block, pixels, task.placement, started)

    return write_one(spec, grid, store, task, write)
