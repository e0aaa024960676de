"""Write one (time step, block) partition: read the block window from the time step's GTI and write
it into its chunk-aligned region of the Zarr array (``write_region``).

Why one GDAL read per block (instead of dask reading chunk by chunk): GDAL's GTI then opens each
overlapping scene once per block and can use its own threads (GDAL_NUM_THREADS); the block is
already bounded by ``partition_bytes``. Parallelism comes from running partitions in separate
processes. Rerunning a partition writes identical bytes; a block no scene touches writes nothing.

Never silent nodata: before the read, every scene touching the block is opened (header only) and its
CRS, size, transform and band count are compared with its STAC metadata; a read that fails is traced
back to the scene(s) that fail it. Either way the partition fails with ``SceneReadError`` naming the
item id and href, and nothing is written into its region; or, when the spec says ``bad_scenes: skip``,
the block is read again without those scenes (GTI ``FILTER``) and they are listed in the result.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import pyogrio
import rasterio
import rasterio.cache
import zarr
from odc.geo.geom import BoundingBox
from pyproj import CRS
from rasterio.errors import RasterioError, WindowError
from rasterio.windows import Window, from_bounds

from .bandgroups import STACK_FIELD_PREFIX, read_plan
from .catalog import MISSING
from .composite_read import composite_block, needs_scene_reads
from .gdal_env import all_local, gdal_env
from .grid import Block, MosaicGrid
from .gti import INDEX_LAYER, SORT_FIELD, GtiFiles, staged_locally
from .gti_cache import open_gtis
from .leftovers import remove_block_partials
from .modifier import redact_text
from .object_store import exists, storage_options, vsi_path
from .signed_read import SignError, sign_scenes, signed_gti
from .skipped import SkippedScene
from .spec import MosaicSpec
from .store import VARIABLE, WHOLE_MOSAIC, Placement

# GDAL messages that say "try again later": HTTP 5xx / 429, timeouts, dropped connections
_TRANSIENT = re.compile(
    r"HTTP (?:response )?code:? ?(?:5\d\d|429)|\b(?:50[0234]|429)\b.*(?:error|Service|Gateway)|timed? ?out|"
    r"Connection (?:reset|refused|aborted)|Could not resolve host|SSL connect error",
    re.IGNORECASE,
)
SCENE_COLUMNS = ["item_id", "collection", "hrefs", "assets"]


class SceneReadError(RuntimeError):
    """A scene touching a block cannot be read, or contradicts its STAC metadata. The message names
    the item id and href. ``transient`` is True when GDAL's error looks like a passing HTTP/network fault
    (worth retrying), False when retrying cannot help (truncated file, 404, wrong CRS)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def gdal_messages(exc: BaseException) -> str:
    """The whole chain of GDAL errors behind a rasterio exception (rasterio's own message is
    often just 'Read failed. See previous exception for details.')."""
    seen, messages, current = set(), [], exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text not in messages:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return " <- ".join(messages)


def _is_transient(message: str) -> bool:
    return bool(_TRANSIENT.search(message))


@dataclass(frozen=True)
class BlockWriteResult:
    scenes: int
    pixels: int
    valid_pixels: int
    chunks_written: int
    bytes_uncompressed: int
    seconds: float
    skipped: tuple[SkippedScene, ...] = ()

    @property
    def empty(self) -> bool:
        return self.scenes == 0


def scenes_in_block(grid: MosaicGrid, files: GtiFiles, block: Block) -> list[str]:
    """Item ids whose footprint intersects the block, from the index's spatial index (no scene I/O)."""
    if not exists(files.index):
        return []
    bounds = grid.window_geobox(block).extent.boundingbox
    table = pyogrio.read_dataframe(
        vsi_path(files.index), layer=INDEX_LAYER, columns=["item_id"], bbox=tuple(bounds), read_geometry=False
    )
    return sorted(table["item_id"].tolist())


def block_scenes(grid: MosaicGrid, files: GtiFiles, block: Block, with_geometry: bool = False) -> list[dict]:
    """What the index says about each scene touching the block (item id, its assets' hrefs, grids and
    band metadata as STAC declared them), sorted by item id; with ``with_geometry`` also its footprint
    and z-order (to index a block's scenes again, signed), and its stacks' locations (``bandgroups.read_plan``).
    Indexes from before these columns give ids only."""
    if not exists(files.index):
        return []
    bounds = grid.window_geobox(block).extent.boundingbox  # a piece asks for its own scenes only
    path = vsi_path(files.index)
    version = _version(str(files.index))
    fields = _fields_of_version(path, version) if version else _index_fields(path)
    stacked = sorted(f for f in fields if f.startswith(STACK_FIELD_PREFIX))  # which stacks apply (read_plan)
    columns = [c for c in [*SCENE_COLUMNS, SORT_FIELD] if c in fields] + stacked
    table = pyogrio.read_dataframe(
        path, layer=INDEX_LAYER, columns=columns, bbox=tuple(bounds), read_geometry=with_geometry
    )
    records = table.to_dict("records")
    for record in records:
        if "assets" in record:
            record["assets"] = json.loads(record["assets"])
    return sorted(records, key=lambda r: r["item_id"])


def _index_fields(path: str) -> frozenset[str]:
    return frozenset(pyogrio.read_info(path, layer=INDEX_LAYER)["fields"])


@functools.lru_cache(maxsize=64)
def _fields_of_version(path: str, version: tuple) -> frozenset[str]:
    """A local index's fields, once per version (``_version``: size and mtime; a remote index is read
    each time): opening the GeoPackage for them was 5 % of a small partition's CPU (quick benchmark,
    32 MiB partitions)."""
    return _index_fields(path)


def _read_path(scene: dict, asset: str) -> str:
    """The path GDAL opens for a scene's asset: the freshly signed one when the spec has a modifier."""
    return scene.get("signed", {}).get(asset) or scene["assets"][asset]["href"]


def verify_scenes(spec: MosaicSpec, scenes: list[dict]) -> None:
    """Open each scene asset's header (same GDAL config as the read) and compare it with what STAC
    declared for that asset (its own grid: Sentinel-2's 20 m bands have their own shape and transform).

    Raises SceneReadError naming the item, asset and (unsigned) href when a file cannot be opened (404,
    truncated header, not a raster) or its CRS, size, geotransform or band count contradicts STAC: GDAL
    would otherwise warp it from where the file says it is, and the pixels STAC promised would be nodata."""
    wanted_bands: dict[str, int] = {}
    for band in spec.bands:
        wanted_bands[band.asset] = max(wanted_bands.get(band.asset, 0), band.index)
    with gdal_env(stac=spec.stac):
        for scene in scenes:
            if "assets" not in scene:
                continue  # an index from before these columns: nothing to compare against
            item_id = scene["item_id"]
            for asset, declared in sorted(scene["assets"].items()):
                if MISSING in declared:  # the item lacks its mask asset: for good, whatever a retry does
                    raise SceneReadError(declared[MISSING])
                where = f"item {item_id}: asset {asset!r} href {declared['href']}"
                crs, shape, transform = declared["crs"], declared["shape"], declared["transform"]
                try:
                    found_wkt, *found = _header(declared["href"], _read_path(scene, asset))
                except RasterioError as exc:
                    message = redact(gdal_messages(exc), scene)
                    raise SceneReadError(f"{where}: cannot be opened: {message}", _is_transient(message)) from exc
                problems = []
                if found_wkt is None or not _same_crs(found_wkt, str(crs)):
                    found_name = CRS.from_wkt(found_wkt).to_string() if found_wkt else None
                    problems.append(f"CRS is {found_name}, STAC says {crs}")
                if list(found[0]) != list(shape):
                    problems.append(f"shape is {list(found[0])}, STAC says {list(shape)}")
                if not np.allclose(found[1], transform, rtol=0, atol=1e-3 * abs(transform[0] or 1)):
                    problems.append(f"transform is {found[1]}, STAC says {list(transform)}")
                if found[2] < wanted_bands.get(asset, 1):
                    problems.append(f"has {found[2]} bands, the spec reads band {wanted_bands[asset]}")
                if problems:
                    raise SceneReadError(f"{where}: contradicts its STAC metadata: {'; '.join(problems)}")


_HEADERS: dict[tuple, tuple] = {}  # what verify_scenes found, per file version, for this process
_HEADERS_MAX = 4096


def _header(href: str, path: str) -> tuple:
    """(CRS WKT or None, (height, width), transform, band count) of the file at ``path`` (``href``: its
    unsigned name, the same across signings). Kept per process: a scene under several blocks of a ranged
    run is opened once, not once per block (measured: a fifth of a plain mosaic's write time went to
    these opens and their CRS parsing). Keyed on size and mtime for a local file, so a file replaced
    on disk is opened again; an object-store key is taken as immutable within a run. Failures are not
    kept: the next block tries again."""
    key = (href, *_version(href))
    if key not in _HEADERS:
        with rasterio.open(path) as src:
            found = (src.crs.to_wkt() if src.crs else None, (src.height, src.width), list(src.transform)[:6], src.count)
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[key] = found
    return _HEADERS[key]


def _version(href: str) -> tuple:
    try:
        stat = os.stat(href)
    except (OSError, ValueError):
        return ()  # remote, or gone (the open then says so)
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=256)
def _same_crs(found_wkt: str, declared: str) -> bool:
    return CRS.from_wkt(found_wkt).equals(CRS.from_user_input(declared), ignore_axis_order=True)


def redact(text: str, scene: dict) -> str:
    """``text`` with each signed path of the scene replaced by its unsigned one: GDAL's messages quote
    the URL it opened, and a token must never reach an error, a log or the event log."""
    signed = scene.get("signed", {})
    for asset, path in signed.items():
        text = text.replace(path, scene["assets"][asset]["href"])
    return redact_text(text, signed.values()) if signed else text


def _culprits(spec: MosaicSpec, grid: MosaicGrid, block: Block, scenes: list[dict]) -> dict[str, str]:
    """After a failed block read: read each scene's part of the block at full resolution, alone, and
    report the ones that fail: item id -> "item <id>: asset <a> href <h>: <GDAL's message>"."""
    found: dict[str, str] = {}
    bounds = grid.window_geobox(block).extent
    with gdal_env(stac=spec.stac):
        for scene in scenes:
            if "assets" not in scene:
                continue
            for asset, declared in sorted(scene["assets"].items()):
                if MISSING in declared:
                    found[scene["item_id"]] = declared[MISSING]
                    break
                indexes = sorted({b.index for b in spec.bands if b.asset == asset})
                try:
                    with rasterio.open(_read_path(scene, asset)) as src:
                        box = bounds.to_crs(src.crs.to_wkt()).boundingbox if src.crs else BoundingBox(*src.bounds)
                        window = from_bounds(*box, transform=src.transform).round_offsets().round_lengths()
                        try:
                            window = window.intersection(Window(0, 0, src.width, src.height))
                        except WindowError:
                            continue  # this scene's raster does not reach into the block
                        src.read(indexes, window=window)
                except RasterioError as exc:
                    message = f"item {scene['item_id']}: asset {asset!r} href {declared['href']}: "
                    message += redact(gdal_messages(exc), scene)
                    found[scene["item_id"]] = "; ".join(filter(None, [found.get(scene["item_id"]), message]))
    return found


def _without(item_ids: list[str]) -> str:
    """A GTI ``FILTER`` (SQL WHERE on the index) leaving these items out."""
    quoted = ",".join("'" + i.replace("'", "''") + "'" for i in sorted(item_ids))
    return f"item_id NOT IN ({quoted})"


def read_block(
    spec: MosaicSpec,
    grid: MosaicGrid,
    files: GtiFiles,
    block: Block,
    exclude: list[str] | None = None,
    signed: list[dict] | None = None,
    scenes: list[dict] | None = None,
    out: np.ndarray | None = None,
    where: str | None = None,
) -> np.ndarray:
    """(band, y, x) pixels of the block, one GTI read per read group (``bandgroups``; a stack where every
    scene of the block has it, ``read_plan``) stacked in the spec's band order, under the writer's GDAL
    config. ``exclude``: item ids the read leaves out (the GTI's FILTER open option, so the index itself
    is never rewritten). ``signed``: the block's scenes
    with freshly signed paths: read through a GTI of just those scenes, held in memory (``signed_gti``).
    A spec with a mask, a reducer or the count band composites the block scene by scene instead
    (``composite_read``): ``scenes`` (``block_scenes``) or ``signed`` must then name them. ``out``: a
    (band, y, x) array of the spec's dtype to read into (``write_block`` passes its kept buffer).
    ``where``: read one z-order layer of the scenes only (a GTI ``FILTER`` on the index, through a kept
    GTI of its own: ``layered_write``); ``scenes`` then still names all of the block's, so every layer
    reads the same groups."""
    if needs_scene_reads(spec):
        if signed is None and scenes is None:
            raise ValueError(f"block {block.key}: a composite needs the block's scenes (block_scenes)")
        chosen = [s for s in (signed or scenes) if s["item_id"] not in (exclude or ())]
        return composite_block(spec, grid, files, block, chosen)
    window = Window(block.cols.start, block.rows.start, block.shape[1], block.shape[0])
    kept = None if scenes is None else [s for s in (signed or scenes) if s["item_id"] not in (exclude or ())]
    groups = read_plan(spec, kept)
    whole = len(groups) == 1
    if out is None and not whole:
        out = np.empty((len(spec.bands), *block.shape), dtype=spec.dtype)
    local = kept is not None and all_local(_read_path(s, a) for s in kept for a in s.get("assets", {}))
    with gdal_env(stac=spec.stac, local_scenes=local):
        for group in groups:
            xml = files.group_xml(group)
            into = out if whole else None  # a group of some bands is read alone, then placed
            if signed is not None:
                with signed_gti(spec, grid, group, [s for s in signed if s["item_id"] not in (exclude or ())]) as gti:
                    data = gti.read(window=window, out=into)
            elif not exclude:
                # the kept GTI (gti_cache): the common path
                data = open_gtis.read(GtiFiles(files.index, xml), window, out=into, where=where)
            else:
                with rasterio.open(vsi_path(xml), FILTER=_without(exclude)) as mosaic:
                    data = mosaic.read(window=window, out=into)
            if whole:
                return data
            out[list(group.positions)] = data
    return out


def _read_error(block: Block, exc: RasterioError, culprits: dict[str, str], scenes: list[dict]) -> SceneReadError:
    message = gdal_messages(exc)
    for scene in scenes:
        message = redact(message, scene)
    named = "; ".join(culprits.values()) or "no single scene fails alone; scenes: " + ", ".join(
        s["item_id"] for s in scenes
    )
    return SceneReadError(
        f"block {block.key}: reading the GTI failed ({message}); {named}",
        transient=_is_transient(message) or any(_is_transient(c) for c in culprits.values()),
    )


def _signed(scenes: list[dict]) -> list[dict] | None:
    return scenes if any("signed" in s for s in scenes) else None


def _verified_read(
    spec: MosaicSpec, grid: MosaicGrid, files: GtiFiles, block: Block, scenes: list[dict], out: np.ndarray | None
) -> np.ndarray:
    verify_scenes(spec, scenes)
    try:
        return read_block(spec, grid, files, block, signed=_signed(scenes), scenes=scenes, out=out)
    except RasterioError as exc:
        raise _read_error(block, exc, _culprits(spec, grid, block, scenes), scenes) from exc


def _read_skipping(
    spec: MosaicSpec, grid: MosaicGrid, files: GtiFiles, block: Block, scenes: list[dict], out: np.ndarray | None
) -> tuple[np.ndarray, list[SkippedScene]]:
    """The block without the scenes that cannot be read or contradict STAC (``bad_scenes: skip``).

    Transient errors still raise (a retry may read the scene); only scenes that fail alone and for good
    are skipped, so one bad scene never takes its neighbours' pixels with it."""
    skipped: dict[str, str] = {}
    for scene in scenes:
        try:
            verify_scenes(spec, [scene])
        except SceneReadError as exc:
            if exc.transient:
                raise
            skipped[scene["item_id"]] = str(exc)
    while True:
        try:
            data = read_block(
                spec, grid, files, block, exclude=list(skipped), signed=_signed(scenes), scenes=scenes, out=out
            )
            return data, [SkippedScene(i, why) for i, why in sorted(skipped.items())]
        except RasterioError as exc:
            rest = [s for s in scenes if s["item_id"] not in skipped]
            culprits = _culprits(spec, grid, block, rest)
            error = _read_error(block, exc, culprits, rest)
            if error.transient or not culprits:
                raise error from exc
            skipped.update(culprits)


@dataclass(frozen=True)
class BlockPixels:
    """What a block's scenes give: its ``(band, y, x)`` pixels (None: no scene touches the block)."""

    data: np.ndarray | None
    scenes: int
    skipped: tuple[SkippedScene, ...] = ()


def block_pixels(
    spec: MosaicSpec,
    grid: MosaicGrid,
    files: GtiFiles,
    block: Block,
    out: np.ndarray | None = None,
    scenes: list[dict] | None = None,
) -> BlockPixels:
    """The block's pixels exactly as ``write_block`` writes them (scenes verified, signed just before
    the read, bad ones skipped with ``bad_scenes: skip``), without writing them. ``out``: as in
    ``read_block`` (a composite allocates its own). ``scenes``: the block's ``block_scenes``, when the
    caller has them already (``layered_write``'s plan asks the index once for a run's pieces)."""
    files = staged_locally(spec, grid, files)  # an object-store GTI is read from a local copy of its index
    if scenes is None:
        scenes = block_scenes(grid, files, block, with_geometry=spec.stac.modifier is not None)
    if not scenes:
        return BlockPixels(None, 0)
    if spec.stac.modifier:
        try:
            scenes = sign_scenes(spec, scenes)  # now, just before reading: a catalog's tokens may have expired
        except SignError as exc:
            raise SceneReadError(f"block {block.key}: {exc}", exc.transient) from None
    skipped: list[SkippedScene] = []
    try:
        if spec.bad_scenes == "skip":
            data, skipped = _read_skipping(spec, grid, files, block, scenes, out)
        else:
            data = _verified_read(spec, grid, files, block, scenes, out)
    except SceneReadError as exc:
        if exc.transient:
            # GDAL remembers a failed HTTP response for the life of the process: forget it, so that a
            # retry in this process (Dagster's in-process executor, a ranged run) asks the server again
            rasterio.cache.invalidate_all()
        raise
    return BlockPixels(data, len(scenes), tuple(skipped))


def write_block(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    files: GtiFiles,
    time_index: int,
    block: Block,
    placement: Placement = WHOLE_MOSAIC,
    scenes: list[dict] | None = None,
) -> BlockWriteResult:
    """Write the block's region (``placement``: where a cube's source writes); with ``spec.bad_scenes ==
    "skip"`` bad scenes are left out and listed in the result instead of failing it. ``scenes``: as in
    ``block_pixels``."""
    started = time.perf_counter()
    # read into this thread's kept block buffer (gti_cache): the block is written before the next is read
    out = None if needs_scene_reads(spec) else open_gtis.block_buffer((len(spec.bands), *block.shape), spec.dtype)
    read = block_pixels(spec, grid, files, block, out, scenes)
    return write_pixels(spec, grid, store, time_index, block, read, placement, started)


def write_pixels(
    spec: MosaicSpec,
    grid: MosaicGrid,
    store: str,
    time_index: int,
    block: Block,
    read: BlockPixels,
    placement: Placement = WHOLE_MOSAIC,
    started: float | None = None,
) -> BlockWriteResult:
    """Write a block's pixels, read whole (``block_pixels``, or merged from z-order layers:
    ``layered_write``), into its region, and say what was written. ``started``: when the block's work
    began (``time.perf_counter``), for the result's seconds."""
    started = time.perf_counter() if started is None else started
    pixels = block.shape[0] * block.shape[1]
    if read.data is None:
        return BlockWriteResult(0, pixels, 0, 0, 0, time.perf_counter() - started)
    valid = spec.valid_mask(read.data)
    occupied = _occupied_chunks(valid, grid.chunk_shape)
    chunks = int(occupied.sum())
    write_region(store, grid, time_index, block, read.data, placement, occupied=occupied)
    return BlockWriteResult(
        scenes=read.scenes,
        pixels=pixels,
        valid_pixels=int(np.count_nonzero(valid)),  # measured 8x faster than a bool sum()
        chunks_written=chunks,
        bytes_uncompressed=int(read.data.nbytes),
        seconds=time.perf_counter() - started,
        skipped=read.skipped,
    )


def write_region(
    store: str,
    grid: MosaicGrid,
    time_index: int,
    block: Block,
    data: np.ndarray,
    placement: Placement = WHOLE_MOSAIC,
    occupied: np.ndarray | None = None,
) -> None:
    """Write a block's (band, y, x) pixels into its region of the store, with zarr directly: bands
    ``placement.band_offset`` on of the timed variable, or a static source's ``(y, x)`` variables.

    What ``xr.Dataset(...).to_zarr(region=...)`` wrote, byte for byte (same array, so the same codec,
    fill value and skipping of all-nodata chunks), without xarray's pass over the block: opening the
    group and its members, and CF mask encoding (a ``where`` over the whole block, a no-op for the
    integer mosaic) were 15 % of a partition. The block must cover whole chunks (edge chunks excepted):
    two writers sharing a chunk would overwrite each other's pixels, which zarr does not guard.
    ``occupied``: which of the block's chunks (rows x columns) hold a valid pixel (``_occupied_chunks``)."""
    cy, cx = grid.chunk_shape
    rows, cols = block.rows, block.cols
    aligned = rows.start % cy == 0 and cols.start % cx == 0
    aligned &= (rows.stop % cy == 0 or rows.stop == grid.shape[0]) and (
        cols.stop % cx == 0 or cols.stop == grid.shape[1]
    )
    if not aligned:
        raise ValueError(f"block {block.key} ({rows}, {cols}) is not aligned to the {grid.chunk_shape} chunks")
    options = {"mode": "r+", "storage_options": storage_options(store), "config": {"write_empty_chunks": False}}
    # write_empty_chunks False: all-nodata chunks stay absent (the audits rely on it)
    if placement.static:
        for variable, layer in zip(placement.static_variables, data):
            remove_block_partials(store, variable, grid, None, block)  # what a killed earlier write left
            zarr.open_array(store, path=variable, **options)[rows, cols] = layer
        return
    array = zarr.open_array(store, path=VARIABLE, **options)
    bands = range(placement.band_offset, placement.band_offset + data.shape[0])
    band_chunks = sorted({b // array.chunks[1] for b in bands})
    remove_block_partials(store, VARIABLE, grid, time_index, block, band_chunks)
    # The time step as a slice of one and the block with a time axis: with an integer index zarr drops the
    # axis, and then no chunk's selection is chunk-shaped, so zarr copied every chunk into a new
    # fill-valued buffer before encoding it (np.full + a copy per chunk: 0.35 CPU s of the quick benchmark)
    when = slice(time_index, time_index + 1)
    data = data[np.newaxis]
    if occupied is None or array.chunks[1] != array.shape[1]:
        array[when, bands.start : bands.stop, rows, cols] = data
        return
    # A chunk holds every band, so a chunk with a valid pixel is not all fill: occupied chunks skip
    # zarr's all-fill test of each chunk (np.array_equal with equal_nan: an isnan pass over uint16
    # too; measured 2 % of the large benchmark's CPU), written a rectangle of them at a time
    # (``_rectangles``); the empty ones keep it, so zarr leaves them absent (or deletes an old one).
    full = array.with_config({"write_empty_chunks": True})
    for (r0, r1), (c0, c1), held in _rectangles(occupied):
        y0, y1 = rows.start + r0 * cy, min(rows.start + r1 * cy, rows.stop)
        x0, x1 = cols.start + c0 * cx, min(cols.start + c1 * cx, cols.stop)
        pixels = data[:, :, y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start]
        (full if held else array)[when, bands.start : bands.stop, y0:y1, x0:x1] = pixels


def _runs(flags: np.ndarray) -> list[tuple[int, int, bool]]:
    """Consecutive positions alike: (first, past the last, flag)."""
    runs: list[tuple[int, int, bool]] = []
    for index, flag in enumerate(bool(f) for f in flags):
        if runs and runs[-1][2] == flag:
            runs[-1] = (runs[-1][0], index + 1, flag)
        else:
            runs.append((index, index + 1, flag))
    return runs


def _rectangles(occupied: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int], bool]]:
    """The block's chunks as few zarr writes: consecutive rows all occupied as one rectangle, every
    other row as its runs of occupied / empty chunks. ((rows), (columns), occupied), in chunks."""
    out = []
    for r0, r1, every in _runs(occupied.all(axis=1)):
        if every:
            out.append(((r0, r1), (0, occupied.shape[1]), True))
            continue
        for row in range(r0, r1):
            out += [((row, row + 1), (c0, c1), held) for c0, c1, held in _runs(occupied[row])]
    return out


def _occupied_chunks(valid: np.ndarray, chunk_shape: tuple[int, int]) -> np.ndarray:
    """(chunk rows, chunk columns) of the block: whether each chunk holds a valid pixel (all-nodata
    chunks are not stored by zarr)."""
    cy, cx = chunk_shape
    return np.array(
        [
            [bool(valid[y : y + cy, x : x + cx].any()) for x in range(0, valid.shape[1], cx)]
            for y in range(0, valid.shape[0], cy)
        ],
        dtype=bool,
    ).reshape(-(-valid.shape[0] // cy), -(-valid.shape[1] // cx))
