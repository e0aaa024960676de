"""odc-stac: ``odc.stac.load`` of the same STAC items onto the same GeoBox, then ``to_zarr`` of a
(time, band, y, x) array with the spec's chunks and codec, on dask's threaded scheduler.

Two adaptations of the inputs, neither changing a pixel:
- order: odc-stac fuses first-valid-wins in item order (``preserve_original_order=True``), GTI draws
  the highest priority last (on top); items are handed best-first, ranked by the engine's own
  ``priorities`` so the same scene wins everywhere;
- band metadata: our items describe the 4-band asset with ``eo:bands`` only; odc-stac reads band
  count, dtype and nodata from ``raster:bands``, which is added in memory.
Items are fetched from the STAC API in ``setup`` (untimed), as the GTI is built before GDAL's run.
"""

from __future__ import annotations

from pathlib import Path

import dask
import odc.stac
import pystac
import xarray as xr

from mosaic_assets.engine.catalog import item_time_key, load_scene_table, open_client, search_items
from mosaic_assets.engine.gti import priorities
from mosaic_assets.engine.spec import MosaicSpec
from mosaic_assets.engine.store import VARIABLE, compressors

from ..compare import Reader, zarr_reader
from ..job import Job
from ..mosaic import grid_of, layout_of, spec_of

STORE = "odc.zarr"


def _as_odc_item(spec: MosaicSpec, item: dict) -> pystac.Item:
    """Absolute hrefs (no self link to resolve them against) and ``raster:bands`` per asset."""
    item = {**item, "links": []}
    counts: dict[str, int] = {}
    for band in spec.bands:
        counts[band.asset] = max(counts.get(band.asset, 0), band.index)
    for asset, count in counts.items():
        item["assets"][asset]["raster:bands"] = [{"data_type": spec.dtype, "nodata": spec.nodata}] * count
    return pystac.Item.from_dict(item)


def setup(job: Job) -> tuple[list[pystac.Item], dict[str, str]]:
    """The items of the job's time steps, best first within each step; and item id -> step key."""
    spec = spec_of(job.spec)
    layout = layout_of(job.spec, job.data_root)
    rank: dict[str, int] = {}
    for step in job.steps:
        table = load_scene_table(layout.scene_table(step))
        rank.update(zip(table["item_id"], priorities(spec, table).tolist()))
    raw = [i for i in search_items(spec, open_client(job.api)) if i["id"] in rank]
    steps = {i["id"]: item_time_key(spec, i) for i in raw}
    items = [_as_odc_item(spec, i) for i in sorted(raw, key=lambda i: (steps[i["id"]], -rank[i["id"]]))]
    return items, steps


def run(job: Job, context: tuple[list[pystac.Item], dict[str, str]]) -> dict:
    items, steps = context
    spec, grid = spec_of(job.spec), grid_of(job.spec)
    cy, cx = grid.chunk_shape
    ds = odc.stac.load(
        items,
        bands=list(spec.band_names),
        geobox=grid.geobox,
        chunks={"y": cy, "x": cx},
        groupby=lambda item, parsed, idx: steps[item.id],
        preserve_original_order=True,
        resampling=spec.resampling,
        use_overviews=spec.use_overviews,
        fail_on_error=True,
    )
    mosaic = ds[list(spec.band_names)].to_dataarray("band").transpose("time", "band", "y", "x")
    out = xr.Dataset({VARIABLE: mosaic.chunk({"band": len(spec.bands)}).drop_vars("spatial_ref")})
    encoding = {VARIABLE: {"chunks": (1, len(spec.bands), cy, cx), "compressors": compressors(spec)}}
    with dask.config.set(scheduler="threads", num_workers=job.workers):
        out.to_zarr(Path(job.out) / STORE, mode="w", encoding=encoding, zarr_format=3, consolidated=False)
    return {"items": len(items), "time_steps": int(out.sizes["time"])}


def output(job: Job, step: str) -> Reader:
    """odc-stac's time axis holds only the steps with items, in order."""
    return zarr_reader(str(Path(job.out) / STORE), sorted(job.steps).index(step))
