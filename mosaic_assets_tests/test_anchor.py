"""Grid anchors: edge, center, an explicit pixel fraction, and native (the scenes' own pixel grid,
learnt once from one item and cached), down to a warp that copies every pixel exactly."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.warp import Resampling, reproject

import mosaic_assets.definitions as definitions
from mosaic_assets.demo.scenes import SceneSetConfig, collection_document, generate_scenes, scene_item
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.anchor import anchor_cache, native_fraction, resolve_native
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import MosaicSpec, SpecError, parse_specs
from mosaic_assets.engine.store import StoreMismatch, ensure_template

from .conftest import reset_collection, spec_document

CLOSED = "http://127.0.0.1:9"  # nothing listens there
RES = 30.0
# Landsat-like: pixel edges at 15 mod 30 (centres on multiples of 30), in the mosaic's CRS
LANDSAT = Affine(RES, 0, 399585.0, 0, -RES, 5206215.0)
AREA = {"bbox": [400000, 5200000, 406000, 5206000], "crs": "EPSG:32632"}


def _spec(anchor="edge", **overrides) -> MosaicSpec:
    doc = spec_document(CLOSED, **{"crs": "EPSG:32632", "resolution": RES, "area": AREA, "anchor": anchor, **overrides})
    return parse_specs(doc)[0]


def _item(transform, crs="EPSG:32632", asset: dict | None = None, item_id="LC08_L2SP_193027") -> dict:
    t = list(transform)[:6] if isinstance(transform, Affine) else list(transform)
    return {
        "id": item_id,
        "properties": {"proj:code": crs, "proj:transform": t, "proj:shape": [240, 240]},
        "assets": {"data": {"href": "/nowhere.tif", **(asset or {})}},
    }


def _grid(spec: MosaicSpec, anchor) -> MosaicGrid:
    return MosaicGrid.from_spec(spec.model_copy(update={"anchor": anchor}))


def _no_http(spec: MosaicSpec):
    raise AssertionError(f"no STAC request expected (asked for {spec.stac.url})")


def _mod(v: float, res: float = RES) -> float:
    return round(v % res, 6) % res


# --- edge, center, fractions -------------------------------------------------------------------------


def test_edge_and_center_transforms() -> None:
    spec = _spec()
    edge, center = _grid(spec, "edge"), _grid(spec, "center")
    assert (_mod(edge.transform[0]), _mod(edge.transform[3])) == (0, 0)  # pixel edges on multiples of 30
    assert (_mod(center.transform[0]), _mod(center.transform[3])) == (15, 15)
    for coords in (center.x_coords(), center.y_coords()):  # pixel centres on multiples of 30
        assert np.all(np.abs(coords / RES - np.round(coords / RES)) < 1e-9)
    assert _grid(spec, (0.5, 0.5)).transform == center.transform
    assert _grid(spec, (0.0, 0.0)).transform == edge.transform
    for grid in (edge, center):  # both still cover the area
        x0, y0 = grid.transform[0], grid.transform[3]
        assert x0 <= 400000 and y0 >= 5206000
        assert x0 + grid.shape[1] * RES >= 406000 and y0 - grid.shape[0] * RES <= 5200000


def test_fraction_anchor_puts_edges_at_fraction_of_a_pixel() -> None:
    grid = _grid(_spec(), (0.25, 0.75))
    assert (_mod(grid.transform[0]), _mod(grid.transform[3])) == (7.5, 22.5)


@pytest.mark.parametrize("value", ["centre", "floating", [1.0, 0.0], [0.5], [0.5, -0.1], ["a", 0], [True, 0]])
def test_bad_anchor_is_refused_naming_it(value) -> None:
    with pytest.raises(SpecError, match=r"mosaics\[0\]\.anchor"):
        _spec(anchor=value)


def test_fraction_from_yaml_list() -> None:
    doc = yaml.safe_load(yaml.safe_dump(spec_document(CLOSED, anchor=[0.5, 0.25])))
    assert parse_specs(doc)[0].anchor == (0.5, 0.25)


def test_unresolved_native_cannot_make_a_grid() -> None:
    with pytest.raises(SpecError, match="anchor: native has not been resolved"):
        MosaicGrid.from_spec(_spec("native"))


# --- native: the fraction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        (399585.0, 5206215.0),  # Landsat: centre-anchored
        (399590.0, 5206200.0),  # 20 and 0 mod 30: not symmetric, so x is not read back as 1 - fx
        (399591.3, 5206207.7),  # arbitrary
        (399600.0 - 1e-10, 5206200.0 + 1e-10),  # float noise on an edge-anchored grid
    ],
)
def test_native_puts_grid_edges_on_the_item_edges(origin) -> None:
    transform = Affine(RES, 0, origin[0], 0, -RES, origin[1])
    spec = _spec("native")
    grid = _grid(spec, native_fraction(spec, _item(transform)))
    a = grid.geobox.affine
    # the grid's pixel edges are the item's: whole pixels apart
    assert (a.c - transform.c) / RES == pytest.approx(round((a.c - transform.c) / RES), abs=1e-6)
    assert (a.f - transform.f) / RES == pytest.approx(round((a.f - transform.f) / RES), abs=1e-6)


def test_native_of_landsat_is_center() -> None:
    spec = _spec("native")
    assert native_fraction(spec, _item(LANDSAT)) == (0.5, 0.5)
    assert _grid(spec, (0.5, 0.5)).transform == _grid(spec, "center").transform


def test_native_reads_the_first_bands_asset_before_the_item() -> None:
    spec = _spec("native")
    shifted = [RES, 0, 399590.0, 0, -RES, 5206207.5]  # 20, 7.5 mod 30
    item = _item(LANDSAT, asset={"proj:transform": [*shifted, 0, 0, 1], "proj:code": "EPSG:32632"})
    assert native_fraction(spec, item) == pytest.approx((20 / 30, 7.5 / 30))
    # the asset's CRS wins over the item's too
    item = _item(LANDSAT, crs="EPSG:32632", asset={"proj:epsg": 32633})
    with pytest.raises(SpecError, match="EPSG:32633 at 30 m"):
        native_fraction(spec, item)


def test_native_needs_the_mosaic_crs() -> None:
    spec = _spec("native", resolution=10)
    with pytest.raises(SpecError) as err:
        native_fraction(spec, _item(LANDSAT, crs="EPSG:32633", item_id="X"))
    message = str(err.value)
    assert "anchor: native needs the scenes' CRS and resolution" in message
    assert "item X asset 'data' is EPSG:32633 at 30 m, the mosaic EPSG:32632 at 10 m: use edge or center" in message


def test_native_needs_the_mosaic_resolution() -> None:
    spec = _spec("native")
    twenty = Affine(20, 0, 399580.0, 0, -20, 5206220.0)
    with pytest.raises(SpecError, match=r"resolution differ.*EPSG:32632 at 20 m, the mosaic EPSG:32632 at 30 m"):
        native_fraction(spec, _item(twenty))
    # a CRS spelled otherwise is the same CRS
    wkt = rasterio.crs.CRS.from_epsg(32632).to_wkt()
    assert native_fraction(spec, _item(LANDSAT, crs=wkt)) == (0.5, 0.5)


@pytest.mark.parametrize(
    "item, says",
    [
        ({"id": "X", "properties": {}, "assets": {}}, "has no asset 'data'"),
        (_item([30, 0, 1]), "proj:transform .* must have 6 or 9"),
        (_item([30, 0, 1, 0, -30, 2, 1, 1, 1]), "last row of a 9-element affine"),
        (_item([30, 1, 1, 0, -30, 2]), "rotated"),
        ({**_item(LANDSAT), "properties": {"proj:transform": list(LANDSAT)[:6]}}, "lacks projection metadata"),
    ],
)
def test_native_needs_usable_metadata(item: dict, says: str) -> None:
    with pytest.raises(SpecError, match=says) as err:
        native_fraction(_spec("native"), item)
    assert "anchor" in str(err.value)


# --- native: the pixels ------------------------------------------------------------------------------


def _landsat_scene(path: Path) -> np.ndarray:
    data = np.random.default_rng(5).integers(1, 65535, size=(240, 240), dtype="uint16")
    profile = dict(driver="GTiff", width=240, height=240, count=1, dtype="uint16", crs="EPSG:32632")
    with rasterio.open(path, "w", transform=LANDSAT, **profile) as dst:
        dst.write(data, 1)
    return data


def _warp(path: Path, grid: MosaicGrid, resampling: Resampling) -> np.ndarray:
    out = np.zeros(grid.shape, dtype="uint16")
    with rasterio.open(path) as src:
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=grid.geobox.affine,
            dst_crs="EPSG:32632",
            resampling=resampling,
        )
    return out


def _source_window(data: np.ndarray, grid: MosaicGrid) -> np.ndarray:
    """The source pixels under the grid, by whole-pixel offset (the grid lies inside the scene)."""
    a = grid.geobox.affine
    col, row = int(np.floor((a.c - LANDSAT.c) / RES + 1e-9)), int(np.floor((LANDSAT.f - a.f) / RES + 1e-9))
    h, w = grid.shape
    assert row >= 0 and col >= 0 and row + h <= data.shape[0] and col + w <= data.shape[1]
    return data[row : row + h, col : col + w]


def test_native_grid_copies_every_pixel_exactly(tmp_path: Path) -> None:
    path = tmp_path / "landsat.tif"
    data = _landsat_scene(path)
    spec = _spec("native")
    native = _grid(spec, native_fraction(spec, _item(LANDSAT)))
    expected = _source_window(data, native)
    for resampling in (Resampling.nearest, Resampling.bilinear, Resampling.cubic):
        assert (_warp(path, native, resampling) == expected).mean() == 1.0, resampling
    # the edge-anchored grid sits half a pixel off: every pixel is a blend of four
    edge = _grid(spec, "edge")
    assert (_mod(edge.transform[0] - LANDSAT.c), _mod(edge.transform[3] - LANDSAT.f)) == (15, 15)
    blended = _warp(path, edge, Resampling.bilinear)
    assert (blended == _source_window(data, edge)).mean() < 0.05


# --- the store refuses a changed anchor --------------------------------------------------------------


def test_store_refuses_a_changed_anchor(tmp_path: Path) -> None:
    spec = _spec("edge")
    store = str(tmp_path / "store.zarr")
    ensure_template(spec, _grid(spec, "edge"), store, 1)
    native = resolve_native(_spec("native"), tmp_path / "data", lambda s: _OneItemClient(_item(LANDSAT)))
    assert native.anchor == (0.5, 0.5)
    with pytest.raises(StoreMismatch, match=r"differs in: transform\)"):
        ensure_template(native, MosaicGrid.from_spec(native), store, 1)
    ensure_template(spec, _grid(spec, "edge"), store, 2)  # the same anchor still grows it


# --- the resolver ------------------------------------------------------------------------------------


def test_edge_center_and_fractions_do_no_io(tmp_path: Path) -> None:
    for anchor in ("edge", "center", (0.5, 0.25)):
        spec = _spec(anchor)
        assert resolve_native(spec, tmp_path / "data", _no_http) is spec
    assert not (tmp_path / "data").exists()


class _OneItemClient:
    """Stands in for a pystac Client: what ``resolve_native`` calls on it, and how often."""

    def __init__(self, item: dict | None) -> None:
        self.item, self.searches = item, []

    def search(self, **kwargs):
        self.searches.append(kwargs)
        return self

    def items_as_dicts(self):
        return iter([self.item] if self.item else [])


def test_cache_is_learnt_per_crs_and_resolution(tmp_path: Path) -> None:
    client = _OneItemClient(_item(LANDSAT))
    spec = _spec("native")
    assert resolve_native(spec, tmp_path, lambda s: client).anchor == (0.5, 0.5)
    assert resolve_native(spec, tmp_path, _no_http).anchor == (0.5, 0.5)
    assert len(client.searches) == 1 and client.searches[0]["max_items"] == 1
    # a spec at another resolution learns again (and, here, cannot be native)
    with pytest.raises(SpecError, match="at 30 m, the mosaic EPSG:32632 at 10 m"):
        resolve_native(_spec("native", resolution=10), tmp_path, lambda s: client)
    assert len(client.searches) == 2
    # a damaged cache is an error naming the file, never a silently different grid
    anchor_cache(spec, tmp_path).write_text("{not json")
    with pytest.raises(SpecError, match="anchor.json is unreadable"):
        resolve_native(spec, tmp_path, _no_http)


def test_build_definitions_resolves_native_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOSAIC_DATA_DIR", str(tmp_path / "data"))
    seen: list[MosaicSpec] = []
    original = definitions.build_mosaic_assets
    monkeypatch.setattr(definitions, "build_mosaic_assets", lambda spec: (seen.append(spec), original(spec))[1])
    path = tmp_path / "spec.yaml"
    doc = spec_document(CLOSED, crs="EPSG:32632", resolution=RES, area=AREA, anchor="native")
    doc["mosaics"].append(dict(doc["mosaics"][0], name="edged", anchor="edge"))
    path.write_text(yaml.safe_dump(doc))
    client = _OneItemClient(_item(LANDSAT))
    monkeypatch.setattr(definitions, "_stac_client", lambda spec: client)
    definitions.build_definitions(path)
    definitions.build_definitions(path)  # a second process: from the cache
    assert [s.anchor for s in seen] == [(0.5, 0.5), "edge", (0.5, 0.5), "edge"]
    assert len(client.searches) == 1
    assert (tmp_path / "data" / "work" / "testmosaic" / "anchor.json").exists()
    assert not (tmp_path / "data" / "work" / "edged").exists()


# --- the resolver against a real STAC API ------------------------------------------------------------

ANCHOR_COLLECTION = "anchor-scenes"
SHIFT = (2.5, 5.0)  # the asset's grid, off the item's 10 m multiples: fraction (0.25, 0.5)


@pytest.fixture(scope="module")
def anchor_api(stac_api: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict]]:
    config = SceneSetConfig(
        collection=ANCHOR_COLLECTION,
        dates=(date(2024, 6, 1),),
        scenes_per_date=2,
        scene_size=256,
        spread_m=2000.0,
        utm_zones=(32,),
        seed=11,
    )
    items = [
        scene_item(s, ANCHOR_COLLECTION, datetime.now(UTC))
        for s in generate_scenes(tmp_path_factory.mktemp("a"), config)
    ]
    for item in items:
        a, b, c, d, e, f = item["properties"]["proj:transform"]
        item["assets"]["data"]["proj:transform"] = [a, b, c + SHIFT[0], d, e, f + SHIFT[1]]
        item["assets"]["data"]["proj:code"] = "EPSG:32632"
    reset_collection(stac_api, ANCHOR_COLLECTION)
    upsert_collection(stac_api, collection_document(ANCHOR_COLLECTION, items))
    upsert_items(stac_api, ANCHOR_COLLECTION, items)
    return stac_api, items


def _native_spec(api: str, collection: str = ANCHOR_COLLECTION) -> MosaicSpec:
    doc = spec_document(api, stac={"url": api, "collections": [collection]}, anchor="native")
    return parse_specs(doc)[0]


def test_resolver_learns_from_one_item_then_from_its_cache(anchor_api, tmp_path: Path) -> None:
    api, items = anchor_api
    spec = _native_spec(api)
    resolved = resolve_native(spec, tmp_path)  # the default client: spec.stac.url
    assert resolved.anchor == (SHIFT[0] / 10, SHIFT[1] / 10)
    record = json.loads((tmp_path / "work" / "testmosaic" / "anchor.json").read_text())
    first = min(items, key=lambda i: (i["properties"]["datetime"], i["id"]))
    assert record["anchor"] == list(resolved.anchor) and record["item"] == first["id"]
    assert (record["crs"], record["resolution"], record["asset"]) == ("EPSG:32632", 10, "data")
    a = MosaicGrid.from_spec(resolved).geobox.affine
    assert (_mod(a.c, 10), _mod(a.f, 10)) == SHIFT
    # a second process: the API is unreachable and must not even be asked
    again = resolve_native(_native_spec(CLOSED), tmp_path)
    assert again.anchor == resolved.anchor
    assert resolve_native(_native_spec(CLOSED), tmp_path, _no_http).anchor == resolved.anchor


def test_resolver_without_items_says_so(stac_api: str, tmp_path: Path) -> None:
    reset_collection(stac_api, "anchor-empty")
    upsert_collection(stac_api, collection_document("anchor-empty", []))
    with pytest.raises(SpecError, match="needs at least one item.*use anchor: edge or center"):
        resolve_native(_native_spec(stac_api, "anchor-empty"), tmp_path)
    assert not anchor_cache(_native_spec(stac_api, "anchor-empty"), tmp_path).exists()
