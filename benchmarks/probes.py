"""The per-partition targets, each measured in a fresh process (benchmarks.partition_probe):
an empty partition's cost against a full one (engine and Dagster), and one writer's peak RSS on this
mosaic and on the same scenes in a grid 4x the area (same partition size).

Why a grown grid instead of a second scene set: the writer's memory must depend on the partition,
not on the mosaic, and the grown grid changes only the mosaic (and has empty blocks to time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mosaic_assets.engine.catalog import load_scene_table
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.store import ensure_template
from mosaic_assets.engine.writer import scenes_in_block

from .dataset import REPO
from .job import Job
from .methods.dagster import dagster_env
from .mosaic import grid_of, layout_of, spec_of, time_length


def pick_blocks(spec_path: str, data_root: str, step: str) -> tuple[str, str | None]:
    """A full-size block with the most scenes (a 'full' partition), and a block no scene touches."""
    grid, layout = grid_of(spec_path), layout_of(spec_path, data_root)
    touched = blocks_with_scenes(grid, load_scene_table(layout.scene_table(step)))
    full = [grid.block(i) for i in sorted(touched) if grid.block(i).shape == grid.block_shape]
    busiest = max(full, key=lambda b: len(scenes_in_block(grid, layout.gti(step), b)))
    empty = next((b.key for b in grid.blocks() if b.index not in touched), None)
    return busiest.key, empty


def _probe(mode: str, args: dict, workdir: Path, env: dict[str, str] | None = None) -> dict:
    args_path = workdir / f"probe-{mode}.json"
    args_path.write_text(json.dumps(args))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.partition_probe", mode, str(args_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"partition probe {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _store(spec_path: str, steps: list[str], path: Path) -> str:
    ensure_template(spec_of(spec_path), grid_of(spec_path), str(path), time_length(spec_of(spec_path), steps))
    return str(path)


def writer_rss(job: Job, grown: Job, workdir: Path) -> dict:
    """One full partition's writer, on this mosaic and on the 4x grid."""
    out = {}
    for label, j in (("mosaic", job), ("mosaic_x4", grown)):
        full, _ = pick_blocks(j.spec, j.data_root, j.steps[0])
        store = _store(j.spec, list(j.steps), workdir / f"rss-{label}.zarr")
        args = {"spec": j.spec, "data_root": j.data_root, "store": store, "step": j.steps[0], "full": full}
        out[label] = {**_probe("rss", args, workdir), "block": full}
    return out


def partition_cost(grown: Job, workdir: Path, repeats: int) -> dict:
    """Empty vs full partition, in the engine and as Dagster materializations (grown grid: has empty blocks)."""
    full, empty = pick_blocks(grown.spec, grown.data_root, grown.steps[0])
    if empty is None:
        return {"error": "the grid has no empty block"}
    args = {"spec": grown.spec, "data_root": grown.data_root, "step": grown.steps[0], "full": full, "empty": empty}
    engine = _probe(
        "engine",
        {**args, "repeats": repeats, "store": _store(grown.spec, list(grown.steps), workdir / "cost-engine.zarr")},
        workdir,
    )
    # The Dagster probe reads GTIs and writes the store where the definitions' layout puts them.
    dagster_job = Job("dagster", grown.spec, grown.data_root, str(workdir / "cost-dagster"), grown.steps, 1, grown.api)
    env = {**dagster_env(dagster_job), "MOSAIC_DATA_DIR": grown.data_root}
    layout = layout_of(grown.spec, grown.data_root)
    _store(grown.spec, list(grown.steps), Path(layout.store))
    dagster = _probe("dagster", {**args, "repeats": repeats}, workdir, env)
    return {"full_block": full, "empty_block": empty, "engine": engine, "dagster": dagster}
