"""A cube's engine pieces on a real Zarr store: the spec's sources, the store layout (bands along
``band`` in source order, one band per chunk, static layers as their own variables), each source
writing only its own chunks, and the refusal of a store built without a source's band.

The end-to-end build through Dagster against each source's reference, and the incremental update
through the sensors, are in test_cube_build.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mosaic_assets.engine.cube import Cube
from mosaic_assets.engine.spec import SpecError, parse_specs
from mosaic_assets.engine.store import StoreMismatch, ensure_template
from mosaic_assets.engine.writer import write_region

STAC = {"url": "http://127.0.0.1:9/", "collections": ["c"]}


def _document(**extra) -> dict:
    return {
        "mosaics": [
            {
                "name": "cube",
                "area": {"bbox": [9.0, 45.0, 9.2, 45.1]},
                "crs": "EPSG:32632",
                "resolution": 30,
                "time": {"start": "2024-01-01", "step": "monthly"},
                "chunks": {"y": 128, "x": 128},
                "sources": [
                    {
                        "name": "s2",
                        "stac": STAC,
                        "bands": [{"name": "red", "asset": "red"}, {"name": "nir", "asset": "nir"}],
                        "composite": {"method": "median", "count_band": True},
                    },
                    {"name": "landsat", "stac": STAC, "bands": [{"name": "swir16", "asset": "swir16"}]},
                    {
                        "name": "dem",
                        "stac": STAC,
                        "bands": [{"name": "elevation", "asset": "data"}],
                        "static": True,
                        "dtype": "float32",
                        "nodata": -9999,
                    },
                ],
                **extra,
            }
        ]
    }


def _hashes(store: Path, under: str) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((store / under).rglob("*"))
        if p.is_file()
    }


def test_sources_become_mosaic_specs_on_one_grid():
    (spec,) = parse_specs(_document())
    cube = Cube.from_spec(spec)
    s2, landsat, dem = cube.sources
    assert [s.spec.name for s in cube.sources] == ["cube_s2", "cube_landsat", "cube_dem"]
    assert s2.spec.band_names == ("red", "nir", "s2_valid_count")
    assert s2.spec.composite.method == "median" and landsat.spec.composite.method == "first_valid"
    assert dem.spec.static and dem.spec.dtype == "float32" and s2.spec.dtype == "uint16"
    assert (s2.placement.band_offset, landsat.placement.band_offset) == (0, 3)
    assert dem.placement.static_variables == ("elevation",)
    assert {s.spec.cube for s in cube.sources} == {"cube"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s[1]["bands"].append({"name": "red", "asset": "b4"}), "band 'red' of source 'landsat'"),
        (lambda s: s[1].update(dtype="float32"), "sources[1]: dtype: only a static source"),
        (lambda s: s[2].update(composite={"method": "median"}), "a static source has no time steps"),
        (lambda s: s[2]["bands"].__setitem__(0, {"name": "time", "asset": "data"}), "static band 'time'"),
        (lambda s: s.__setitem__(1, {**s[1], "name": "s2"}), "names must be unique"),
    ],
)
def test_bad_sources_are_refused_naming_the_key(change, message):
    document = _document()
    change(document["mosaics"][0]["sources"])
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        parse_specs(document)


def test_a_source_name_colliding_with_a_mosaic_is_refused():
    document = _document()
    other = {**document["mosaics"][0], "name": "cube_s2"}
    other.pop("sources")
    other.update(stac=STAC, bands=[{"name": "b", "asset": "b"}])
    document["mosaics"].append(other)
    with pytest.raises(SpecError, match="names must be unique"):
        parse_specs(document)


def test_each_source_writes_only_its_own_chunks(tmp_path: Path):
    (spec,) = parse_specs(_document())
    cube = Cube.from_spec(spec)
    s2, landsat, dem = cube.sources
    store = tmp_path / "cube.zarr"
    ensure_template(spec, cube.grid, str(store), 2)
    block = next(cube.grid.blocks())
    rng = np.random.default_rng(3)
    s2_pixels = rng.integers(1, 10_000, (3, *block.shape), dtype="uint16")
    write_region(str(store), cube.grid, 1, block, s2_pixels, s2.placement)
    before = _hashes(store, "mosaic/c")
    landsat_pixels = rng.integers(1, 10_000, (1, *block.shape), dtype="uint16")
    write_region(str(store), cube.grid, 1, block, landsat_pixels, landsat.placement)
    after = _hashes(store, "mosaic/c")
    assert all(after[k] == v for k, v in before.items())  # Landsat rewrote no Sentinel-2 chunk
    assert set(after) - set(before) and all(k.split("/")[3] == "3" for k in set(after) - set(before))
    elevation = rng.normal(500, 100, (1, *block.shape)).astype("float32")
    write_region(str(store), cube.grid, 0, block, elevation, dem.placement)
    assert _hashes(store, "mosaic/c") == after

    ds = xr.open_zarr(store, mask_and_scale=False)
    rows, cols = block.rows, block.cols
    assert list(ds.band.values) == ["red", "nir", "s2_valid_count", "swir16"]
    assert list(ds.source.values) == ["s2", "s2", "s2", "landsat"]
    assert ds.mosaic.encoding["chunks"][1] == 1
    np.testing.assert_array_equal(ds.mosaic[1, :3, rows, cols].values, s2_pixels)
    np.testing.assert_array_equal(ds.mosaic[1, 3, rows, cols].values, landsat_pixels[0])
    assert (ds.mosaic[0].values == 0).all()  # the other time step untouched
    assert ds.elevation.dims == ("y", "x") and ds.elevation.dtype == np.float32
    assert ds.elevation.attrs["source"] == "dem"
    np.testing.assert_array_equal(ds.elevation[rows, cols].values, elevation[0])


def test_a_store_without_a_new_band_is_refused_naming_it(tmp_path: Path):
    (spec,) = parse_specs(_document())
    cube = Cube.from_spec(spec)
    store = str(tmp_path / "cube.zarr")
    ensure_template(spec, cube.grid, store, 1)
    document = _document()
    document["mosaics"][0]["sources"][1]["bands"].append({"name": "swir22", "asset": "swir22"})
    (wider,) = parse_specs(document)
    with pytest.raises(StoreMismatch, match=r"the spec adds \['swir22'\]"):
        ensure_template(wider, Cube.from_spec(wider).grid, store, 1)
    document = _document()
    document["mosaics"][0]["sources"].pop(1)
    (narrower,) = parse_specs(document)
    with pytest.raises(StoreMismatch, match=r"the spec lacks \['swir16'\]"):
        ensure_template(narrower, Cube.from_spec(narrower).grid, store, 1)


def test_the_asset_graph_shows_each_source(tmp_path: Path):
    import yaml

    from mosaic_assets.definitions import build_definitions

    path = tmp_path / "cube.yaml"
    path.write_text(yaml.safe_dump(_document()))
    defs = build_definitions(path)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for source in ("s2", "landsat", "dem"):
        assert {f"cube/{source}/{a}" for a in ("scene_catalog", "gti_index", "mosaic_chunks")} <= keys
        assert graph.get(dg_key(f"cube/{source}/mosaic_chunks")).group_name == "cube"
    assert "cube/zarr_template" in keys
    parents = {k.to_user_string() for k in graph.get(dg_key("cube/zarr_template")).parent_keys}
    assert parents == {"cube/s2/gti_index", "cube/landsat/gti_index", "cube/dem/gti_index"}
    assert {s.name for s in defs.sensors} >= {"cube_s2_stac_sensor", "cube_landsat_stac_sensor", "cube_dem_stac_sensor"}


def dg_key(path: str):
    import dagster as dg

    return dg.AssetKey(path.split("/"))


@pytest.mark.parametrize("values", ["raw", "physical"])
def test_scaling_lands_on_its_own_bands_and_layers(tmp_path: Path, values: str):
    """One (scale, offset) per stored band, count band included (it has none); a static layer's CF
    attributes follow its own ``values``, not the cube's; a source known only later is filled in."""
    from mosaic_assets.engine.store import record_scaling

    document = _document()
    document["mosaics"][0]["sources"][2]["values"] = values
    (spec,) = parse_specs(document)
    cube = Cube.from_spec(spec)
    store = str(tmp_path / "cube.zarr")
    s2_only = [(0.0001, -0.1), (0.0001, -0.1), (None, None), (None, None), (None, None)]
    ensure_template(spec, cube.grid, store, 1, s2_only)  # the store made before Landsat's scene table
    ds = xr.open_zarr(store, mask_and_scale=False)
    assert ds.scale.values.tolist() == [0.0001, 0.0001, 1.0, 1.0]
    everything = [*s2_only[:3], (2.75e-05, -0.2), (0.5, 10.0)]
    filled = record_scaling(spec, store, everything)
    assert filled == ["swir16", "elevation"] if values == "raw" else filled == ["swir16"]
    ds = xr.open_zarr(store, mask_and_scale=False)
    assert ds.scale.values.tolist() == [0.0001, 0.0001, 1.0, 2.75e-05]
    assert ds.offset.values.tolist() == [-0.1, -0.1, 0.0, -0.2]
    assert "scale_factor" not in ds.mosaic.attrs  # the bands do not share one pair
    cf = {k: ds.elevation.attrs.get(k) for k in ("scale_factor", "add_offset")}
    assert cf == ({"scale_factor": 0.5, "add_offset": 10.0} if values == "raw" else dict.fromkeys(cf))
    again = [(9.0, 9.0), (9.0, 9.0), (None, None), (9.0, 9.0), (9.0, 9.0)]
    assert record_scaling(spec, store, again) == []  # what is recorded is never changed


def test_a_plain_mosaic_with_a_count_band_records_its_scaling(tmp_path: Path):
    """declared_scaling gives the count band a pair of its own (none), so the template lines up."""
    import geopandas as gpd

    from mosaic_assets.engine.catalog import declared_scaling
    from mosaic_assets.engine.grid import MosaicGrid

    mosaic = {k: v for k, v in _document()["mosaics"][0].items() if k != "sources"}
    mosaic.update(name="plain", stac=STAC, bands=[{"name": "red", "asset": "red", "scale": 0.0001}])
    mosaic.update(composite={"method": "median", "count_band": True})
    (spec,) = parse_specs({"mosaics": [mosaic]})
    scaling = declared_scaling(spec, gpd.GeoDataFrame({"assets": []}))
    assert scaling == [(0.0001, None), (None, None)]
    store = str(tmp_path / "plain.zarr")
    ensure_template(spec, MosaicGrid.from_spec(spec), store, 1, scaling)
    ds = xr.open_zarr(store, mask_and_scale=False)
    assert ds.scale.values.tolist() == [0.0001, 1.0] and list(ds.band.values) == ["red", "valid_count"]
