"""Many blocks written at once, one writer per CPU the step may use (``capacity.worker_cpus``): by
default threads of the step's own process (``MOSAIC_WRITERS=threads``), or the step's process and one
worker process per other CPU (``MOSAIC_WRITERS=processes``).

How threads split the work: GDAL caches a decoded scene tile per open dataset, and each writer thread
has its own (``gti_cache``), so what two writers share they both decode. Pieces several scenes deep
(a monthly or yearly step: ``layered_write.MIN_DEPTH_PER_WRITER`` per writer on average) are split by
z-order layers of the scenes: every writer reads every piece, through a GTI of its own share of the
scenes, and the layers are merged top over bottom (``layered_write``), so each tile is decoded once.
Shallower pieces are split by territories of neighbouring pieces (``territories_of``, ``_Territories``),
whose shared edges alone are decoded twice. Measured on the scaling benchmark (12 one-chunk partitions
20 scenes deep, 2 GB for both, 2026-12-07): layers 1.67x one writer, territories 1.41x (layers 1.88x with a
writer pod's memory per CPU).

Why threads by default: GDAL and blosc release the GIL, every writer thread keeps its own GTI open
and GTI's own thread pool stays off (``GTI_NUM_THREADS=1``, its deadlock on reprojected tiles), so
nothing serialises them but Python's share of a block. And threads share one GDAL block cache budget
and touch its memory once instead of once per process. Measured on the quick benchmark (4
partitions, 2 CPUs): 2 threads 2.85 s wall and 4.9-5.0 CPU s, 2 processes 2.95-3.9 s and 5.5-7.4 CPU s,
1 writer 5.0 s. Processes remain for an operator who measures otherwise on a larger
pod: each then gets an equal share of the step's memory (``MOSAIC_WORKER_MEMORY_GB`` divided by the
writers) and one CPU for GDAL's threads, so GDAL's caches, sized from it by ``gdal_env`` (the seed's
heuristics), add up to what the pod was given. Threads share the process's caches, sized from the
whole of it. Processes take runs of neighbouring pieces (``runs_of``).

The partition is not the unit of parallel work: a large partition is written in chunk-aligned pieces
of at most ``PIECE_BYTES`` (``pieces_of``), so partitions can be a few GiB (a continent stays under
Dagster's ~100k partitions per asset) while each worker holds one piece.

Failures never stop the others: every block is attempted, each outcome (result, or the error naming
item, asset and href) returned in the order given, so the caller can record what was written and fail
naming every partition that was not. Every chunk is whole or absent either way: a piece is read
completely before its region is written (``writer.write_block``).
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .block_tasks import BlockOutcome, BlockTask, failed_outcomes, write_one
from .capacity import CPUS_ENV, cpus_in_this_thread, worker_cpus
from .gdal_env import MEMORY_ENV, memory_in_this_thread, worker_memory_gb
from .grid import MosaicGrid
from .layered_write import LayeredWrite, can_layer
from .spec import MosaicSpec
from .workers import start_method, worker_pool
from .writer import BlockWriteResult

PIECE_BYTES = 256 * 1024**2  # uncompressed bytes a writer reads and writes at once (RSS ~3x that)
WRITERS_ENV = "MOSAIC_WRITERS"
WRITER_KINDS = ("threads", "processes")


def writer_kind() -> str:
    """``MOSAIC_WRITERS``: ``threads`` (the default) or ``processes``; anything else is refused, naming it."""
    kind = (os.environ.get(WRITERS_ENV) or "threads").strip().lower()
    if kind not in WRITER_KINDS:
        raise ValueError(f"{WRITERS_ENV}={kind!r}: expected one of {', '.join(WRITER_KINDS)}")
    return kind


def write_blocks(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    tasks: list[BlockTask],
    cpus: int | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> list[BlockOutcome]:
    """Write every task's block with ``cpus`` writers (default: ``worker_cpus()``; threads or processes
    as ``writer_kind`` says; in this thread when that is 1). Blocks larger than ``piece_bytes`` are cut
    into chunk-aligned pieces (``pieces_of``), and so, down to a quarter of it, are a few large blocks,
    so every worker has work."""
    cpus = cpus or worker_cpus()
    kind = writer_kind()
    pieces = pieces_of(spec, grid, tasks, cpus, piece_bytes)
    workers = min(cpus, len(pieces))
    if workers <= 1 or (kind == "processes" and not _worth_a_pool(spec, grid, pieces)):
        done = [write_one(spec, grid, store, piece) for piece in pieces]
    elif kind == "threads":
        done = _on_threads(spec, grid, store, pieces, workers)
    else:
        done = _on_pool(spec, grid, store, pieces, workers)
    return [_combined(task.key, [o for o in done if o.key == task.key]) for task in tasks]


def _on_threads(
    spec: MosaicSpec, grid: MosaicGrid, store: str, pieces: list[BlockTask], workers: int
) -> list[BlockOutcome]:
    """The pieces written by this thread and ``workers - 1`` helper threads (``_helper_threads``), each
    with one CPU for GDAL's threads: split by z-order layers of the scenes when the pieces are deep
    enough (``layered_write``: every scene tile decoded once), else in territories of neighbouring
    pieces (``_Territories``)."""
    known: list[list[dict] | None] = [None] * len(pieces)  # each piece's scenes, when the plan asked
    layered = _planned(spec, grid, store, pieces, workers)
    if layered is not None:
        if layered.worthwhile:
            _in_threads(workers, layered.run, layered.close)
            return layered.results()
        known = [piece.scenes for piece in layered.pieces]  # not asked again, piece by piece
    territories = _Territories(territories_of(pieces, workers))
    done: dict[int, BlockOutcome] = {}

    def write_taken(writer: int) -> None:
        while (taken := territories.take(writer)) is not None:
            try:
                done[taken] = write_one(spec, grid, store, pieces[taken], scenes=known[taken])
            except BaseException as exc:  # write_one catches errors; this is an interrupt or worse
                done[taken] = failed_outcomes([pieces[taken]], f"{type(exc).__name__}: {exc}", "bug", False)[0]
                raise

    _in_threads(workers, write_taken, territories.close)
    return [done[i] for i in sorted(done)]


def _planned(
    spec: MosaicSpec, grid: MosaicGrid, store: str, pieces: list[BlockTask], workers: int
) -> LayeredWrite | None:
    """The pieces' layered plan, or None when the spec cannot be layered or the plan fails (an index
    that cannot be read): then each piece asks for its scenes itself and its outcome says what failed,
    as the territories path always did."""
    if not can_layer(spec):
        return None
    try:
        return LayeredWrite(spec, grid, store, pieces, workers)
    except Exception:
        return None


def _in_threads(workers: int, write: Callable[[int], None], close: Callable[[], None]) -> None:
    """``write(0)`` in this thread and ``write(1)`` .. ``write(workers - 1)`` in helper threads, each with
    one CPU for GDAL's threads; ``close()`` when this thread's part ends (interrupted: a cancelled run,
    so the others take nothing more either), then waits for the helpers and raises what one raised."""

    def each(writer: int) -> None:
        with cpus_in_this_thread(1):
            write(writer)

    helping = [_helper_threads(workers - 1).submit(each, writer) for writer in range(1, workers)]
    try:
        each(0)
    finally:
        close()
        wait(helping)
    for future in helping:
        future.result()  # a helper's interrupt, after its piece's outcome was recorded


def territories_of(pieces: list[BlockTask], writers: int) -> list[list[int]]:
    """The pieces' indexes as ``writers`` territories of neighbours, each in row-major order.

    Cut in two recursively, across the longer side of what is left (time steps first: pieces of two
    steps share no scene), in shares proportional to the writers each side gets. What two writers'
    territories share along the cut, each decodes (a writer's kept GTI caches tiles for its own thread);
    a cut across the longer side is the shortest: on the scaling benchmark's 4 x 3 blocks, 3 block
    edges instead of 5 for halves in row-major order (there its decodes did not change measurably,
    3,550-3,600 either way: its 20-deep scenes span both halves; a ranged run of a wide grid, a row of
    blocks, is where it counts)."""

    def where(i: int) -> tuple[int, int, int]:
        block = pieces[i].block
        return pieces[i].time_index, block.rows.start, block.cols.start

    def split(indexes: list[int], writers: int) -> list[list[int]]:
        if writers == 1 or len(indexes) <= 1:
            return [sorted(indexes, key=where)] + [[] for _ in range(writers - 1)]
        height = max(pieces[i].block.rows.stop for i in indexes) - min(pieces[i].block.rows.start for i in indexes)
        width = max(pieces[i].block.cols.stop for i in indexes) - min(pieces[i].block.cols.start for i in indexes)

        def along(i: int) -> tuple[int, int, int]:  # the order a cut across the longer side splits
            step, row, col = where(i)
            return (step, row, col) if height > width else (step, col, row)

        across = sorted(indexes, key=along)
        first = writers // 2
        cut = round(len(indexes) * first / writers)
        return split(across[:cut], first) + split(across[cut:], writers - first)

    return split(list(range(len(pieces))), writers)


class _Territories:
    """Piece indexes in one territory of neighbours per writer (``territories_of``). A writer takes the
    front of its own; once that is empty, the back of the territory with most left, so it works
    backwards from the far end of another writer's territory and both keep walking over neighbours;
    nobody idles while a piece is left.

    Why: neighbouring pieces read the same scene tiles, which stay decoded in the GDAL block cache of
    the writer's own kept GTI (``gti_cache``: one per thread). Guided runs (``runs_of``) alternate short
    runs between the writers towards the end, putting more neighbours in different threads: on the
    quick benchmark (ranged runs of 8, 2 writers) 388 tile decodes against 369-372 with territories (as
    halves in row-major order), and a ranged run of a wide grid (a row of 8 blocks) splits into 2 strips
    with one shared edge."""

    def __init__(self, territories: list[list[int]]) -> None:
        self._runs = [collections.deque(t) for t in territories]
        self._from = list(range(len(territories)))  # whose territory each writer takes from: its own first
        self._lock = threading.Lock()

    def take(self, writer: int) -> int | None:
        with self._lock:
            run = self._runs[self._from[writer]]
            if run:
                return run.popleft() if self._from[writer] == writer else run.pop()
            # helps the writer with most left, from its far end, until that territory is done
            self._from[writer] = max(range(len(self._runs)), key=lambda w: len(self._runs[w]))
            run = self._runs[self._from[writer]]
            return run.pop() if run else None

    def close(self) -> None:
        with self._lock:
            for run in self._runs:
                run.clear()


_helpers: tuple[int, ThreadPoolExecutor] | None = None
_helpers_lock = threading.Lock()


def _helper_threads(count: int) -> ThreadPoolExecutor:
    """``count`` writer threads that outlive one call, as a pool's processes do: each keeps its GTIs and
    block buffer (``gti_cache``) for the step's next ranged run instead of reopening them (the step's own
    thread already did). Measured on the quick benchmark's 34 partitions of 32 MiB in ranged runs of 8:
    no change this machine could resolve (6.8-7.5 CPU s either way); kept because neighbouring ranged
    runs of a backfill share scenes, and a thread per call would have been a thread start per call."""
    global _helpers
    with _helpers_lock:
        if _helpers is None or _helpers[0] < count:
            if _helpers is not None:
                _helpers[1].shutdown(wait=False)
            _helpers = (count, ThreadPoolExecutor(count, thread_name_prefix="mosaic-writer"))
        return _helpers[1]


def _on_pool(
    spec: MosaicSpec, grid: MosaicGrid, store: str, pieces: list[BlockTask], workers: int
) -> list[BlockOutcome]:
    """The pieces as runs of neighbours (``runs_of``), taken in turn by this process and by ``workers - 1``
    worker processes, each writer with its share of the step's CPUs and memory.

    Why this process writes too: it would only wait, and it can start at once, while the workers are
    still starting (a fork server's imports take a second or two); one process fewer to feed. A worker
    killed (OOM, SIGKILL, node pressure) breaks the pool: its runs and those in flight are reported as
    transient failures, and this process writes the runs not yet taken."""
    share = worker_memory_gb() / workers
    queue = _RunQueue(runs_of(pieces, workers))
    pool = worker_pool(workers - 1, _setup_for(share)) if start_method() == "fork" else None  # forked first
    helper = threading.Thread(
        target=_feed_pool, args=(spec, grid, store, queue, pool, workers - 1, share), name="mosaic-writer-pool"
    )
    helper.start()
    try:
        with cpus_in_this_thread(1), memory_in_this_thread(share):
            while (taken := queue.take()) is not None:
                queue.finish(taken, write_run(spec, grid, store, queue.runs[taken]))
    finally:
        queue.close()  # interrupted (a cancelled run): the workers take nothing more either
        helper.join()
    return queue.outcomes()


class _RunQueue:
    """The runs of a step, taken once each by whichever writer asks first, and their outcomes."""

    def __init__(self, runs: list[list[BlockTask]]) -> None:
        self.runs = runs
        self._next = 0
        self._done: dict[int, list[BlockOutcome]] = {}
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.runs):
                return None
            self._next += 1
            return self._next - 1

    def close(self) -> None:
        with self._lock:
            self._next = len(self.runs)

    def finish(self, index: int, outcomes: list[BlockOutcome]) -> None:
        with self._lock:
            self._done[index] = outcomes

    def outcomes(self) -> list[BlockOutcome]:
        return [o for i in range(len(self.runs)) for o in self._done[i]]


def _feed_pool(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    queue: _RunQueue,
    pool: ProcessPoolExecutor | None,
    workers: int,
    share: float,
) -> None:
    """In a thread: start the worker processes (unless forked already), then keep each one busy with
    one run at a time until none is left. Every run taken gets outcomes, whatever fails."""
    in_flight: dict[Future, int] = {}
    broken = False
    try:
        pool = pool or worker_pool(workers, _setup_for(share))
        while True:
            while not broken and len(in_flight) < workers and (taken := queue.take()) is not None:
                try:
                    in_flight[pool.submit(write_run, spec, grid, store, queue.runs[taken])] = taken
                except BrokenProcessPool as exc:  # a worker died between two runs: this run never started
                    broken = True
                    queue.finish(taken, failed_outcomes(queue.runs[taken], f"its worker process died: {exc}", "", True))
            if not in_flight:
                return
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                index = in_flight.pop(future)
                try:
                    queue.finish(index, future.result())
                except BrokenProcessPool as exc:
                    broken = True
                    queue.finish(index, failed_outcomes(queue.runs[index], f"its worker process died: {exc}", "", True))
                except Exception as exc:  # the run never reached a worker (pickling, a pool that cannot start)
                    queue.finish(
                        index, failed_outcomes(queue.runs[index], f"{type(exc).__name__}: {exc}", "bug", False)
                    )
    except Exception as exc:  # the pool did not start: this process writes every run left
        for index in in_flight.values():
            queue.finish(index, failed_outcomes(queue.runs[index], f"{type(exc).__name__}: {exc}", "bug", False))
    finally:
        if pool is not None:
            if broken:
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.kill()  # one may hold the pool's queue lock the dead one left taken
            pool.shutdown(wait=not broken, cancel_futures=True)


def _setup_for(share: float) -> functools.partial:
    return functools.partial(_worker_setup, share)


def runs_of(pieces: list[BlockTask], workers: int) -> list[list[BlockTask]]:
    """The pieces, in their order, as runs of consecutive pieces that shrink towards the end: each run
    a ``2 x workers``-th of the pieces left (guided scheduling), so 12 pieces for 2 writers are runs of
    3, 3, 2, 1, 1, 1, 1. How worker processes take pieces (a pool hands a run to whichever is free);
    threads keep territories (``_Territories``).

    Why runs, not single pieces: neighbouring pieces read the same scene tiles, and a writer that
    writes them in turn finds those tiles already decoded in its GDAL block cache; pieces handed out one
    at a time go to whichever writer is free, so every tile two neighbours share is decoded twice. Why
    shrinking: a writer done early takes the next run instead of idling while a long last one finishes."""
    runs, start = [], 0
    while start < len(pieces):
        size = -(-(len(pieces) - start) // (2 * max(1, workers)))
        runs.append(pieces[start : start + size])
        start += size
    return runs


def write_run(spec: MosaicSpec, grid: MosaicGrid, store: str, run: list[BlockTask]) -> list[BlockOutcome]:
    """A run of pieces in one worker, in order, each outcome its own (one failing never stops the rest)."""
    return [write_one(spec, grid, store, piece) for piece in run]


POOL_MIN_BYTES_ENV = "MOSAIC_WORKER_POOL_MIN_BYTES"
POOL_MIN_BYTES = 64 * 1024**2  # below this much output a fork server costs more than it saves


def _worth_a_pool(spec: MosaicSpec, grid: MosaicGrid, pieces: list[BlockTask]) -> bool:
    """A forked pool costs next to nothing. A process that runs threads, as a Dagster step does, starts
    a fork server instead (``engine.workers``), once per process: ~2 CPU s for its imports, while this process
    already writes. Measured on 12 one-chunk partitions (96 MiB) 20 scenes deep: 2 writers 1.7x faster
    than one. Less output than ``MOSAIC_WORKER_POOL_MIN_BYTES`` (64 MiB; a few small demo partitions)
    is written in this process alone."""
    if start_method() == "fork":
        return True
    least = int(os.environ.get(POOL_MIN_BYTES_ENV) or POOL_MIN_BYTES)
    return sum(grid.chunks_in(p.block) for p in pieces) * spec.chunk_bytes >= least


def pieces_of(
    spec: MosaicSpec, grid: MosaicGrid, tasks: list[BlockTask], cpus: int, piece_bytes: int = PIECE_BYTES
) -> list[BlockTask]:
    """The tasks' blocks as pieces of at most ``piece_bytes``; with fewer blocks than CPUs, cut further
    (to about as many pieces as CPUs, none below a quarter of ``piece_bytes``).

    A block written in one piece is all or nothing: it is read whole before any chunk is written, so a
    failure leaves its chunks as they were. A block written in several pieces is not: each piece is,
    and a failed partition may hold its written pieces' new chunks beside the failed ones' old chunks
    (each chunk whole) until its rerun. Partitions of at most a quarter of ``piece_bytes`` (64 MiB by
    default) are never cut."""
    most = max(1, piece_bytes // spec.chunk_bytes)
    if 0 < len(tasks) < cpus:
        largest = max(grid.chunks_in(t.block) for t in tasks)
        least = max(1, piece_bytes // 4 // spec.chunk_bytes)
        most = min(most, max(least, -(-largest * len(tasks) // cpus)))
    return [
        BlockTask(task.key, task.files, task.time_index, piece, task.placement)
        for task in tasks
        for piece in grid.pieces(task.block, most)
    ]


def _combined(key: str, outcomes: list[BlockOutcome]) -> BlockOutcome:
    """One partition's outcome from its pieces': the first error (its chunks whole or absent, the other
    pieces' written), retryable when every error was; else the results summed (``scenes``: the busiest
    piece's, a scene touching two pieces is one scene)."""
    errors = [o for o in outcomes if o.error is not None]
    if errors:
        first = errors[0]
        return BlockOutcome(key, error=first.error, kind=first.kind, transient=all(o.transient for o in errors))
    results = [o.result for o in outcomes]
    if len(results) == 1:
        return outcomes[0]
    skipped = {s.item_id: s for r in results for s in r.skipped}
    return BlockOutcome(
        key,
        BlockWriteResult(
            scenes=max(r.scenes for r in results),
            pixels=sum(r.pixels for r in results),
            valid_pixels=sum(r.valid_pixels for r in results),
            chunks_written=sum(r.chunks_written for r in results),
            bytes_uncompressed=sum(r.bytes_uncompressed for r in results),
            seconds=sum(r.seconds for r in results),
            skipped=tuple(skipped[i] for i in sorted(skipped)),
        ),
    )


def _worker_setup(memory_gb: float) -> None:
    """Pool initializer: this worker's share of the memory, and no pool of its own."""
    os.environ[MEMORY_ENV] = f"{memory_gb:.3f}"
    os.environ[CPUS_ENV] = "1"
