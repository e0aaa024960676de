"""Bad spec values fail at load time, naming the key, before anything is written."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mosaic_assets.engine.spec import SpecError, load_specs, parse_specs

from .conftest import spec_document

GOOD = spec_document("http://127.0.0.1:1")


def _with(path: list, value) -> dict:
    doc = copy.deepcopy(GOOD)
    target = doc["mosaics"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def test_good_spec_loads() -> None:
    (spec,) = parse_specs(GOOD)
    assert spec.name == "testmosaic" and spec.partition_bytes == 1024**2 and spec.chunk_bytes == 4 * 256 * 256 * 2


@pytest.mark.parametrize(
    "path, value, named",
    [
        (["crs"], "EPSG:999999", "mosaics[0].crs"),
        (["area", "crs"], "not a crs", "mosaics[0].area.crs"),
        (["resolution"], 0, "mosaics[0].resolution"),
        (["resolution"], -10, "mosaics[0].resolution"),
        (["chunks", "y"], 0, "mosaics[0].chunks.y"),
        (["chunks", "x"], -256, "mosaics[0].chunks.x"),
        (["area", "bbox"], [12.0, 47.0, 11.0, 47.2], "mosaics[0].area.bbox"),
        (["area", "bbox"], [12.0, 47.0, 12.0, 47.0], "mosaics[0].area.bbox"),
        (["partition_bytes"], "100KiB", "partition_bytes"),
        (["partition_bytes"], "lots", "mosaics[0].partition_bytes"),
        (["bands"], [], "mosaics[0].bands"),
        (["stac", "collections"], [], "mosaics[0].stac.collections"),
        (["stac", "url"], "ftp://example", "mosaics[0].stac.url"),
        (["dtype"], "complex64", "mosaics[0].dtype"),
        (["nodata"], -1, "nodata"),
        (["time", "step"], "hourly", "mosaics[0].time.step"),
        (["name"], "Bad Name", "mosaics[0].name"),
        (["colour"], "blue", "mosaics[0].colour"),
    ],
)
def test_bad_value_names_its_key(path: list, value, named: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_specs(_with(path, value))
    assert named in str(err.value)


def test_duplicate_band_names_refused() -> None:
    doc = _with(["bands"], [{"name": "red", "asset": "data"}, {"name": "red", "asset": "data", "index": 2}])
    with pytest.raises(SpecError, match=r"mosaics\[0\]\.bands"):
        parse_specs(doc)


def test_bad_spec_file_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the Dagster definitions with a bad spec fails before any folder or store exists."""
    from mosaic_assets.definitions import build_definitions

    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(_with(["resolution"], -1)))
    data_dir = tmp_path / "data"
    monkeypatch.setenv("MOSAIC_DATA_DIR", str(data_dir))
    with pytest.raises(SpecError, match=r"mosaics\[0\]\.resolution"):
        build_definitions(spec_file)
    assert not data_dir.exists()


def test_not_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("mosaics: [ {")
    with pytest.raises(SpecError, match="x.yaml"):
        load_specs(bad)


def test_nodata_value_compares_in_the_mosaic_dtype() -> None:
    """A uint16 block compared with ``nodata_value`` stays integer (no float64 temporary), same answer."""
    import numpy as np

    doc = spec_document("http://127.0.0.1:1")
    doc["mosaics"][0]["nodata"] = 0.0  # as a spec file's "nodata: 0" loads (a float field)
    (spec,) = parse_specs(doc)
    block = np.array([[0, 1], [65535, 0]], dtype=spec.dtype)
    assert spec.nodata_value.dtype == np.dtype(spec.dtype)
    assert np.result_type(block, spec.nodata_value) == block.dtype
    assert np.result_type(block, spec.nodata) == np.float64  # what comparing with the float did
    assert ((block != spec.nodata_value) == (block != spec.nodata)).all()


@pytest.mark.parametrize(
    ("dtype", "nodata", "bands"),
    [
        ("uint16", 0, 4),
        ("uint16", 0, 1),
        ("uint16", 65535, 3),
        ("int16", 0, 3),
        ("int16", -9999, 2),
        ("uint8", 0, 2),
        ("float32", "nan", 3),
        ("float32", 0, 2),
    ],
)
def test_valid_mask_is_any_band_unlike_nodata(dtype: str, nodata: float | str, bands: int) -> None:
    """``valid_mask``, the one test of "valid" (its nodata-0 shortcut ORs the bands' bits), against
    numpy's own reduction over the block: any band that is not nodata (NaN nodata: any band not NaN)."""
    import numpy as np

    names = ["b1", "b2", "b3", "b4"][:bands]
    doc = spec_document(
        "http://127.0.0.1:1",
        dtype=dtype,
        nodata=float(nodata),
        bands=[{"name": n, "asset": "data", "index": i + 1} for i, n in enumerate(names)],
    )
    (spec,) = parse_specs(doc)
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        data = rng.normal(size=(bands, 64, 48)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=(bands, 64, 48), endpoint=True, dtype=dtype)
    fill = rng.random((bands, 64, 48)) < 0.7  # most band values nodata, so some pixels have none
    data[fill] = spec.nodata_value
    data[:, :5] = spec.nodata_value  # rows nodata in every band
    if np.isnan(spec.nodata):
        expected = (~np.isnan(data)).any(axis=0)
    else:
        expected = (data != spec.nodata_value).any(axis=0)
    assert expected.any() and not expected.all()
    assert (spec.valid_mask(data) == expected).all()
