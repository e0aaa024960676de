"""The repair schedule: find chunk partitions that should exist but are missing or failed, and
launch exactly those, batched into ranged runs by the asset's ``BackfillPolicy.multi_run(n)``.

"Should exist" = a time step whose scene table says scenes touch the block. Blocks no scene touches
are never requested (they would be no-ops).
"""

import dagster as dg
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.events import AssetKeyPartitionKey

from mosaic_assets.engine.planner import blocks_in_scene_table

from .mosaic import MosaicAssets
from .resources import DataRootResource


def expected_chunk_keys(mosaic: MosaicAssets, instance: dg.DagsterInstance, data_root: DataRootResource) -> set[str]:
    layout = data_root.layout(mosaic.spec)
    keys: set[str] = set()
    for step in instance.get_dynamic_partitions(mosaic.partitions.time.name):
        blocks = blocks_in_scene_table(mosaic.grid, layout.scene_table(step))
        keys |= {str(mosaic.partitions.chunk_key(step, b)) for b in blocks or ()}
    return keys


def chunk_keys_to_repair(mosaic: MosaicAssets, instance: dg.DagsterInstance, data_root: DataRootResource) -> set[str]:
    """Expected keys that are not materialized or whose last attempt failed (in-progress ones wait)."""
    expected = sorted(expected_chunk_keys(mosaic, instance, data_root))
    if not expected:
        return set()
    status = instance.get_status_by_partition(mosaic.chunks, expected, mosaic.partitions.chunks) or {}
    return {k for k in expected if status.get(k) in (None, dg.AssetPartitionStatus.FAILED)}


def build_repair_schedule(mosaic: MosaicAssets) -> dg.ScheduleDefinition:
    spec = mosaic.spec

    @dg.schedule(
        name=f"{spec.name}_repair_schedule",
        cron_schedule=spec.operations.backfill_cron,
        target=[mosaic.chunks],
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-runs missing or failed chunk partitions, batched by the chunks' BackfillPolicy",
    )
    def repair_schedule(context: dg.ScheduleEvaluationContext, data_root: DataRootResource):
        todo = chunk_keys_to_repair(mosaic, context.instance, data_root)
        if not todo:
            return dg.SkipReason("every expected chunk partition is materialized")
        with dg.partition_loading_context(dynamic_partitions_store=context.instance):
            requests = build_run_requests_with_backfill_policies(
                [AssetKeyPartitionKey(mosaic.chunks, k) for k in sorted(todo)],
                context.repository_def.asset_graph,
                context.instance,
            )
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        return [
            dg.RunRequest(
                run_key=f"repair-{tick}-{i}",
                asset_selection=r.asset_selection,
                tags={**r.tags, "mosaic_assets/trigger": "repair_schedule", "mosaic_assets/mosaic": spec.name},
            )
            for i, r in enumerate(requests)
        ]

    return repair_schedule
