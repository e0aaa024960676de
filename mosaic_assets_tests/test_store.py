"""The Zarr template: CF georeferencing, growth along time, and refusal of a foreign store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.store import StoreMismatch, ensure_template

from .conftest import spec_document


def _spec(**overrides):
    spec = parse_specs(spec_document("http://127.0.0.1:1", **overrides))[0]
    return spec, MosaicGrid.from_spec(spec)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_template_grows_along_time_without_touching_existing_data(tmp_path: Path) -> None:
    spec, grid = _spec()
    store = str(tmp_path / "m.zarr")
    assert ensure_template(spec, grid, store, 2).created
    ds = xr.open_zarr(store, consolidated=True, mask_and_scale=False)
    assert ds["mosaic"].shape == (2, 4, *grid.shape)
    assert ds["mosaic"].encoding["chunks"] == (1, 4, *grid.chunk_shape)
    # put real bytes in time step 1, then grow to 5 steps
    region = {"time": slice(1, 2), "band": slice(0, 4), "y": slice(0, 256), "x": slice(0, 256)}
    patch = xr.Dataset({"mosaic": (("time", "band", "y", "x"), np.full((1, 4, 256, 256), 1234, dtype="uint16"))})
    patch.to_zarr(store, region=region, mode="r+", consolidated=False)
    chunk_files_before = _digest(Path(store) / "mosaic" / "c")
    result = ensure_template(spec, grid, store, 5)
    assert (result.created, result.time_length, result.grown_by) == (False, 5, 3)
    assert _digest(Path(store) / "mosaic" / "c") == chunk_files_before
    ds = xr.open_zarr(store, consolidated=True, mask_and_scale=False)
    assert [str(t)[:10] for t in ds["time"].values] == [
        "2024-06-01",
        "2024-06-02",
        "2024-06-03",
        "2024-06-04",
        "2024-06-05",
    ]
    assert int(ds["mosaic"][1, 0, 0, 0]) == 1234 and int(ds["mosaic"][4, 0, 0, 0]) == 0
    assert ensure_template(spec, grid, store, 3).grown_by == 0  # never shrinks


@pytest.mark.parametrize(
    "overrides, differs",
    [
        ({"resolution": 20}, "shape"),
        ({"chunks": {"y": 512, "x": 512}, "partition_bytes": "8MiB"}, "chunks"),
        ({"dtype": "int16"}, "dtype"),
        ({"bands": [{"name": "red", "asset": "data", "index": 3}]}, "bands"),
        ({"crs": "EPSG:3035"}, "crs"),
        ({"codec": {"name": "zstd"}}, "codec"),
    ],
)
def test_store_of_another_grid_is_refused_untouched(tmp_path: Path, overrides: dict, differs: str) -> None:
    spec, grid = _spec()
    store = tmp_path / "m.zarr"
    ensure_template(spec, grid, str(store), 2)
    before = _digest(store)
    other, other_grid = _spec(**overrides)
    with pytest.raises(StoreMismatch, match=differs):
        ensure_template(other, other_grid, str(store), 3)
    assert _digest(store) == before


@pytest.mark.parametrize("told_occupied", [False, True])
def test_region_write_is_byte_identical_to_xarray_region_write(tmp_path: Path, told_occupied: bool) -> None:
    """The writer writes with zarr directly; the chunks must be what xarray's ``to_zarr(region=...)``
    wrote: same bytes, all-nodata chunks absent (also where a first write had stored data), a partly
    nodata chunk stored, edge chunks clipped; told which chunks hold data (as ``write_block`` does, so
    zarr's all-fill test is skipped for those) or not."""
    from mosaic_assets.engine.writer import _occupied_chunks, write_region

    spec, grid = _spec()
    blocks = list(grid.blocks())
    rng = np.random.default_rng(5)
    stores = {name: tmp_path / f"{name}.zarr" for name in ("xarray", "zarr")}
    for store in stores.values():
        ensure_template(spec, grid, str(store), 2)
    for i, block in enumerate([blocks[0], blocks[-1]]):  # a full block and the clipped corner block
        h, w = block.rows.stop - block.rows.start, block.cols.stop - block.cols.start
        data = rng.integers(1, 5000, size=(len(spec.bands), h, w), dtype=spec.dtype)
        data[:, : h // 2, :] = spec.nodata  # whole chunks of nodata (not stored) and chunks partly nodata
        data[:, h // 2 : h // 2 + 3, :] = spec.nodata
        region = {"time": slice(i, i + 1), "band": slice(0, len(spec.bands)), "y": block.rows, "x": block.cols}
        first = rng.integers(1, 5000, size=data.shape, dtype=spec.dtype)  # every chunk stored, then rewritten
        for pixels in (first, data):
            ds = xr.Dataset({"mosaic": (("time", "band", "y", "x"), pixels[np.newaxis])})
            ds.to_zarr(str(stores["xarray"]), region=region, mode="r+", consolidated=False)
            occupied = _occupied_chunks(spec.valid_mask(pixels), grid.chunk_shape) if told_occupied else None
            write_region(str(stores["zarr"]), grid, i, block, pixels, occupied=occupied)
    written = _digest(stores["zarr"])
    assert any(k.startswith("mosaic/c/") for k in written)
    assert written == _digest(stores["xarray"])


def test_a_block_is_written_as_rectangles_covering_each_chunk_once() -> None:
    """``writer._rectangles``: every chunk of the block in exactly one write, flagged as occupied or not."""
    from mosaic_assets.engine.writer import _rectangles

    rng = np.random.default_rng(3)
    for _ in range(200):
        occupied = rng.random((int(rng.integers(1, 7)), int(rng.integers(1, 7)))) < rng.random()
        seen = np.zeros(occupied.shape, dtype=int)
        for (r0, r1), (c0, c1), held in _rectangles(occupied):
            assert (occupied[r0:r1, c0:c1] == held).all()
            seen[r0:r1, c0:c1] += 1
        assert (seen == 1).all()


def test_region_write_clears_temps_a_killed_writer_of_the_block_left(tmp_path: Path) -> None:
    """zarr writes a chunk to '<chunk>.<uuid>.partial' then renames it; a SIGKILL can leave the temp.
    The block's rerun removes its own temps and no other block's."""
    from mosaic_assets.engine.writer import write_region

    spec, grid = _spec()
    blocks = list(grid.blocks())
    store = tmp_path / "m.zarr"
    ensure_template(spec, grid, str(store), 1)
    mine, other = blocks[0], blocks[1]
    rows = Path(store) / "mosaic" / "c" / "0" / "0"
    (rows / "0").mkdir(parents=True)
    stale = rows / "0" / f"{mine.cols.start // grid.chunk_shape[1]}.0123abcd.partial"
    foreign = rows / "0" / f"{other.cols.start // grid.chunk_shape[1]}.4567ef01.partial"
    stale.touch()
    foreign.touch()
    h, w = mine.rows.stop - mine.rows.start, mine.cols.stop - mine.cols.start
    write_region(str(store), grid, 0, mine, np.full((len(spec.bands), h, w), 7, dtype=spec.dtype))
    assert not stale.exists() and foreign.exists()
