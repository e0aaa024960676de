"""Command line: build the demo data, and materialize every mosaic's asset graph through Dagster.

``python -m mosaic_assets.run demo-data`` generates scenes and loads them into the STAC API;
``python -m mosaic_assets.run build`` registers the time steps found in the STAC API as dynamic
partitions and materializes catalog -> GTI -> template -> chunks -> preview on the Dagster
instance at $DAGSTER_HOME, chunk partitions spread over worker processes (one per core).

``build`` exits with
  0  every mosaic built;
  1  an error: a data error (the engine's message naming item, href or key: a bad item, a missing
     asset, an unreadable scene, a store built for another grid, an invalid spec, the STAC API failing)
     prints as one line ``error: <message>`` on stderr, its traceback only with ``--verbose``;
     anything else (a bug) prints its traceback too;
  3  no error, but some mosaic (or a cube's source) has no items yet (its collections hold none in its
     area from its time grid's start on): stderr names the mosaic, the STAC URL, the collections and the
     query. Nothing is written for it (no store, no runs, no partitions; a cube is built from its other
     sources), and the other mosaics are built as usual. Not 2: that is argparse's usage error.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from mosaic_assets.engine.capacity import cpu_share, use_cpu_share

if TYPE_CHECKING:
    from mosaic_assets.defs.mosaic import MosaicAssets, MosaicPartitions  # noqa: F401
    from mosaic_assets.defs.resources import DataRootResource, StacApiResource
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.spec import CubeSpec, MosaicSpec


def load_defs() -> dg.Definitions:
    """The code location's definitions (imported on first use: they read the spec from the environment)."""
    from mosaic_assets.definitions import defs

    return defs


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
EXIT_OK, EXIT_ERROR, EXIT_EMPTY = 0, 1, 3  # see the module docstring


# Dagster's console log at WARNING, without the step and run failure events (``build_console_logger``)
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_FAILURE_EVENTS = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}


def _not_a_failure_event(record: logging.LogRecord) -> bool:
    event = getattr(record, "dagster_event", None)
    return event is None or event.event_type not in _FAILURE_EVENTS


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, is_required=False, default_value="WARNING"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Dagster's colored console logger without step and run failure events",
)
def build_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """The console logger of build runs. A failure's events (each a traceback) stay in the run's event
    log (the UI shows them); on the console it is the caller's to tell: ``materialize`` raises
    ``RunFailed``, whose message the command prints as one line (its traceback under ``--verbose``)."""
    logger = dg.colored_console_logger.logger_fn(init_context)
    logger.addFilter(_not_a_failure_event)
    return logger


class RunFailed(Exception):
    """A build run failed: ``message`` names the run's assets and partitions, then the step's error;
    ``details`` is its traceback as text; ``data_error`` says whether that error is a data error
    (``is_data_error``). Made of strings only, so it crosses the worker pool whatever the step raised
    (a traceback does not cross it, and an exception whose constructor takes other arguments than its
    message does not unpickle)."""

    def __init__(self, message: str, details: str, data_error: bool) -> None:
        super().__init__(message, details, data_error)
        self.message, self.details, self.data_error = message, details, data_error

    def __str__(self) -> str:
        return self.message


class BuildError(Exception):
    """A data error the build itself finds (the STAC search failing): a one-line message."""


def is_data_error(exc: BaseException) -> bool:
    """The engine's own errors, whose messages name the item, href or key (CatalogError, SpecError,
    StoreMismatch, SceneReadError, ...), a ``dg.Failure`` (the assets put those messages in its
    description), the STAC API failing (after its retries), or a run that failed with one of those.
    Anything else is a bug or a library failing and keeps its traceback."""
    from pystac_client.exceptions import APIError
    from requests import RequestException

    if isinstance(exc, RunFailed):
        return exc.data_error
    if isinstance(exc, dg.Failure | BuildError | APIError | RequestException):
        return True
    return type(exc).__module__.startswith("mosaic_assets.engine.")


def error_text(exc: BaseException) -> str:
    """An error in one line: a ``dg.Failure``'s description (already ``<EngineError>: <message>``),
    else ``<type>: <message>``."""
    text = str(exc) if isinstance(exc, dg.Failure | RunFailed | BuildError) else f"{type(exc).__name__}: {exc}"
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


def _run_name(selection: str | tuple[str, ...], partition_key: str | None, tags: dict | None) -> str:
    """``demo/scene_catalog+gti_index [2024-06-01]``, ``demo/mosaic_chunks [<first key> .. <last key>]``."""
    names = (selection,) if isinstance(selection, str) else selection
    name = names[0].split("/")[0] + "/" + "+".join(n.split("/", 1)[-1] for n in names)
    tags = tags or {}
    first, last = tags.get(RANGE_START), tags.get(RANGE_END)
    part = partition_key or (first if first == last else f"{first} .. {last}" if first else None)
    return f"{name} [{part}]" if part else name


@functools.cache
def _instance() -> dg.DagsterInstance:
    """One instance per process: loading it per run was a large share of Dagster's per-run cost."""
    return dg.DagsterInstance.get()


BUILD_JOB_NAME = "__ephemeral_asset_job__"  # what dg.materialize names its runs: the UI shows them alike


@functools.cache
def _job(selection: tuple[str, ...]) -> dg.JobDefinition:
    """The asset job of one selection, resolved once per process. ``dg.materialize`` resolves a new
    Definitions (every mosaic's asset graph) per call: a catalog run took 0.87 s with it, 0.51 s without
    (one timeline each, large benchmark)."""
    defs = load_defs()
    job_defs = dg.Definitions(
        assets=defs.assets,
        resources=defs.resources,
        jobs=[dg.define_asset_job(BUILD_JOB_NAME, selection=list(selection))],
        loggers={"console": build_console_logger},
    )
    return job_defs.resolve_job_def(BUILD_JOB_NAME)


def materialize(selection: str | tuple[str, ...], partition_key: str | None, tags: dict | None = None) -> None:
    """One run on the instance at $DAGSTER_HOME; raises ``RunFailed`` (naming the run's assets and
    partitions, then the step's error) when it fails."""
    try:
        _job((selection,) if isinstance(selection, str) else selection).execute_in_process(
            run_config=QUIET_RUN_CONFIG, instance=_instance(), partition_key=partition_key, tags=tags
        )
    except Exception as exc:
        message = f"{_run_name(selection, partition_key, tags)}: {error_text(exc)}"
        raise RunFailed(message, "".join(traceback.format_exception(exc)), is_data_error(exc)) from exc


@dataclass(frozen=True)
class BuildUnit:
    """The runs of one plain mosaic or of one source of a cube: its spec, its assets' selections,
    and its time partitions. A cube's sources share one template run and have no preview."""

    spec: MosaicSpec
    catalog: tuple[str, ...]  # the scene table with its GTI, one run per time step
    write: tuple[str, ...]  # mosaic_chunks, ranged runs
    preview: tuple[str, ...] | None  # per time step; None for a cube's source

    @classmethod
    def of(cls, mosaic: MosaicAssets, with_preview: bool) -> BuildUnit:
        name = dg.AssetKey.to_user_string
        return cls(
            mosaic.spec,
            (name(mosaic.catalog), name(mosaic.gti)),
            (name(mosaic.chunks),),
            (name(mosaic.preview),) if with_preview else None,
        )


@dataclass(frozen=True)
class BuildEntry:
    """One entry of the spec file as build runs it: its units and the one template they share."""

    name: str
    units: tuple[BuildUnit, ...]
    template: tuple[str, ...]
    grid: MosaicGrid
    partitions: tuple[MosaicPartitions, ...]  # per unit

    @classmethod
    def of(cls, spec: MosaicSpec | CubeSpec) -> BuildEntry:
        from mosaic_assets.defs.mosaic import build_cube_assets, build_mosaic_assets
        from mosaic_assets.engine.spec import CubeSpec

        if isinstance(spec, CubeSpec):
            _, mosaics, _ = build_cube_assets(spec)
            units = tuple(BuildUnit.of(m, with_preview=False) for m in mosaics)
        else:
            mosaic, _ = build_mosaic_assets(spec)
            mosaics, units = [mosaic], (BuildUnit.of(mosaic, with_preview=True),)
        template = (dg.AssetKey.to_user_string(mosaics[0].template),)
        return cls(spec.name, units, template, mosaics[0].grid, tuple(m.partitions for m in mosaics))

    def selections(self) -> list[tuple[str, ...]]:
        """Every selection a run of this entry uses (to resolve their jobs before the pool forks)."""
        found = [self.template]
        for unit in self.units:
            found += [unit.catalog, unit.write] + ([unit.preview] if unit.preview else [])
        return found


def _catalog_run(units: tuple[BuildUnit, ...], step: tuple[int, str]) -> None:
    materialize(units[step[0]].catalog, step[1])


def _write_run(units: tuple[BuildUnit, ...], batch: tuple[int, list[str]]) -> None:
    materialize_range(units[batch[0]].write, batch[1])


def _preview_run(units: tuple[BuildUnit, ...], step: tuple[int, str]) -> None:
    preview = units[step[0]].preview
    if preview is not None:
        materialize(preview, step[1])


def materialize_range(selection: str | tuple[str, ...], keys: list[str]) -> None:
    """One ranged run over consecutive partition keys (what a backfill batch is)."""
    materialize(selection, None, {RANGE_START: keys[0], RANGE_END: keys[-1]})


def contiguous_batches(
    keys: list[str], ordered: list[str], size: int, group: Callable[[str], object] | None = None
) -> list[list[str]]:
    """Split ``keys`` into runs of consecutive keys of ``ordered`` (so a range holds no other key),
    each at most ``size`` long and, with ``group``, within one group: fewer runs, each carrying
    Dagster's per-run cost once.

    Chunk keys are grouped by time step: Dagster expands a range of a multi-partitioned asset per
    dimension ([first step..last step] x [first block..last block]), so a range crossing a time step
    is not the consecutive keys between its ends (measured: a build wrote some blocks twice and
    skipped others, 12 % of the benchmark's pixels nodata)."""
    position = {k: i for i, k in enumerate(ordered)}
    group = group or (lambda key: None)
    batches: list[list[str]] = []
    for key in sorted(keys, key=position.__getitem__):
        last = batches[-1] if batches else None
        if last and len(last) < size and position[key] == position[last[-1]] + 1 and group(key) == group(last[-1]):
            last.append(key)
        else:
            batches.append([key])
    return batches


def _warm_worker(cpus: int | None = None) -> None:
    """Pool initializer: load the definitions (already there in a forked worker) and the worker's own
    instance before its first run (measured: ~4 s of imports per spawned worker, a third of the
    chunk phase on the quick benchmark, when they waited for the first batch). ``cpus``: this worker's
    share of the machine for its chunk steps' writer processes (``MOSAIC_WORKER_CPUS``), so ranged
    runs side by side never start more writers than there are CPUs."""
    use_cpu_share(cpus)
    load_defs()
    _instance()


def build(workers: int) -> list[dict]:
    """Materialize everything for every mosaic; returns a summary per mosaic (``empty``: the message
    saying why a mosaic without items was not built, else None). Raises on the first failure."""
    from mosaic_assets.definitions import mosaic_specs
    from mosaic_assets.engine.workers import worker_pool

    entries = [BuildEntry.of(spec) for spec in mosaic_specs()]  # as the definitions see them
    for entry in entries:  # before the pool: forked workers start with the definitions and jobs resolved
        for selection in entry.selections():
            _job(selection)
    with dg.DagsterInstance.get():  # create a new instance's storage once, before workers race to create it
        pass
    _instance.cache_clear()  # a forked worker must open its own instance, never share this process's
    with worker_pool(workers, initializer=functools.partial(_warm_worker, cpu_share(workers))) as pool:
        return [_build_entry(entry, workers, pool) for entry in entries]


def empty_message(spec: MosaicSpec, url: str) -> str:
    """Why a mosaic was not built: the search that found nothing, and what fills the mosaic later."""
    from mosaic_assets.engine.catalog import area_bbox_4326

    bbox = [round(v, 6) for v in area_bbox_4326(spec)]
    return (
        f"mosaic {spec.name}: no items yet: the STAC API {url} has none in collections {list(spec.stac.collections)}"
        f" within bbox {bbox} (lon/lat)"
        + (
            " (a static layer: any date)"
            if spec.static
            else f" dated on or after {spec.time.start} (the time grid's start, {spec.time.step} steps)"
        )
        + "; nothing was written for it\n"
        f"mosaic {spec.name}: its sensor {spec.name}_stac_sensor fills the mosaic when items appear"
        " (`make dev` runs `dagster dev` with MOSAIC_SENSORS=running), or run build again"
    )


def _build_entry(entry: BuildEntry, workers: int, pool: ProcessPoolExecutor) -> dict:
    """Every asset of one mosaic (or cube) as Dagster runs, in ``engine.build_order``'s order: catalog
    and GTI runs per time step (of every source of a cube), the template run, ranged chunk runs, preview
    runs. A mosaic whose search finds no items is left alone: no run, no partition, no store (a store
    would fix the grid before any item proved the spec right; the sensor, or the next build, creates
    it). A cube is built when any of its sources has items."""
    from mosaic_assets.defs.mosaic import MosaicPartitions
    from mosaic_assets.engine.build_order import BuildPieces, run_in_order

    defs = load_defs()
    instance = _instance()
    data_root: DataRootResource = defs.resources["data_root"]
    started = time.perf_counter()
    layout = data_root.layout(entry.units[0].spec)
    found = [_time_steps(unit.spec, defs.resources["stac_api"]) for unit in entry.units]
    summary = {"mosaic": entry.name, "store": layout.store, "time_steps": [], "chunk_partitions": 0, "chunk_runs": 0}
    override = defs.resources["stac_api"].url
    empty = [empty_message(u.spec, override or u.spec.stac.url) for u, steps in zip(entry.units, found) if not steps]
    summary |= {"preview": None, "empty": None, "empty_sources": empty}  # a cube's sources without items
    if not any(found):
        return summary | {"seconds": round(time.perf_counter() - started, 1), "empty": "\n".join(empty)}
    for parts, steps in zip(entry.partitions, found):
        if steps:
            instance.add_dynamic_partitions(parts.time.name, steps)
    tokens = [(number, step) for number, steps in enumerate(found) for step in steps]

    def chunk_batches(tokens: list[tuple[int, str]]) -> dict[tuple[int, str], list[tuple[int, list[str]]]]:
        """Each step's chunk keys (blocks with scenes) in ranged runs (``batch_size``), never crossing
        a time step (see ``contiguous_batches``)."""
        per_step: dict[tuple[int, str], list[tuple[int, list[str]]]] = {token: [] for token in tokens}
        for number, unit in enumerate(entry.units):
            steps = [step for n, step in tokens if n == number]
            for batch in _unit_batches(unit, entry.grid, entry.partitions[number], steps, workers, instance):
                per_step[(number, MosaicPartitions.split_chunk_key(batch[0])[0])].append((number, batch))
        return per_step

    pieces = BuildPieces(
        catalog=functools.partial(_catalog_run, entry.units),
        template=functools.partial(materialize, entry.template, None),
        batches=chunk_batches,
        write=functools.partial(_write_run, entry.units),
        preview=functools.partial(_preview_run, entry.units),  # a preview has per-step metadata
    )
    batches = run_in_order(pool, tokens, pieces)
    last = tokens[-1]
    preview = entry.units[last[0]].preview
    return summary | {
        "time_steps": sorted({step for _, step in tokens}),
        "chunk_partitions": sum(len(b[1]) for token_batches in batches.values() for b in token_batches),
        "chunk_runs": sum(len(token_batches) for token_batches in batches.values()),
        "preview": str(layout.work_dir / "preview" / f"{last[1]}.png") if preview else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _time_steps(spec: MosaicSpec, stac_api: StacApiResource) -> list[str]:
    """The time-step keys with items, sorted; a failing search raises BuildError naming the URL."""
    from pystac_client.exceptions import APIError
    from requests import RequestException

    from mosaic_assets.engine.catalog import discover_time_steps

    try:
        return sorted(discover_time_steps(spec, stac_api.client(spec)))
    except (APIError, RequestException) as exc:  # the API down or erroring: a cause, not a bug
        text, token = f"{type(exc).__name__}: {exc}", stac_api.token
        redacted = text.replace(token, "***") if token else text  # a server may echo the Authorization header
        url = stac_api.url or spec.stac.url
        message = f"mosaic {spec.name}: searching the STAC API {url} failed: {redacted}"
        raise BuildError(message) from (None if redacted != text else exc)


def _unit_batches(
    unit: BuildUnit,
    grid: MosaicGrid,
    parts: MosaicPartitions,
    steps: list[str],
    workers: int,
    instance: dg.DagsterInstance,
) -> list[list[str]]:
    """One unit's chunk keys of ``steps`` (blocks with scenes) in ranged runs of ``batch_size``."""
    from mosaic_assets.defs.mosaic import MosaicPartitions
    from mosaic_assets.engine.build_order import batch_size
    from mosaic_assets.engine.catalog import load_scene_table
    from mosaic_assets.engine.planner import blocks_with_scenes

    layout = load_defs().resources["data_root"].layout(unit.spec)
    keys = [
        str(parts.chunk_key(step, block.key))
        for step in steps
        for block in blocks_with_scenes(grid, load_scene_table(layout.scene_table(step)))
    ]
    ordered = parts.chunks.get_partition_keys(dynamic_partitions_store=instance)
    size = batch_size(len(keys), workers, unit.spec.operations.partitions_per_run)
    time_of = lambda key: MosaicPartitions.split_chunk_key(key)[0]  # noqa: E731
    return contiguous_batches(keys, ordered, size, group=time_of)


def describe(summary: dict) -> str:
    ds = xr.open_zarr(summary["store"], consolidated=True, mask_and_scale=False)
    var = ds["mosaic"]
    lines = [
        f"mosaic {summary['mosaic']}: {summary['store']}",
        f"  dims {dict(var.sizes)}  dtype {var.dtype}  chunks {var.encoding.get('chunks')}",
        f"  crs {var.rio.crs}  GeoTransform {ds['spatial_ref'].attrs.get('GeoTransform')}",
        f"  time steps {summary['time_steps']}  chunk partitions written {summary['chunk_partitions']}"
        f" in {summary['chunk_runs']} runs"
        f"  in {summary['seconds']} s",
        f"  preview {summary['preview']}",
    ]
    return "\n".join(lines)


def demo_data(out_dir: Path, api_url: str, size: str) -> None:
    from datetime import datetime

    from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
    from mosaic_assets.demo.stac_load import upsert_collection, upsert_items

    # with clouds, their shadows and an SCL-like class asset: the demo's median composite masks them
    config = (
        SceneSetConfig(clouds=True)
        if size == "demo"
        else SceneSetConfig(scene_size=512, scenes_per_date=3, clouds=True)
    )
    scenes = generate_scenes(out_dir, config)
    now = datetime.now(UTC)
    items = [scene_item(s, config.collection, now) for s in scenes]
    upsert_collection(api_url, collection_document(config.collection, items))
    upsert_items(api_url, config.collection, items)
    print(f"loaded {len(items)} scenes into {api_url}/collections/{config.collection}")


def report_failure(exc: BaseException, verbose: bool) -> int:
    """``error: <message>`` on stderr, after the traceback with ``verbose`` or when it is no data error."""
    if verbose or not is_data_error(exc):
        details = exc.details if isinstance(exc, RunFailed) else "".join(traceback.format_exception(exc))
        print(details.rstrip("\n"), file=sys.stderr)
    print(f"error: {error_text(exc)}", file=sys.stderr)
    return EXIT_ERROR


BUILD_EPILOG = """exit status: 0 every mosaic built; 1 an error (a data error prints as one line
'error: <message>', with its traceback under --verbose); 3 some mosaic (or cube source) has no items yet
(stderr names its STAC URL, collections and query; the other mosaics are built, nothing is
written for that one, its sensor fills it when items appear)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mosaic_assets.run")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("demo-data", help="generate the demo scenes and load them into the STAC API")
    data.add_argument("--out", type=Path, default=Path(".local/demo/scenes"))
    data.add_argument("--api", default=os.environ.get("MOSAIC_STAC_API_URL", "http://127.0.0.1:8082"))
    data.add_argument("--size", choices=["demo", "small"], default="demo")
    run = sub.add_parser("build", help="materialize every mosaic through Dagster", epilog=BUILD_EPILOG)
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    run.add_argument("--verbose", action="store_true", help="print a failure's traceback too")
    args = parser.parse_args(argv)
    if args.command == "demo-data":
        demo_data(args.out.resolve(), args.api.rstrip("/"), args.size)
        return EXIT_OK
    try:
        summaries = build(args.workers)
    except Exception as exc:
        return report_failure(exc, args.verbose)
    for summary in summaries:
        if not summary["empty"]:
            print(describe(summary))
    for summary in summaries:
        for message in [summary["empty"]] if summary["empty"] else summary["empty_sources"]:
            print(message, file=sys.stderr)
    return EXIT_EMPTY if any(s["empty"] or s["empty_sources"] for s in summaries) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
