"""The STAC sensor: new or re-published items -> new time partitions + one backfill of exactly the
work they cause (catalog and GTI of their time steps, the template, and the chunk partitions whose
blocks their footprints touch).

Why a backfill and not plain runs: the chunk runs must wait for their time step's GTI and for the
template to grow; Dagster's backfill daemon runs the requested subset in dependency order, and
batches chunk partitions into ranged runs by the asset's BackfillPolicy.
"""

import os

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from mosaic_assets.engine.planner import plan_items
from mosaic_assets.engine.stac_feed import FeedPosition, poll

from .mosaic import MosaicAssets
from .resources import StacApiResource

SENSOR_DEFAULT_ENV = "MOSAIC_SENSORS"  # "running" turns the sensors on by default (make dev does)
SENSOR_TIMEOUT_BUDGET_S = 30.0  # Dagster times a sensor evaluation out at 60 s


def sensor_default_status() -> dg.DefaultSensorStatus:
    running = os.environ.get(SENSOR_DEFAULT_ENV, "").lower() == "running"
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED


def update_subset(mosaic: MosaicAssets, blocks_by_step: dict, asset_graph) -> AssetGraphSubset:
    """The asset partitions that new scenes in ``blocks_by_step`` make stale."""
    parts = mosaic.partitions
    wanted = {AssetKeyPartitionKey(mosaic.template, None)}
    for step, blocks in blocks_by_step.items():
        wanted |= {AssetKeyPartitionKey(mosaic.catalog, step), AssetKeyPartitionKey(mosaic.gti, step)}
        wanted |= {AssetKeyPartitionKey(mosaic.chunks, parts.chunk_key(step, b.key)) for b in blocks}
    return AssetGraphSubset.from_asset_partition_set(wanted, asset_graph)


def build_stac_sensor(mosaic: MosaicAssets) -> dg.SensorDefinition:
    spec = mosaic.spec

    @dg.sensor(
        name=f"{spec.name}_stac_sensor",
        minimum_interval_seconds=spec.operations.sensor_interval_seconds,
        default_status=sensor_default_status(),
        asset_selection=[mosaic.catalog, mosaic.gti, mosaic.template, mosaic.chunks],
        description=f"Polls {spec.stac.url} for new or updated items of {list(spec.stac.collections)}",
    )
    def stac_sensor(context: dg.SensorEvaluationContext, stac_api: StacApiResource):
        position = FeedPosition.from_json(context.cursor)
        try:
            page = poll(
                spec,
                stac_api.client(spec),
                position,
                max_items=spec.operations.sensor_max_items_per_tick,
                max_seconds=SENSOR_TIMEOUT_BUDGET_S,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to read the feed: skip, keep the cursor
            message = str(exc).replace(stac_api.token, "***") if stac_api.token else str(exc)
            url = stac_api.url or spec.stac.url
            return dg.SkipReason(f"STAC API {url} not readable ({type(exc).__name__}: {message})")
        if not page.items:
            return dg.SkipReason(f"no items updated after {position.updated} / {position.item_id or '-'}")
        plan = plan_items(spec, mosaic.grid, page.items)
        for item_id, why in plan.skipped.items():
            context.log.warning(f"item {item_id} left out: {why}")
        result = dg.SensorResult(cursor=page.position.to_json())
        if not plan.blocks:
            return result
        known = set(context.instance.get_dynamic_partitions(mosaic.partitions.time.name))
        new_steps = sorted(set(plan.blocks) - known)
        context.log.info(
            f"{len(page.items)} items -> {sum(len(b) for b in plan.blocks.values())} chunk partitions in "
            f"{len(plan.blocks)} time steps ({len(new_steps)} new); more waiting: {not page.exhausted}"
        )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest.for_asset_graph_subset(
                    update_subset(mosaic, plan.blocks, context.repository_def.asset_graph),
                    tags={"mosaic_assets/trigger": "stac_sensor", "mosaic_assets/mosaic": spec.name},
                )
            ],
            dynamic_partitions_requests=[mosaic.partitions.time.build_add_request(new_steps)] if new_steps else [],
            cursor=page.position.to_json(),
        )

    return stac_sensor
