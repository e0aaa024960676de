"""The order a whole build runs in on one machine, for any way of doing each piece of it.

``mosaic_assets.run build`` does each piece as a Dagster run; the benchmark's baseline does the same
pieces with the engine's functions alone. Both go through ``run_in_order``, so what differs between
them is only what each piece costs, never how the pieces overlap.

Why this order: catalogs are independent per time step, so they share the pool; the template runs
here once they are done (in the asset graph it is downstream of the GTIs, and running it earlier
would leave it looking older than its upstream in the UI); chunk batches go out once the template
exists (their sizes depend on how many blocks all steps have), and a step's preview as soon as its
own batches are done, so it fills a worker that would otherwise wait for another step's last batch
(on the large benchmark the batches of one wave differ by up to 1 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass


def batch_size(partitions: int, workers: int, per_run: int) -> int:
    """Partitions per ranged run: ``per_run`` (the spec's ``partitions_per_run``, what a backfill
    uses), but small enough that there are at least two runs per worker, so a slow run does not
    leave the other workers idle at the end."""
    return max(1, min(per_run, math.ceil(partitions / (2 * workers))))


@dataclass(frozen=True)
class BuildPieces:
    """How each piece is done; ``catalog``, ``write`` and ``preview`` go to the pool (picklable)."""

    catalog: Callable[[str], object]  # one time step's scene table and GTI
    template: Callable[[], object]  # the store's metadata, for every registered step
    batches: Callable[[list[str]], Mapping[str, list[list]]]  # step -> its batches of chunk partitions
    write: Callable[[list], object]  # one batch of chunk partitions
    preview: Callable[[str], object]  # one time step's preview


def run_in_order(pool: Executor, steps: list[str], pieces: BuildPieces) -> dict[str, list[list]]:
    """Catalogs (pool) -> the template (here) -> each step's batches (pool) -> its preview (pool) once
    its batches are done. On the first failure, batches not yet started are cancelled and no further
    preview is started; the failure is raised once the pieces already running have finished.
    Returns the batches, per step."""
    failure = _first_failure([pool.submit(pieces.catalog, step) for step in steps])
    if failure is not None:
        raise failure
    pieces.template()
    batches = {step: list(b) for step, b in pieces.batches(steps).items()}
    pending: dict[Future, str] = {pool.submit(pieces.write, batch): step for step in steps for batch in batches[step]}
    left = {step: len(batches[step]) for step in steps}
    previews = [pool.submit(pieces.preview, step) for step in steps if left[step] == 0]
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            step = pending.pop(future)
            if future.cancelled() or future.exception() is not None:
                failure = failure or future.exception()
                for other in pending:
                    other.cancel()  # only those not started yet; running ones finish
                continue
            left[step] -= 1
            if left[step] == 0 and failure is None:
                previews.append(pool.submit(pieces.preview, step))
    failure = failure or _first_failure(previews)
    if failure is not None:
        raise failure
    return batches


def _first_failure(futures: list[Future]) -> BaseException | None:
    """Wait for every future; the first exception among them, in order (None: all succeeded)."""
    wait(futures)
    return next((f.exception() for f in futures if not f.cancelled() and f.exception() is not None), None)
