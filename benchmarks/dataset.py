"""The benchmark's scene set: generated once per size (cached on disk), loaded into the STAC API,
and the mosaic spec that covers it.

Why the spec is the demo's spec with three keys replaced (name, STAC source, area): every method then
produces the project's default mosaic (grid, chunks, codec, resampling, best-on-top) on this data.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import yaml
from odc.geo import geom

from mosaic_assets.demo.scenes import (
    GENERATOR_VERSION,
    SceneSetConfig,
    collection_document,
    generate_scenes,
    scene_item,
)
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.spec import MosaicSpec

from .sizes import BenchSize

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "specs" / "demo.yaml"
ITEMS_FILE = "items.json"


def scenes_dir(root: Path, size: BenchSize) -> Path:
    """A folder named by a hash of the scene config, so a changed config never reuses stale scenes."""
    key = {**asdict(size.scenes), "generator": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(key, default=str, sort_keys=True).encode()).hexdigest()[:12]
    return root / "scenes" / f"{size.name}-{digest}"


def _generate_one_date(out_dir: Path, config: SceneSetConfig) -> list[dict]:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return [scene_item(s, config.collection, now) for s in generate_scenes(out_dir, config)]


def generate(root: Path, size: BenchSize, workers: int) -> list[dict]:
    """Scenes of ``size`` as STAC items; generated in parallel (one config per date) unless cached."""
    folder = scenes_dir(root, size)
    cached = folder / ITEMS_FILE
    if cached.exists():
        return json.loads(cached.read_text())
    configs = [replace(size.scenes, dates=(day,), seed=size.scenes.seed + i) for i, day in enumerate(size.scenes.dates)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        items = [i for batch in pool.map(_generate_one_date, [folder] * len(configs), configs) for i in batch]
    cached.write_text(json.dumps(items))
    return items


def load_into_stac(api: str, collection: str, items: list[dict]) -> None:
    """Replace the collection's items with exactly these (a stale item would change the mosaic)."""
    import requests

    requests.delete(f"{api}/collections/{collection}", timeout=60)
    upsert_collection(api, collection_document(collection, items))
    upsert_items(api, collection, items)


def area_of(items: list[dict], crs: str, resolution: float) -> list[float]:
    """Bounding box, in ``crs`` and snapped outward to the grid, of every item's footprint."""
    boxes = [geom.Geometry(i["geometry"], "EPSG:4326").to_crs(crs, resolution=resolution).boundingbox for i in items]
    snap_lo = lambda v: math.floor(v / resolution) * resolution  # noqa: E731
    snap_hi = lambda v: math.ceil(v / resolution) * resolution  # noqa: E731
    return [
        snap_lo(min(b.left for b in boxes)),
        snap_lo(min(b.bottom for b in boxes)),
        snap_hi(max(b.right for b in boxes)),
        snap_hi(max(b.top for b in boxes)),
    ]


def bench_spec(
    size: BenchSize, api: str, items: list[dict], grow: float = 1.0, partition_bytes: str | None = None
) -> dict:
    """The demo spec pointed at this scene set; ``grow`` scales the area's sides around its centre;
    ``partition_bytes`` (e.g. "256MiB", the spec's default) replaces the demo's 32 MiB partitions."""
    mosaic = dict(yaml.safe_load(DEMO_SPEC.read_text())["mosaics"][0])
    left, bottom, right, top = area_of(items, mosaic["crs"], float(mosaic["resolution"]))
    if grow != 1.0:
        cx, cy, half_w, half_h = (left + right) / 2, (bottom + top) / 2, (right - left) / 2, (top - bottom) / 2
        left, right, bottom, top = cx - half_w * grow, cx + half_w * grow, cy - half_h * grow, cy + half_h * grow
    mosaic.update(
        name=f"bench_{size.name}" + ("" if grow == 1.0 else f"_x{grow:g}".replace(".", "_")),
        stac={"url": api, "collections": [size.collection]},
        area={"bbox": [left, bottom, right, top], "crs": mosaic["crs"]},
    )
    if partition_bytes:
        mosaic["partition_bytes"] = partition_bytes
    if "allow_huge" in MosaicSpec.model_fields:
        # The size guard counts blocks x daily steps over ten years; the benchmark builds two steps.
        mosaic["allow_huge"] = True
    return {"mosaics": [mosaic]}


def write_spec(document: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
