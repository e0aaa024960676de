"""The Zarr store's template: metadata, coordinates and CF georeferencing, written with
``to_zarr(compute=False)`` so no pixel is written here; chunks are filled later region by region.

The store carries a fingerprint of its grid (CRS, transform, shape, chunks, dtype, bands, nodata,
codec). A store whose fingerprint differs from the spec is refused untouched: writing our regions
into someone else's grid would corrupt it silently.

The store's metadata is consolidated (zarr-python's consolidated metadata, kept in the root
``zarr.json``), on purpose: a reader (``xr.open_zarr``, the preview, the CLI's summary, the tests)
gets every array's metadata from that one object instead of one ``zarr.json`` per array (six here)
plus a LIST. Measured on the demo store in SeaweedFS over loopback, median of 7 cold opens:
176 ms consolidated against 208 ms without; each saved request weighs more on a remote object
store. Zarr 3 warns on every consolidation that the Zarr 3 specification does not cover it yet,
so ``_consolidating`` silences exactly that warning where we consolidate, and nowhere else.
"""

from __future__ import annotations

import fcntl
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from odc.geo.xr import xr_coords
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.errors import ZarrUserWarning

from .grid import MosaicGrid
from .object_store import is_remote, storage_options
from .spec import Codec, CubeSpec, MosaicSpec, TimeGrid
from .timegrid import time_coords

VARIABLE = "mosaic"
FINGERPRINT_ATTR = "mosaic_assets:grid"


class StoreMismatch(ValueError):
    """An existing store was built for another grid; it is left untouched."""


@dataclass(frozen=True)
class TemplateResult:
    created: bool
    time_length: int
    grown_by: int


@dataclass(frozen=True)
class StaticLayer:
    """A static source's band: a ``(y, x)`` variable of its own (no time axis, its own dtype)."""

    name: str
    source: str
    dtype: str
    nodata: float
    values: str = "raw"  # the static source's own: CF scale attributes only when it stores raw numbers


@dataclass(frozen=True)
class Placement:
    """Where one source's ``(band, y, x)`` blocks go in the store: bands ``[band_offset, band_offset + n)``
    of the timed ``mosaic`` variable, or, for a static source, one ``(y, x)`` variable per band."""

    band_offset: int = 0
    bands: int = 0  # how many bands a cube's time-varying source writes (0: every band, a plain mosaic)
    static_variables: tuple[str, ...] = ()

    @property
    def static(self) -> bool:
        return bool(self.static_variables)


@dataclass(frozen=True)
class StoreShape:
    """What a store holds, from a mosaic's or a cube's spec: the one description the template, the
    fingerprint and the writers' placements derive from.

    A cube with several time-varying sources stores one band per chunk, so that each source writes its
    own chunks: a new Landsat scene never rewrites the Sentinel-2 bands of its blocks (README, "Cubes")."""

    name: str
    dtype: str
    nodata: float
    values: str
    band_names: tuple[str, ...]
    band_sources: tuple[str, ...]  # empty for a mosaic of one dataset
    band_chunk: int
    statics: tuple[StaticLayer, ...]
    codec: Codec
    time: TimeGrid

    @property
    def cube(self) -> bool:
        return bool(self.band_sources)


def store_shape(spec: MosaicSpec | CubeSpec) -> StoreShape:
    if isinstance(spec, MosaicSpec):
        names = spec.band_names
        return StoreShape(
            spec.name, spec.dtype, spec.nodata, spec.values, names, (), len(names), (), spec.codec, spec.time
        )
    timed = [(s, m) for s, m in zip(spec.sources, spec.source_specs) if not s.static]
    names = tuple(b for _, m in timed for b in m.band_names)
    sources = tuple(s.name for s, m in timed for _ in m.band_names)
    statics = tuple(
        StaticLayer(b, s.name, m.dtype, m.nodata, m.values)
        for s, m in zip(spec.sources, spec.source_specs)
        if s.static
        for b in m.band_names
    )
    chunk = len(names) if len(timed) == 1 else 1
    return StoreShape(
        spec.name, spec.dtype, spec.nodata, spec.values, names, sources, chunk, statics, spec.codec, spec.time
    )


def placements(spec: CubeSpec) -> dict[str, Placement]:
    """Each source's place in the cube's store, by source name."""
    found: dict[str, Placement] = {}
    offset = 0
    for source, sub in zip(spec.sources, spec.source_specs):
        if source.static:
            found[source.name] = Placement(static_variables=sub.band_names)
        else:
            found[source.name] = Placement(band_offset=offset, bands=len(sub.band_names))
            offset += len(sub.band_names)
    return found


WHOLE_MOSAIC = Placement()  # a mosaic of one dataset: every band of the timed variable


def _nodata_json(value: float) -> float | str:
    return "nan" if np.isnan(value) else value  # NaN != NaN would refuse every store


def fingerprint(spec: MosaicSpec | CubeSpec, grid: MosaicGrid) -> dict:
    shape = store_shape(spec)
    found = {
        "crs": grid.geobox.crs.to_wkt(),
        "transform": [round(v, 9) for v in grid.transform],
        "shape": list(grid.shape),
        "chunks": list(grid.chunk_shape),
        "dtype": shape.dtype,
        "bands": list(shape.band_names),
        "nodata": _nodata_json(shape.nodata),
        "codec": shape.codec.model_dump(),
    }
    if shape.cube:  # a mosaic of one dataset keeps the fingerprint it always had: its stores stay valid
        found["band_sources"] = list(shape.band_sources)
        found["band_chunk"] = shape.band_chunk
        found["static"] = [
            {"name": s.name, "source": s.source, "dtype": s.dtype, "nodata": _nodata_json(s.nodata)}
            for s in shape.statics
        ]
    return found


def _compressors(codec: Codec, dtype: str) -> list:
    if codec.name == "none":
        return []
    if codec.name == "zstd":
        return [ZstdCodec(level=codec.clevel)]
    return [
        BloscCodec(cname=codec.cname, clevel=codec.clevel, shuffle=codec.shuffle, typesize=np.dtype(dtype).itemsize)
    ]


def compressors(spec: MosaicSpec) -> list:
    return _compressors(spec.codec, spec.dtype)


def template_dataset(
    spec: MosaicSpec | CubeSpec, grid: MosaicGrid, start: int, stop: int, scaling: list[tuple] | None = None
) -> xr.Dataset:
    """A lazy dataset for time steps [start, stop): nothing but metadata gets written from it.

    ``scaling``: each band's (scale, offset) as the catalog declares them (``catalog.declared_scaling``),
    recorded for ``values: raw`` as band coordinates ``scale`` / ``offset`` (1 and 0 where none is
    declared), and as CF ``scale_factor`` / ``add_offset`` when every band shares one pair, so that
    ``xr.open_zarr`` decodes to physical values by itself. (CF has one pair per variable: with a class
    band beside reflectance, decode as ``mosaic * scale + offset``.) In a cube, the band coordinate
    ``source`` names each band's source, and each static layer is a ``(y, x)`` variable whose
    ``source`` attribute names its own."""
    shape = store_shape(spec)
    cy, cx = grid.chunk_shape
    nb = len(shape.band_names)
    data = da.full(
        (stop - start, nb, *grid.shape), shape.nodata, dtype=shape.dtype, chunks=(1, shape.band_chunk, cy, cx)
    )
    coords = dict(xr_coords(grid.geobox, crs_coord_name="spatial_ref"))
    # datetime64 even with no time step yet (an empty list would be float64, which CF cannot encode in days)
    coords["time"] = ("time", np.asarray(time_coords(shape.time, stop)[start:], dtype="datetime64[ns]"))
    coords["band"] = ("band", np.array(shape.band_names, dtype=str))
    if shape.cube:
        coords["source"] = ("band", np.array(shape.band_sources, dtype=str))
    ds = xr.Dataset({VARIABLE: (("time", "band", "y", "x"), data)}, coords=coords)
    ds[VARIABLE].attrs.update(grid_mapping="spatial_ref", long_name=f"{shape.name} mosaic")
    declared = bool(scaling) and any(p != (None, None) for p in scaling[:nb])
    if shape.values == "raw" and (declared or shape.cube):  # a cube's later sources fill theirs in (record_scaling)
        pairs = _pairs((scaling or [])[:nb], nb)
        ds = ds.assign_coords(scale=("band", [p[0] for p in pairs]), offset=("band", [p[1] for p in pairs]))
        if declared and len(set(pairs)) == 1:
            ds[VARIABLE].attrs.update(scale_factor=pairs[0][0], add_offset=pairs[0][1])
    for i, layer in enumerate(shape.statics):
        ds[layer.name] = (("y", "x"), da.full(grid.shape, layer.nodata, dtype=layer.dtype, chunks=(cy, cx)))
        ds[layer.name].attrs.update(grid_mapping="spatial_ref", source=layer.source, long_name=f"{layer.name} (static)")
        scale, offset = (scaling or [])[nb + i] if scaling and len(scaling) > nb + i else (None, None)
        if layer.values == "raw" and (scale, offset) != (None, None):
            ds[layer.name].attrs.update(scale_factor=1.0 if scale is None else scale, add_offset=offset or 0.0)
    for name, axis, std in (("x", "X", "projection_x_coordinate"), ("y", "Y", "projection_y_coordinate")):
        ds[name].attrs.update(axis=axis, standard_name=std)
    ds.attrs[FINGERPRINT_ATTR] = json.dumps(fingerprint(spec, grid), sort_keys=True)
    ds.attrs["Conventions"] = "CF-1.8"
    return ds


def _pairs(scaling: list[tuple], count: int) -> list[tuple[float, float]]:
    """``count`` (scale, offset) pairs, 1 and 0 where none is declared."""
    padded = list(scaling) + [(None, None)] * (count - len(scaling))
    return [(1.0 if sc is None else float(sc), 0.0 if off is None else float(off)) for sc, off in padded[:count]]


def record_scaling(spec: MosaicSpec | CubeSpec, store: str, scaling: list[tuple]) -> list[str]:
    """Fill in scale/offset that became known after the store was made: a cube's store is made by
    whichever source's template run comes first (through the sensors, before the other sources have a
    scene table). Bands still at 1 and 0 take their declared pair, static layers their CF attributes;
    nothing recorded is ever changed. Returns the bands and layers filled in."""
    shape = store_shape(spec)
    nb = len(shape.band_names)
    group = zarr.open_group(store, mode="r+", storage_options=storage_options(store))
    filled: list[str] = []
    if shape.values == "raw" and "scale" in group and "offset" in group:
        scale, offset = group["scale"][:], group["offset"][:]
        for i, (pair, name) in enumerate(zip(_pairs(scaling[:nb], nb), shape.band_names)):
            if pair != (1.0, 0.0) and (scale[i], offset[i]) == (1.0, 0.0):
                scale[i], offset[i] = pair
                filled.append(name)
        if filled:
            group["scale"][:], group["offset"][:] = scale, offset
            pairs = set(zip(scale.tolist(), offset.tolist()))
            attrs = group[VARIABLE].attrs
            if len(pairs) == 1:
                attrs.update({"scale_factor": float(scale[0]), "add_offset": float(offset[0])})
            elif "scale_factor" in attrs:  # the bands no longer share one pair: CF cannot say it
                attrs.put({k: v for k, v in attrs.items() if k not in ("scale_factor", "add_offset")})
    for i, layer in enumerate(shape.statics):
        sc, off = scaling[nb + i] if len(scaling) > nb + i else (None, None)
        attrs = group[layer.name].attrs
        if layer.values == "raw" and (sc, off) != (None, None) and "scale_factor" not in attrs:
            attrs.update({"scale_factor": 1.0 if sc is None else float(sc), "add_offset": float(off or 0.0)})
            filled.append(layer.name)
    if filled:
        with _consolidating():
            zarr.consolidate_metadata(group.store)
    return filled


def _encoding(spec: MosaicSpec | CubeSpec, grid: MosaicGrid) -> dict:
    shape = store_shape(spec)
    cy, cx = grid.chunk_shape
    encoding = {
        VARIABLE: {
            "chunks": (1, shape.band_chunk, cy, cx),
            "compressors": _compressors(shape.codec, shape.dtype),
            "_FillValue": np.array(shape.nodata, dtype=shape.dtype).item(),
        },
        "time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"},
    }
    for layer in shape.statics:
        encoding[layer.name] = {
            "chunks": (cy, cx),
            "compressors": _compressors(shape.codec, layer.dtype),
            "_FillValue": np.array(layer.nodata, dtype=layer.dtype).item(),
        }
    return encoding


def differences(found: dict, wanted: dict) -> list[str]:
    """What differs between a store's fingerprint and the spec's, naming added and removed bands."""
    diffs = []
    for key in sorted(set(wanted) | set(found)):
        have, want = found.get(key), wanted.get(key)
        if have == want:
            continue
        if key in ("bands", "static") and isinstance(have, list) and isinstance(want, list):
            names = lambda items: [i["name"] if isinstance(i, dict) else i for i in items]  # noqa: E731
            added = [n for n in names(want) if n not in names(have)]
            removed = [n for n in names(have) if n not in names(want)]
            detail = ", ".join(
                part
                for part in (f"the spec adds {added}" if added else "", f"the spec lacks {removed}" if removed else "")
                if part
            )
            diffs.append(f"{key} ({detail or f'store {names(have)}, spec {names(want)}'})")
        elif key in ("dtype", "nodata", "band_chunk", "band_sources"):
            diffs.append(f"{key} (store {have!r}, spec {want!r})")
        elif key not in wanted:
            diffs.append(f"{key} (the store is a cube, the spec a mosaic of one dataset)")
        elif key not in found:
            diffs.append(f"{key} (the spec is a cube, the store a mosaic of one dataset)")
        else:
            diffs.append(key)
    return diffs


def check_compatible(spec: MosaicSpec | CubeSpec, grid: MosaicGrid, store: str) -> int:
    """Raise StoreMismatch if ``store`` holds another grid; returns its current time length."""
    group = zarr.open_group(store, mode="r", storage_options=storage_options(store))
    found = json.loads(group.attrs.get(FINGERPRINT_ATTR, "null") or "null")
    wanted = json.loads(json.dumps(fingerprint(spec, grid), sort_keys=True))
    if found != wanted:
        diffs = differences(found, wanted) if found else ["<no fingerprint>"]
        raise StoreMismatch(
            f"store {store} was built for another grid (differs in: {', '.join(diffs)}); refusing to touch it. "
            "Point the spec's 'store' elsewhere or delete the store."
        )
    return int(group[VARIABLE].shape[0])


def store_time_length(store: str) -> int:
    """Time steps the store holds now (0 when there is no store yet)."""
    if not store_exists(store):
        return 0
    return int(zarr.open_group(store, mode="r", storage_options=storage_options(store))[VARIABLE].shape[0])


def store_exists(store: str) -> bool:
    try:
        zarr.open_group(store, mode="r", storage_options=storage_options(store))
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return False
    return True


def ensure_template(
    spec: MosaicSpec | CubeSpec, grid: MosaicGrid, store: str, time_length: int, scaling: list[tuple] | None = None
) -> TemplateResult:
    """Create the store, or grow its time axis to ``time_length``; existing chunks are never touched.
    ``scaling`` (see ``template_dataset``) is recorded when the store is created."""
    with _template_lock(store):
        if not store_exists(store):
            with _consolidating():
                template_dataset(spec, grid, 0, time_length, scaling).to_zarr(
                    store,
                    mode="w-",
                    compute=False,
                    encoding=_encoding(spec, grid),
                    zarr_format=3,
                    consolidated=True,
                    storage_options=storage_options(store),
                )
            return TemplateResult(created=True, time_length=time_length, grown_by=time_length)
        current = check_compatible(spec, grid, store)
        if time_length <= current:
            return TemplateResult(created=False, time_length=current, grown_by=0)
        _grow_time(spec, store, current, time_length)
    return TemplateResult(created=False, time_length=time_length, grown_by=time_length - current)


def _grow_time(spec: MosaicSpec | CubeSpec, store: str, current: int, time_length: int) -> None:
    """Resize the time axis to exactly ``time_length`` and write the new time coordinates by absolute index.

    Idempotent, unlike an append: two processes growing the store at once (the template pool is the
    guard on a cluster; the lock below the guard on one machine) end with the same axis instead of
    appending twice (measured with xarray's append_dim: 3 steps grown to 5 twice gave 7, the last two
    labelled with the wrong dates). Existing mosaic chunks are never touched, and never shrunk."""
    group = zarr.open_group(store, mode="r+", storage_options=storage_options(store))
    variable, times = group[VARIABLE], group["time"]
    units = times.attrs.get("units", "")
    if units != "days since 1970-01-01":
        raise StoreMismatch(f"store {store}: time coordinate in {units!r}, expected 'days since 1970-01-01'")
    values = time_coords(spec.time, time_length)
    days = ((values - np.datetime64("1970-01-01", "ns")) // np.timedelta64(1, "D")).astype("int64")
    if times.shape[0] < time_length:
        times.resize((time_length,))
    times[current:time_length] = days[current:time_length]
    if variable.shape[0] < time_length:
        variable.resize((time_length, *variable.shape[1:]))
    with _consolidating():
        zarr.consolidate_metadata(group.store)


@contextmanager
def _consolidating() -> Iterator[None]:
    """Consolidate without zarr's notice that consolidated metadata is not (yet) in the Zarr 3
    specification: we keep it on purpose (see the module docstring); any other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Consolidated metadata is currently not part", category=ZarrUserWarning
        )
        yield


@contextmanager
def _template_lock(store: str) -> Iterator[None]:
    """An exclusive lock next to a local store (a no-op for object stores: the template pool serialises those)."""
    if is_remote(store):
        yield
        return
    path = Path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.template.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
