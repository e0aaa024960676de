"""Stacks (bandgroups.stacks): which read groups a time step reads as one per-scene VRT, decided from its
scenes' asset grids; the index's columns name them and a writer's read plan follows them."""

from __future__ import annotations

from mosaic_assets.engine.bandgroups import (
    STACK_FIELD_PREFIX,
    read_groups,
    read_plan,
    shares_grid,
    stacks,
    stacks_in,
)
from mosaic_assets.engine.catalog import MISSING
from mosaic_assets.engine.spec import parse_specs

from .conftest import spec_document

BANDS = [  # Sentinel-2 as Planetary Computer serves it: a COG per band, 10 and 20 m
    {"name": "blue", "asset": "B02", "index": 1},
    {"name": "green", "asset": "B03", "index": 1},
    {"name": "red", "asset": "B04", "index": 1},
    {"name": "swir16", "asset": "B11", "index": 1},
    {"name": "swir22", "asset": "B12", "index": 1},
    {"name": "scl", "asset": "SCL", "index": 1, "resampling": "nearest"},
]
GRID_10 = {"crs": "EPSG:32632", "shape": [10980, 10980], "transform": [10, 0, 600000, 0, -10, 5300040]}
GRID_20 = {"crs": "EPSG:32632", "shape": [5490, 5490], "transform": [20, 0, 600000, 0, -20, 5300040]}


def _spec(**overrides):
    return parse_specs(spec_document("http://127.0.0.1:1", bands=BANDS, **overrides))[0]


def _scene(item: int, **grids) -> dict:
    """One scene's asset entries: 10 m B02-B04, 20 m B11, B12 and SCL unless ``grids`` says otherwise."""
    out = {}
    for band in BANDS:
        grid = grids.get(band["asset"], GRID_20 if band["asset"] in ("B11", "B12", "SCL") else GRID_10)
        out[band["asset"]] = {"href": f"/data/{item}/{band['asset']}.tif", **grid}
    return out


def _members(found) -> list[tuple[str, ...]]:
    return [tuple(b.asset for b in s.bands) for s in found]


def test_assets_on_one_grid_with_one_resampling_are_one_stack() -> None:
    spec = _spec(resampling="bilinear")  # the scl band has its own nearest (a class band)
    assert _members(stacks(spec, [_scene(1), _scene(2)])) == [("B02", "B03", "B04"), ("B11", "B12")]


def test_resampling_splits_stacks() -> None:
    bands = [dict(b, resampling="nearest") if b["asset"] == "B12" else b for b in BANDS]  # scl's too
    spec = parse_specs(spec_document("http://127.0.0.1:1", bands=bands, resampling="bilinear"))[0]
    # B12 nearest joins SCL's nearest (both 20 m), B11 bilinear is alone
    assert _members(stacks(spec, [_scene(1)])) == [("B02", "B03", "B04"), ("B12", "SCL")]


def test_one_scene_off_the_grid_or_lacking_an_asset_keeps_its_group_out() -> None:
    spec = _spec(resampling="bilinear")
    shifted = dict(GRID_10, transform=[10, 0, 600010, 0, -10, 5300040])
    assert _members(stacks(spec, [_scene(1), _scene(2, B03=shifted)])) == [("B02", "B04"), ("B11", "B12")]
    lacking = _scene(3)
    lacking["B12"] = {MISSING: "item 3 lacks asset 'B12'"}
    assert _members(stacks(spec, [_scene(1), lacking])) == [("B02", "B03", "B04")]


def test_no_stacks_when_overviews_may_be_read_or_no_scenes() -> None:
    assert stacks(_spec(use_overviews=True), [_scene(1)]) == ()
    assert stacks(_spec(), []) == ()


def test_the_index_columns_name_the_stacks_and_the_plan_follows_them() -> None:
    spec = _spec(resampling="bilinear")
    found = stacks(spec, [_scene(1)])
    fields = ["location", "location_1", *(s.location_field for s in found), "priority", f"{STACK_FIELD_PREFIX}s9_99"]
    assert stacks_in(spec, fields) == found  # another spec's column (s9_99) is ignored
    assert all(shares_grid(s, _scene(1)) for s in found)
    filled = {s.location_field: "<VRTDataset/>" for s in found}
    plan = read_plan(spec, [{"item_id": "a", **filled}, {"item_id": "b", **filled}])
    assert [g.name for g in plan] == ["s0_1_2", "s3_4", "g5"]
    assert sorted(p for g in plan for p in g.positions) == list(range(len(BANDS)))
    # one scene without the stack's location (an index from before stacks): group by group
    partial = read_plan(spec, [{"item_id": "a", **filled}, {"item_id": "b"}])
    assert partial == read_groups(spec)
    assert read_plan(spec, None) == read_groups(spec)
