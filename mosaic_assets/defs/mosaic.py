"""The asset graph of one mosaic, built from its spec (an asset factory: one spec -> one graph).

    scene_catalog[time] -> gti_index[time] -> zarr_template -> mosaic_chunks[time x xy] -> preview[time]

Each asset body is a few lines calling the engine; everything Dagster-specific (partitions, keys,
policies, metadata) stays here and the engine never imports Dagster.
"""

from dataclasses import dataclass
from datetime import timedelta

import dagster as dg

from mosaic_assets.engine.catalog import (
    declared_scaling,
    explain_stac_failure,
    load_scene_table,
    save_scene_table,
    search_time_step,
)
from mosaic_assets.engine.cube import Cube
from mosaic_assets.engine.grid import MosaicGrid, check_size
from mosaic_assets.engine.gti import build_gti
from mosaic_assets.engine.keys import STATIC_STEP, BlockIndex, parse_time_key
from mosaic_assets.engine.object_store import exists
from mosaic_assets.engine.parallel_write import BlockOutcome, BlockTask, write_blocks
from mosaic_assets.engine.preview import preview_markdown, write_preview
from mosaic_assets.engine.skipped import save_skipped
from mosaic_assets.engine.spec import CubeSpec, MosaicSpec
from mosaic_assets.engine.store import (
    WHOLE_MOSAIC,
    Placement,
    ensure_template,
    record_scaling,
    store_exists,
    store_shape,
    store_time_length,
)
from mosaic_assets.engine.timegrid import step_index
from mosaic_assets.engine.writer import BlockWriteResult, SceneReadError

from .execution import TEMPLATE_POOL, chunk_writer_tags, store_writes_pool
from .resources import DataRootResource, StacApiResource

# Multi-partition keys sort by dimension name; "time" < "xy" makes keys time-major
# ("2024-06-01|r0001c0002"), so the blocks of one time step are contiguous and a backfill groups
# them into ranged runs (BackfillPolicy.multi_run) instead of one run per partition.
TIME_DIM = "time"
BLOCK_DIM = "xy"


# Eager, except that a time step's preview must not wait for blocks no scene touches: those chunk
# partitions are never materialized, so eager()'s "no dependency missing" would never hold.
PREVIEW_AFTER_CHUNKS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after its chunks update")


@dataclass(frozen=True)
class MosaicPartitions:
    """The partition definitions of one mosaic: dynamic time steps, static blocks of the grid."""

    time: dg.DynamicPartitionsDefinition
    blocks: dg.StaticPartitionsDefinition
    chunks: dg.MultiPartitionsDefinition

    @classmethod
    def for_spec(cls, spec: MosaicSpec, grid: MosaicGrid) -> "MosaicPartitions":
        time = dg.DynamicPartitionsDefinition(name=f"{spec.name}_time")
        blocks = dg.StaticPartitionsDefinition(grid.block_keys())
        return cls(time, blocks, dg.MultiPartitionsDefinition({TIME_DIM: time, BLOCK_DIM: blocks}))

    @staticmethod
    def chunk_key(step_key: str, block_key: str) -> dg.MultiPartitionKey:
        return dg.MultiPartitionKey({TIME_DIM: step_key, BLOCK_DIM: block_key})

    @staticmethod
    def split_chunk_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
        """(time step key, block key) of a chunk partition key."""
        if not isinstance(key, dg.MultiPartitionKey):
            step, block = key.split("|")
            key = dg.MultiPartitionKey({TIME_DIM: step, BLOCK_DIM: block})
        dims = key.keys_by_dimension
        return dims[TIME_DIM], dims[BLOCK_DIM]


@dataclass(frozen=True)
class MosaicAssets:
    """Everything the sensor and the schedule of a mosaic (or of one source of a cube) need to know
    about its assets. A cube's source has keys ``[cube, source, ...]`` and shares the cube's template."""

    spec: MosaicSpec
    grid: MosaicGrid
    partitions: MosaicPartitions
    prefix: tuple[str, ...] = ()
    template_key: dg.AssetKey | None = None
    placement: Placement = WHOLE_MOSAIC

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([*(self.prefix or (self.spec.name,)), name])

    @property
    def catalog(self) -> dg.AssetKey:
        return self.key("scene_catalog")

    @property
    def gti(self) -> dg.AssetKey:
        return self.key("gti_index")

    @property
    def template(self) -> dg.AssetKey:
        return self.template_key or self.key("zarr_template")

    @property
    def chunks(self) -> dg.AssetKey:
        return self.key("mosaic_chunks")

    @property
    def preview(self) -> dg.AssetKey:
        return self.key("preview")


# Transient faults (HTTP 5xx/429 and timeouts from the object store or the STAC API, dropped
# connections) are retried with exponential backoff and jitter; deterministic ones (a truncated or
# contradicting scene, a bad item, a store on another grid) raise dg.Failure(allow_retries=False)
# and fail at once: retrying cannot fix them. GDAL retries HTTP reads itself first (gdal_env).
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


ERROR_TYPES = {"scene": "SceneReadError", "store": "StoreMismatch"}


def _partitions_failed(failed: list[BlockOutcome], attempted: int) -> Exception:
    """The step's error after every partition was attempted, one line naming each failed partition and
    its cause (item, asset, href). A retry helps only when every failure was transient (the written
    partitions are then rewritten byte-identically); otherwise it bypasses the retry policy. A bug
    raises with its worker's traceback."""
    bugs = [o for o in failed if o.kind == "bug"]
    if bugs:
        return RuntimeError(f"chunk partition {bugs[0].key}: {bugs[0].error}")
    causes = "; ".join(f"{o.key}: {ERROR_TYPES.get(o.kind, 'Error')}: {o.error}" for o in failed)
    message = f"{len(failed)} of {attempted} chunk partitions were not written: {causes}"
    if all(o.transient for o in failed):
        return SceneReadError(message, transient=True)  # the retry policy takes it
    return dg.Failure(description=message, allow_retries=False)


def _time_partition_of(dim: str) -> dg.MultiToSingleDimensionPartitionMapping:
    return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=dim)


def _sum_results(results: list[BlockWriteResult]) -> dict:
    pixels = sum(r.pixels for r in results) or 1
    return {
        "partitions": len(results),
        "scenes": sum(r.scenes for r in results),
        "empty_partitions": sum(r.empty for r in results),
        "valid_fraction": round(sum(r.valid_pixels for r in results) / pixels, 6),
        "chunks_written": sum(r.chunks_written for r in results),
        "bytes_uncompressed": sum(r.bytes_uncompressed for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
        "skipped_scenes": sum(len(r.skipped) for r in results),
    }


def _first_scaling(spec: MosaicSpec, layout, steps: list[str]) -> list[tuple] | None:
    """The bands' scale/offset the first catalogued time step declares (recorded when the store is made)."""
    for step in sorted(steps):
        if exists(layout.scene_table(step)):
            return declared_scaling(spec, load_scene_table(layout.scene_table(step)))
    return None


def _freshness(spec: MosaicSpec) -> dg.FreshnessPolicy:
    ops = spec.operations
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=ops.freshness_fail_hours),
        warn_window=timedelta(hours=ops.freshness_warn_hours) if ops.freshness_warn_hours else None,
    )


def _time_index(spec: MosaicSpec, step_key: str) -> int:
    """The store's time index of a step (0 for a static source's one layer, which has no time axis)."""
    return 0 if step_key == STATIC_STEP else step_index(spec.time, parse_time_key(step_key))


def build_source_assets(mosaic: MosaicAssets, group: str) -> list[dg.AssetsDefinition]:
    """scene_catalog[time] -> gti_index[time] -> (the template) -> mosaic_chunks[time x xy] of one mosaic,
    or of one source of a cube (its own scene tables and GTIs, its own bands of the cube's store)."""
    spec, grid, parts = mosaic.spec, mosaic.grid, mosaic.partitions
    where = mosaic.placement

    @dg.asset(
        key=mosaic.catalog,
        partitions_def=parts.time,
        group_name=group,
        kinds={"stac", "parquet"},
        retry_policy=TRANSIENT_RETRY,
    )
    def scene_catalog(context: dg.AssetExecutionContext, stac_api: StacApiResource, data_root: DataRootResource):
        """Scenes of one time step from the STAC API, as a GeoParquet scene table."""
        step_key = context.partition_key
        try:
            table = search_time_step(spec, stac_api.client(spec), step_key, stac_api.url or spec.stac.url)
        except Exception as exc:
            failure = explain_stac_failure(exc, stac_api.token)
            if not failure.retryable:
                raise dg.Failure(description=failure.message, allow_retries=False) from None
            if failure.redacted:  # the original exception (and its chain) would carry the token
                raise RuntimeError(failure.message) from None
            raise
        path = data_root.layout(spec).scene_table(step_key)
        save_scene_table(table, path)
        return dg.MaterializeResult(
            metadata={
                "scenes": len(table),
                "path": dg.MetadataValue.path(str(path)),
                "items": dg.MetadataValue.json(sorted(table["item_id"].tolist())[:200]),
            }
        )

    @dg.asset(
        key=mosaic.gti,
        partitions_def=parts.time,
        group_name=group,
        deps=[mosaic.catalog],
        kinds={"gdal"},
        automation_condition=dg.AutomationCondition.eager(),
    )
    def gti_index(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """GDAL Raster Tile Index of one time step, with complete metadata (no scene is opened)."""
        layout = data_root.layout(spec)
        files = layout.gti(context.partition_key)
        tiles = build_gti(spec, grid, load_scene_table(layout.scene_table(context.partition_key)), files)
        return dg.MaterializeResult(
            metadata={
                "tiles": tiles,
                "index": dg.MetadataValue.path(str(files.index)),
                "gti": dg.MetadataValue.path(str(files.xml)),
            }
        )

    @dg.asset(
        key=mosaic.chunks,
        partitions_def=parts.chunks,
        group_name=group,
        deps=[dg.AssetDep(mosaic.gti, partition_mapping=_time_partition_of(TIME_DIM)), mosaic.template],
        kinds={"zarr", "gdal"},
        backfill_policy=dg.BackfillPolicy.multi_run(spec.operations.partitions_per_run),
        freshness_policy=None if spec.static else _freshness(spec),  # a static layer changes with its items only
        op_tags=chunk_writer_tags(),
        pool=store_writes_pool(),
        retry_policy=TRANSIENT_RETRY,
    )
    def mosaic_chunks(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """Time step x block of whole chunks, read from the GTI and written into its region.

        A ranged run (a backfill batch) writes its partitions concurrently, one writer per CPU
        the step may use (``MOSAIC_WORKER_CPUS``, the pod's limit on Kubernetes). Every partition is
        attempted; the step then fails naming each one that could not be written."""
        layout = data_root.layout(spec)
        length = store_time_length(layout.store)
        tasks = []
        for key in context.partition_keys:
            step_key, block_key = MosaicPartitions.split_chunk_key(key)
            time_index = _time_index(spec, step_key)
            if where.static and not store_exists(layout.store):
                raise dg.Failure(
                    f"store {layout.store} does not exist: materialize {mosaic.template.to_user_string()} first",
                    allow_retries=False,
                )
            if time_index >= length and not where.static:
                raise dg.Failure(
                    f"store {layout.store} has {length} time steps, {step_key} needs {time_index + 1}: "
                    f"materialize {mosaic.template.to_user_string()} first",
                    allow_retries=False,
                )
            block = grid.block(BlockIndex.parse(block_key))
            tasks.append(BlockTask(str(key), layout.gti(step_key), time_index, block, where))
        results: list[BlockWriteResult] = []
        skipped: list[dict[str, str]] = []
        outcomes = write_blocks(spec, grid, layout.store, tasks)
        for task, outcome in zip(tasks, outcomes):
            if outcome.result is None:
                continue
            step_key, block_key = MosaicPartitions.split_chunk_key(task.key)
            save_skipped(layout.skipped_record(step_key, block_key), list(outcome.result.skipped))
            for scene in outcome.result.skipped:
                context.log.warning(
                    f"{task.key}: written without item {scene.item_id} (bad_scenes: skip): {scene.reason}"
                )
            skipped += [
                {"partition": task.key, "item_id": s.item_id, "reason": s.reason} for s in outcome.result.skipped
            ]
            results.append(outcome.result)
        failed = [o for o in outcomes if o.error is not None]
        if failed:
            raise _partitions_failed(failed, len(outcomes))
        metadata = _sum_results(results)
        if skipped:
            metadata["skipped"] = dg.MetadataValue.json(skipped[:100])
        return dg.MaterializeResult(metadata=metadata)

    return [scene_catalog, gti_index, mosaic_chunks]


def build_mosaic_assets(spec: MosaicSpec) -> tuple[MosaicAssets, list[dg.AssetsDefinition]]:
    grid = MosaicGrid.from_spec(spec)
    check_size(spec, grid)  # before the static partitions enumerate every block of an absurd grid
    parts = MosaicPartitions.for_spec(spec, grid)
    mosaic = MosaicAssets(spec, grid, parts)
    group = spec.name
    scene_catalog, gti_index, mosaic_chunks = build_source_assets(mosaic, group)

    @dg.asset(key=mosaic.template, group_name=group, deps=[mosaic.gti], kinds={"zarr"}, pool=TEMPLATE_POOL)
    def zarr_template(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """The Zarr store's metadata and coordinates; grows along time as time steps appear."""
        steps = context.instance.get_dynamic_partitions(parts.time.name)
        length = max((step_index(spec.time, parse_time_key(k)) for k in steps), default=-1) + 1
        layout = data_root.layout(spec)
        store = layout.store
        scaling = None if store_exists(layout.store) else _first_scaling(spec, layout, steps)
        result = ensure_template(spec, grid, store, length, scaling)
        return _template_metadata(result, store, grid, len(spec.band_names), len(spec.band_names))

    @dg.asset(
        key=mosaic.preview,
        partitions_def=parts.time,
        group_name=group,
        deps=[dg.AssetDep(mosaic.chunks, partition_mapping=_time_partition_of(TIME_DIM))],
        kinds={"png"},
        automation_condition=PREVIEW_AFTER_CHUNKS,
    )
    def preview(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """An RGB preview PNG of one time step, also shown inline in the UI."""
        layout = data_root.layout(spec)
        time_index = step_index(spec.time, parse_time_key(context.partition_key))
        path = layout.work_dir / "preview" / f"{context.partition_key}.png"
        image = write_preview(layout.store, time_index, path)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "preview": dg.MetadataValue.md(preview_markdown(image)),
            }
        )

    return mosaic, [scene_catalog, gti_index, zarr_template, mosaic_chunks, preview]


def _template_metadata(result, store: str, grid: MosaicGrid, bands: int, band_chunk: int) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "store": dg.MetadataValue.path(store),
            "created": result.created,
            "time_steps": result.time_length,
            "grown_by": result.grown_by,
            "shape": dg.MetadataValue.json([result.time_length, bands, *grid.shape]),
            "chunks": dg.MetadataValue.json([1, band_chunk, *grid.chunk_shape]),
            "blocks": len(grid.block_keys()),
            "crs": str(grid.geobox.crs),
        }
    )


def build_cube_assets(spec: CubeSpec) -> tuple[Cube, list[MosaicAssets], list[dg.AssetsDefinition]]:
    """One asset group per cube: per source its scene_catalog[time], gti_index[time] and
    mosaic_chunks[time x xy] (keys ``[cube, source, ...]``), all feeding one ``[cube, zarr_template]``.
    A static source's time dimension holds one key, ``static``: its layer is written once."""
    cube = Cube.from_spec(spec)
    template_key = dg.AssetKey([spec.name, "zarr_template"])
    mosaics, assets = [], []
    for source in cube.sources:
        check_size(source.spec, cube.grid)
        parts = MosaicPartitions.for_spec(source.spec, cube.grid)
        mosaic = MosaicAssets(source.spec, cube.grid, parts, (spec.name, source.name), template_key, source.placement)
        mosaics.append(mosaic)
        assets += build_source_assets(mosaic, spec.name)
    timed = [m for m in mosaics if not m.placement.static]
    shape = store_shape(spec)

    @dg.asset(
        key=template_key,
        group_name=spec.name,
        deps=[m.gti for m in mosaics],
        kinds={"zarr"},
        pool=TEMPLATE_POOL,
    )
    def zarr_template(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """The cube's store: its sources' bands along ``band``, static layers as their own variables;
        grows along time as any time-varying source's time steps appear, and records each source's
        scale/offset once its first scene table exists (``record_scaling``)."""
        steps = {m.spec.name: context.instance.get_dynamic_partitions(m.partitions.time.name) for m in mosaics}
        length = 0
        for m in timed:
            indexes = (step_index(spec.time, parse_time_key(k)) for k in steps[m.spec.name])
            length = max(length, max(indexes, default=-1) + 1)
        store = data_root.layout(cube.sources[0].spec).store
        scaling = []  # store order: the timed sources' bands, then the static layers
        for m in [*timed, *[m for m in mosaics if m.placement.static]]:
            found = _first_scaling(m.spec, data_root.layout(m.spec), steps[m.spec.name])
            scaling += found or [(None, None)] * len(m.spec.band_names)
        existed = store_exists(store)
        result = ensure_template(spec, cube.grid, store, length, scaling)
        filled = record_scaling(spec, store, scaling) if existed else []
        if filled:
            context.log.info(f"{store}: recorded the scale and offset of {filled}")
        return _template_metadata(result, store, cube.grid, len(shape.band_names), shape.band_chunk)

    return cube, mosaics, [*assets, zarr_template]
