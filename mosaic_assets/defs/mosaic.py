"""The asset graph of one mosaic, built from its spec (an asset factory: one spec -> one graph).

    scene_catalog[time] -> gti_index[time] -> zarr_template -> mosaic_chunks[time x block] -> preview[time]

Each asset body is a few lines calling the engine; everything Dagster-specific (partitions, keys,
metadata) stays here and the engine never imports Dagster.
"""

from dataclasses import dataclass

import dagster as dg

from mosaic_assets.engine.catalog import load_scene_table, save_scene_table, search_time_step
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import build_gti
from mosaic_assets.engine.keys import BlockIndex, parse_time_key
from mosaic_assets.engine.preview import preview_markdown, write_preview
from mosaic_assets.engine.spec import MosaicSpec
from mosaic_assets.engine.store import ensure_template, store_exists
from mosaic_assets.engine.timegrid import step_index
from mosaic_assets.engine.writer import write_block

from .resources import DataRootResource, StacApiResource

TIME_DIM = "time"
BLOCK_DIM = "block"


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


def asset_key(spec: MosaicSpec, name: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, name])


def build_mosaic_defs(spec: MosaicSpec) -> dg.Definitions:
    grid = MosaicGrid.from_spec(spec)
    parts = MosaicPartitions.for_spec(spec, grid)
    group = spec.name
    catalog_key, gti_key = asset_key(spec, "scene_catalog"), asset_key(spec, "gti_index")
    template_key, chunks_key = asset_key(spec, "zarr_template"), asset_key(spec, "mosaic_chunks")

    @dg.asset(key=catalog_key, partitions_def=parts.time, group_name=group, kinds={"stac", "parquet"})
    def scene_catalog(context: dg.AssetExecutionContext, stac_api: StacApiResource, data_root: DataRootResource):
        """Scenes of one time step from the STAC API, as a GeoParquet scene table."""
        step_key = context.partition_key
        table = search_time_step(spec, stac_api.client(spec), step_key)
        path = data_root.layout(spec).scene_table(step_key)
        save_scene_table(table, path)
        return dg.MaterializeResult(
            metadata={
                "scenes": len(table),
                "path": dg.MetadataValue.path(str(path)),
                "items": dg.MetadataValue.json(sorted(table["item_id"].tolist())[:200]),
            }
        )

    @dg.asset(key=gti_key, partitions_def=parts.time, group_name=group, deps=[catalog_key], kinds={"gdal"})
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

    @dg.asset(key=template_key, group_name=group, deps=[gti_key], kinds={"zarr"})
    def zarr_template(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """The Zarr store's metadata and coordinates; grows along time as time steps appear."""
        steps = context.instance.get_dynamic_partitions(parts.time.name)
        length = max((step_index(spec.time, parse_time_key(k)) for k in steps), default=-1) + 1
        store = data_root.layout(spec).store
        result = ensure_template(spec, grid, store, length)
        return dg.MaterializeResult(
            metadata={
                "store": dg.MetadataValue.path(store),
                "created": result.created,
                "time_steps": result.time_length,
                "grown_by": result.grown_by,
                "shape": dg.MetadataValue.json([result.time_length, len(spec.bands), *grid.shape]),
                "chunks": dg.MetadataValue.json([1, len(spec.bands), *grid.chunk_shape]),
                "blocks": len(parts.blocks.get_partition_keys()),
                "crs": str(grid.geobox.crs),
            }
        )

    @dg.asset(
        key=chunks_key,
        partitions_def=parts.chunks,
        group_name=group,
        deps=[
            dg.AssetDep(
                gti_key, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=TIME_DIM)
            ),
            template_key,
        ],
        kinds={"zarr", "gdal"},
    )
    def mosaic_chunks(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """One time step x one block of whole chunks, read from the GTI and written into its region."""
        keys = context.partition_key.keys_by_dimension
        layout = data_root.layout(spec)
        time_index = step_index(spec.time, parse_time_key(keys[TIME_DIM]))
        if not store_exists(layout.store):
            raise dg.Failure(
                f"store {layout.store} does not exist yet: materialize {template_key.to_user_string()} first"
            )
        result = write_block(
            spec,
            grid,
            layout.store,
            layout.gti(keys[TIME_DIM]),
            time_index,
            grid.block(BlockIndex.parse(keys[BLOCK_DIM])),
        )
        return dg.MaterializeResult(
            metadata={
                "scenes": result.scenes,
                "empty": result.empty,
                "valid_fraction": round(result.valid_pixels / result.pixels, 6),
                "chunks_written": result.chunks_written,
                "bytes_uncompressed": result.bytes_uncompressed,
                "seconds": round(result.seconds, 3),
            }
        )

    @dg.asset(
        key=asset_key(spec, "preview"),
        partitions_def=parts.time,
        group_name=group,
        deps=[
            dg.AssetDep(
                chunks_key,
                partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=TIME_DIM),
            )
        ],
        kinds={"png"},
    )
    def preview(context: dg.AssetExecutionContext, data_root: DataRootResource):
        """An RGB preview PNG of one time step, also shown inline in the UI."""
        layout = data_root.layout(spec)
        time_index = step_index(spec.time, parse_time_key(context.partition_key))
        path = write_preview(layout.store, time_index, layout.work_dir / "preview" / f"{context.partition_key}.png")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "preview": dg.MetadataValue.md(preview_markdown(layout.store, time_index)),
            }
        )

    return dg.Definitions(assets=[scene_catalog, gti_index, zarr_template, mosaic_chunks, preview])
