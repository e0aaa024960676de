"""Ours via Dagster: ``python -m mosaic_assets.run build`` (the demo's own command) on a fresh
instance, so every asset is a real materialization recorded in a real (SQLite) instance.

The environment is the tests' ``dagster_env``: DAGSTER_HOME, MOSAIC_SPECS, MOSAIC_DATA_DIR and
MOSAIC_STAC_API_URL point at this run's folder, spec and STAC API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def run(job: Job, context: None = None) -> dict:
    log = Path(job.out) / "build.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "mosaic_assets.run", "build", "--workers", str(job.workers)],
            env=dagster_env(job),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"mosaic_assets.run build failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return {"log": str(log)}


def output(job: Job, step: str) -> Reader:
    store = layout_of(job.spec, str(Path(job.out) / "data")).store
    return zarr_reader(store, time_index(spec_of(job.spec), step))
