"""Ours via Dagster: ``mosaic_assets.run.build`` (what ``python -m mosaic_assets.run build``, the
demo's own command, runs) on a fresh instance, so every asset is a real materialization with its
asset checks, recorded in a real (SQLite) instance.

In this process, like every other method: importing Dagster, loading the definitions and creating
the instance's storage happen in the untimed ``setup`` (a deployment has its code server loaded
and its instance created already); opening the instance, the worker pool and every run are timed.
The environment is the tests' ``dagster_env``: DAGSTER_HOME, MOSAIC_SPECS, MOSAIC_DATA_DIR and
MOSAIC_STAC_API_URL point at this run's folder, spec and STAC API, and the workers inherit it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..compare import Reader, zarr_reader
from ..dataset import REPO
from ..job import Job
from ..mosaic import layout_of, spec_of, time_index


def dagster_env(job: Job) -> dict[str, str]:
    home = Path(job.out) / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOSAIC_SPECS": job.spec,
        "MOSAIC_DATA_DIR": str(Path(job.out) / "data"),
        "MOSAIC_STAC_API_URL": job.api,
    }


def prepare_instance(env: dict[str, str]) -> None:
    """Untimed: point this process (and the workers it will fork) at ``env``, import Dagster and the
    definitions, and create the instance's storage (a deployment's instance exists already)."""
    os.environ.update(env)
    import dagster as dg

    from mosaic_assets.run import load_defs

    load_defs()  # reads MOSAIC_SPECS
    with dg.DagsterInstance.get():
        pass


def setup(job: Job) -> None:
    prepare_instance(dagster_env(job))


def run(job: Job, context: None = None) -> dict:
    from mosaic_assets.run import build

    summaries = build(job.workers)
    return {
        "chunk_runs": sum(s["chunk_runs"] for s in summaries),
        "partitions": sum(s["chunk_partitions"] for s in summaries),
    }


def output(job: Job, step: str) -> Reader:
    store = layout_of(job.spec, str(Path(job.out) / "data")).store
    return zarr_reader(store, time_index(spec_of(job.spec), step))
