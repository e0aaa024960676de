"""Everything ``mosaic_assets.run build`` does (STAC search, scene tables, GTIs, template, partitions,
previews) with the engine's functions and no Dagster: the baseline for Dagster's overhead."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mosaic_assets.engine.preview import preview_markdown, write_preview

from ..compare import Reader, zarr_reader
from ..job import Job
from ..mosaic import layout_of, spec_of, time_index
from ..prepare import prepare
from .engine import write_all


def run(job: Job, context: None = None) -> dict:
    data_root = Path(job.out) / "data"
    steps = prepare(spec_of(job.spec), data_root)
    layout = layout_of(job.spec, str(data_root))
    results = write_all(replace(job, data_root=str(data_root), steps=tuple(steps)), layout.store)
    for step in steps:
        index = time_index(spec_of(job.spec), step)
        preview_markdown(write_preview(layout.store, index, layout.work_dir / "preview" / f"{step}.png"))
    return {"partitions": len(results)}


def output(job: Job, step: str) -> Reader:
    store = layout_of(job.spec, str(Path(job.out) / "data")).store
    return zarr_reader(store, time_index(spec_of(job.spec), step))
