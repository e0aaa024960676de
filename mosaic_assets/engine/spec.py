"""The mosaic spec: one declarative YAML document per mosaic, validated once and then immutable.

Every rule lives here so that a bad value fails at load time with the key that holds it
(``mosaics[0].resolution: must be > 0``) before anything is written anywhere.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pyproj import CRS
from pyproj.exceptions import CRSError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_BYTE_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


class SpecError(ValueError):
    """A mosaic spec is invalid; the message names the offending key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_crs(value: str) -> str:
    try:
        CRS.from_user_input(value)
    except CRSError as exc:
        raise ValueError(f"unknown CRS {value!r}") from exc
    return value


RESAMPLING = Literal["nearest", "bilinear", "cubic", "cubicspline", "lanczos", "average", "mode"]
MODIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class StacSource(_Frozen):
    """Where scenes come from, and how their hrefs are reached."""

    url: str
    collections: Annotated[tuple[str, ...], Field(min_length=1)]
    query_limit: Annotated[int, Field(gt=0, le=10_000)] = 1000
    modifier: Annotated[str, Field(pattern=MODIFIER_PATTERN)] | None = Field(
        default=None,
        description="'package.module:function' applied to every item (a STAC item dict, changed in place or "
        "returned), pystac-client's ``modifier`` convention: e.g. 'planetary_computer:sign_inplace'. Applied "
        "when the catalog is read and again in each writer just before it reads, so short-lived tokens never "
        "expire under a late backfill; signed hrefs are never stored.",
    )
    probe_missing_projection: bool = Field(
        default=False,
        description="An asset whose projection metadata (proj:code/epsg/wkt2/projjson, proj:shape, proj:transform) "
        "is missing on the asset and the item: read its header once in the catalog step and record it. "
        "Default False: such an item is a catalog error naming item and asset.",
    )
    aws_no_sign_request: bool = Field(default=False, description="Read s3:// scenes unsigned (public buckets).")
    aws_request_payer: bool = Field(default=False, description="Read s3:// scenes from requester-pays buckets.")
    allowed_href_prefixes: tuple[str, ...] | None = Field(
        default=None,
        description="Where scene hrefs may point (absolute paths like '/data/scenes/' or URL prefixes like "
        "'https://bucket.s3.amazonaws.com/'). Default: any http(s)/s3/gs/az URL on a public host; local paths "
        "and private/loopback hosts only when the catalog itself is on loopback. Link-local and cloud "
        "metadata addresses are always refused.",
    )

    @field_validator("allowed_href_prefixes")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for prefix in value or ():
            if not re.match(r"^(/|file:///|https?://[^/]+/|(s3|gs|az)://[^/]+/)", prefix):
                raise ValueError(
                    f"{prefix!r} must be an absolute path or a URL prefix with a host and a '/', "
                    "e.g. '/data/scenes/' or 'https://host/scenes/'"
                )
            if ".." in prefix.split("/"):
                raise ValueError(f"{prefix!r} must not contain '..'")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


class Band(_Frozen):
    """One output band: taken from band ``index`` (1-based) of the STAC asset ``asset``, read from the
    asset's own grid (its resolution and shape) onto the mosaic grid.

    ``resampling`` overrides the mosaic's for this band (a class band stays ``nearest``); ``nodata``,
    ``scale`` and ``offset`` override what the items declare (``raster:bands`` / ``bands``)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    asset: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    index: Annotated[int, Field(ge=1)] = 1
    resampling: RESAMPLING | None = None
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None


class Area(_Frozen):
    """The area of interest, in its own CRS."""

    bbox: tuple[float, float, float, float]
    crs: str = "EPSG:4326"

    _crs = field_validator("crs")(classmethod(lambda cls, v: _check_crs(v)))

    @field_validator("bbox")
    @classmethod
    def _ordered(cls, value: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        minx, miny, maxx, maxy = value
        if not all(np.isfinite(value)):
            raise ValueError("must be finite numbers")
        if minx >= maxx or miny >= maxy:
            raise ValueError(f"must be [minx, miny, maxx, maxy] with min < max, got {list(value)}")
        return value


class TimeGrid(_Frozen):
    """How acquisition dates bucket into time steps: step ``k`` starts at ``start + k * step``
    (``quarterly``: three months, seasons when the start is e.g. December 1st)."""

    start: date
    step: Literal["daily", "monthly", "quarterly", "yearly"] = "daily"

    @model_validator(mode="after")
    def _aligned_start(self) -> TimeGrid:
        if self.step in ("monthly", "quarterly") and self.start.day != 1:
            raise ValueError(f"start: a {self.step} grid starts on a month's first day, got {self.start}")
        if self.step == "yearly" and (self.start.month, self.start.day) != (1, 1):
            raise ValueError(f"start: a yearly grid starts on January 1st, got {self.start}")
        return self


class Mask(_Frozen):
    """Which pixels of a scene are usable, from a class or QA band of each item (at its own resolution,
    read ``nearest``). Exactly one rule: ``exclude`` (classes: Sentinel-2 SCL), ``exclude_bits`` (bit
    flags: Landsat C2 QA_PIXEL) or ``valid`` (clear values: GLAD ARD's QA). ``dilate_pixels`` grows the
    excluded area by that many output pixels (a square), since cloud edges are the usual leak."""

    asset: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    index: Annotated[int, Field(ge=1)] = 1
    exclude: tuple[int, ...] | None = None
    exclude_bits: tuple[Annotated[int, Field(ge=0, le=63)], ...] | None = None
    valid: tuple[int, ...] | None = None
    dilate_pixels: Annotated[int, Field(ge=0, le=64)] = 0

    @model_validator(mode="after")
    def _one_rule(self) -> Mask:
        rules = [k for k in ("exclude", "exclude_bits", "valid") if getattr(self, k) is not None]
        if len(rules) != 1:
            raise ValueError(f"give exactly one of exclude, exclude_bits or valid, got {rules or 'none'}")
        values = self.exclude or self.valid or ()
        if any(v < 0 for v in values):
            raise ValueError(f"class values must be >= 0, got {list(values)}")
        return self


class Composite(_Frozen):
    """How a time step's scenes become one pixel: ``first_valid`` is the best-on-top mosaic where a masked
    pixel falls through to the next scene; ``median`` / ``mean`` / ``min`` / ``max`` reduce each band over
    the step's usable observations (integer output rounded half to even). ``count_band`` adds a band
    ``valid_count``: usable observations per pixel."""

    method: Literal["first_valid", "median", "mean", "min", "max"] = "first_valid"
    count_band: bool = False
    count_band_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = Field(
        default="valid_count", description="The count band's name (in a cube: ``<source>_valid_count`` unless set)."
    )


class BestOnTop(_Frozen):
    """Which scene wins where scenes overlap: sorted by ``property``; the best one is drawn last."""

    property: str = "eo:cloud_cover"
    best: Literal["lowest", "highest"] = "lowest"


class Codec(_Frozen):
    """Zarr compressor. Default blosc-lz4 + byte shuffle: measured ~9x faster to encode than zstd-3
    on uint16 imagery at a better ratio (see README, 'Codec')."""

    name: Literal["blosc", "zstd", "none"] = "blosc"
    cname: Literal["lz4", "lz4hc", "zstd", "zlib", "blosclz"] = "lz4"
    clevel: Annotated[int, Field(ge=0, le=9)] = 5
    shuffle: Literal["shuffle", "bitshuffle", "noshuffle"] = "shuffle"


class Chunks(_Frozen):
    y: Annotated[int, Field(gt=0)] = 1024
    x: Annotated[int, Field(gt=0)] = 1024


class Operations(_Frozen):
    """How the mosaic keeps itself current: sensor cadence, repair schedule, batching, freshness."""

    sensor_interval_seconds: Annotated[int, Field(ge=5)] = 60
    sensor_max_items_per_tick: Annotated[int, Field(ge=1)] = 10_000
    backfill_cron: str = "0 * * * *"
    partitions_per_run: Annotated[int, Field(ge=1, le=1000)] = 8
    freshness_fail_hours: Annotated[float, Field(gt=0)] = 48
    freshness_warn_hours: Annotated[float, Field(gt=0)] | None = 24

    @model_validator(mode="after")
    def _warn_before_fail(self) -> Operations:
        if self.freshness_warn_hours is not None and self.freshness_warn_hours >= self.freshness_fail_hours:
            raise ValueError("freshness_warn_hours must be below freshness_fail_hours")
        return self


def parse_bytes(value: int | str) -> int:
    """'256MiB' -> 268435456; plain integers pass through."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(value), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"not a byte size: {value!r} (use e.g. 268435456 or '256MiB')")
    number, unit = match.groups()
    return int(float(number) * _BYTE_UNITS[(unit or "").upper()])


class _GridFields(_Frozen):
    """What a mosaic and a cube share: the grid, the time axis, the store and how it is kept current."""

    name: str
    area: Area
    crs: str
    resolution: float
    time: TimeGrid
    dtype: Literal["uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"] = "uint16"
    nodata: float = 0
    resampling: RESAMPLING = "nearest"
    values: Literal["raw", "physical"] = Field(
        default="raw",
        description="'raw': the files' numbers, each band's scale/offset recorded in the store (CF). "
        "'physical': raw x scale + offset as float32 (default dtype then float32, nodata NaN).",
    )
    anchor: Literal["edge", "center", "native"] | tuple[float, float] = Field(
        default="edge",
        description="Where pixels snap, odc-geo's/odc-stac's ``anchor``: 'edge' (pixel edges on multiples of the "
        "resolution), 'center' (pixel centres there: Landsat's grid), [x, y] (pixel edges at x * resolution "
        "and y * resolution modulo the resolution, fractions in [0, 1): [0.5, 0.5] is 'center'), or 'native' "
        "(the scenes' own pixel grid: learnt once from one item and cached, see engine.anchor).",
    )
    use_overviews: bool = Field(
        default=False,
        description="Read COG overviews when the grid is coarser than the scenes (fast, not exact). "
        "Default False: always read full resolution, so pixels match a full-resolution warp.",
    )
    bad_scenes: Literal["fail", "skip"] = Field(
        default="fail",
        description="A scene that cannot be read or contradicts its STAC metadata: 'fail' fails the partitions "
        "it touches (naming item and href); 'skip' writes them without it, lists it in the partition's "
        "metadata and fails the WARN check no_skipped_scenes. Transient errors are retried either way.",
    )
    chunks: Chunks = Chunks()
    partition_bytes: int = 256 * 1024**2
    codec: Codec = Codec()
    operations: Operations = Operations()
    store: str | None = Field(default=None, description="Zarr store path or URL; default <store_root>/<name>.zarr")
    allow_huge: bool = Field(
        default=False,
        description="Build the assets even when the size estimate (grid.check_size) exceeds 10 TiB or 100k "
        "chunk partitions over ten years: only for a mosaic that is meant to be that big.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                "must be lower-case letters, digits and '_', starting with a letter (it names Dagster assets)"
            )
        return value

    _crs = field_validator("crs")(classmethod(lambda cls, v: _check_crs(v)))

    @field_validator("resolution")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"must be > 0, got {value}")
        return value

    @field_validator("anchor", mode="before")
    @classmethod
    def _anchor(cls, value: object) -> object:
        if isinstance(value, str):
            if value not in ("edge", "center", "native"):
                raise ValueError(f"must be 'edge', 'center', 'native' or [x, y] pixel fractions, got {value!r}")
            return value
        fractions = list(value) if isinstance(value, (list, tuple)) else None
        if (
            fractions is None
            or len(fractions) != 2
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions)
            or not all(0 <= f < 1 for f in fractions)  # NaN fails too
        ):
            raise ValueError(
                f"must be 'edge', 'center', 'native' or [x, y] pixel fractions with 0 <= x, y < 1, got {value!r}"
            )
        return tuple(float(f) for f in fractions)

    @field_validator("partition_bytes", mode="before")
    @classmethod
    def _bytes(cls, value: int | str) -> int:
        return parse_bytes(value)

    @model_validator(mode="before")
    @classmethod
    def _physical_defaults(cls, raw: object) -> object:
        """``values: physical`` means float32 with NaN as nodata unless the spec says otherwise."""
        if isinstance(raw, dict) and raw.get("values") == "physical":
            raw = {"dtype": "float32", "nodata": float("nan"), **raw}
        return raw


class MosaicSpec(_GridFields):
    """Everything that defines one mosaic (one dataset, or one source of a cube); the grid and
    partitions derive from it."""

    stac: StacSource
    bands: Annotated[tuple[Band, ...], Field(min_length=1)]
    best_on_top: BestOnTop = BestOnTop()
    mask: Mask | None = None
    composite: Composite = Composite()
    static: bool = Field(
        default=False,
        description="A layer without time axis (a cube's static source: elevation, land cover): every item in "
        "the area, whatever its date, goes into one layer, keyed ``static`` (keys.STATIC_STEP).",
    )
    cube: str | None = Field(
        default=None,
        description="The cube this mosaic is a source of (set by CubeSpec, never by hand): its store is the cube's.",
    )

    @field_validator("bands")
    @classmethod
    def _unique_bands(cls, value: tuple[Band, ...]) -> tuple[Band, ...]:
        names = [b.name for b in value]
        if len(set(names)) != len(names):
            raise ValueError(f"band names must be unique, got {names}")
        return value

    @model_validator(mode="after")
    def _composite(self) -> MosaicSpec:
        reducing = self.composite.method != "first_valid"
        if self.mask is not None and reducing:
            classes = [b.name for b in self.bands if (b.asset, b.index) == (self.mask.asset, self.mask.index)]
            if classes:
                raise ValueError(
                    f"composite.method: {self.composite.method} over the mask's class band {classes} is meaningless; "
                    "leave that band out or use first_valid"
                )
        count = self.composite.count_band_name
        if self.composite.count_band and count in [b.name for b in self.bands]:
            raise ValueError(f"composite.count_band: a band is already named {count!r}")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> MosaicSpec:
        if self.values == "physical" and np.dtype(self.dtype).kind != "f":
            raise ValueError(f"dtype: values: physical needs float32 or float64, got {self.dtype}")
        if np.isnan(self.nodata) and np.dtype(self.dtype).kind != "f":
            raise ValueError(f"nodata: NaN needs a float dtype, got {self.dtype}")
        info = np.iinfo(self.dtype) if np.dtype(self.dtype).kind in "ui" else np.finfo(self.dtype)
        if not np.isnan(self.nodata) and not (info.min <= self.nodata <= info.max):
            raise ValueError(f"nodata: {self.nodata} does not fit dtype {self.dtype}")
        if self.partition_bytes < self.chunk_bytes:
            raise ValueError(
                f"partition_bytes: {self.partition_bytes} is smaller than one chunk "
                f"({self.chunk_bytes} bytes = {len(self.bands)} bands x {self.chunks.y} x {self.chunks.x} x "
                f"{np.dtype(self.dtype).itemsize} B)"
            )
        return self

    @property
    def nodata_value(self) -> np.generic:
        """``nodata`` as a scalar of the mosaic's dtype. Compare pixels with this, not with ``nodata``
        (a Python float): numpy promotes a uint16 block compared with a float to float64, a temporary
        4x the block's size (measured, 16 unwarped 32 MiB partitions in one process: 1.74-1.82 s ->
        1.62-1.65 s)."""
        return np.array(self.nodata, dtype=self.dtype)[()]

    def valid_mask(self, data: np.ndarray) -> np.ndarray:
        """(y, x) pixels where any band of a (band, y, x) block holds data: the one test of "valid",
        NaN nodata included (``data != nan`` is True everywhere). A ``valid_count`` band is not data."""
        data = data[: len(self.bands)]
        if data.dtype.kind in "ui" and self.nodata == 0 and len(data) > 1:
            # nodata 0 (reflectance): a pixel is valid where the bands OR'ed hold a bit, one pass per band
            # in the block's own dtype and one compare (2.7 against 6.0 ms for a 4-band 2048^2 block)
            held = np.bitwise_or(data[0], data[1])
            for band in data[2:]:
                np.bitwise_or(held, band, out=held)
            return held != 0
        # band by band into one (y, x) mask: a (band, y, x) temporary would be fresh memory of a
        # block's size at every block (zeroed by the kernel page by page)
        valid = np.zeros(data.shape[1:], dtype=bool)
        scratch = np.empty(data.shape[1:], dtype=bool)
        for band in data:
            if np.isnan(self.nodata):
                np.isnan(band, out=scratch)
                np.logical_not(scratch, out=scratch)
            else:
                np.not_equal(band, self.nodata_value, out=scratch)
            valid |= scratch
        return valid

    def band_resampling(self, band: Band) -> str:
        return band.resampling or self.resampling

    @property
    def band_names(self) -> tuple[str, ...]:
        """The store's band axis: the spec's bands, then ``valid_count`` when ``composite.count_band``."""
        count = (self.composite.count_band_name,) if self.composite.count_band else ()
        return tuple(b.name for b in self.bands) + count

    @property
    def chunk_bytes(self) -> int:
        """Uncompressed bytes of one chunk: all bands of one time step."""
        return len(self.band_names) * self.chunks.y * self.chunks.x * np.dtype(self.dtype).itemsize


# Names a cube's store already uses: a static band (a variable of its own) cannot take them.
RESERVED_VARIABLES = frozenset({"mosaic", "time", "band", "x", "y", "spatial_ref", "scale", "offset", "source"})
DTYPE = Literal["uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"]


class Source(_Frozen):
    """One dataset of a cube: its own collections, bands, resampling, mask, composite and best-on-top rule,
    hence its own scene tables and GTIs per time step (the write-up's one GTI per dataset and time).

    A time-varying source's bands join the cube's ``mosaic`` variable, so they share the cube's
    ``dtype`` / ``nodata`` / ``values``; a ``static`` source (elevation, land cover) has no time axis and
    each of its bands is a variable of its own, so it may set its own."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,23}$")]
    stac: StacSource
    bands: Annotated[tuple[Band, ...], Field(min_length=1)]
    resampling: RESAMPLING | None = None
    best_on_top: BestOnTop = BestOnTop()
    mask: Mask | None = None
    composite: Composite = Composite()
    bad_scenes: Literal["fail", "skip"] | None = None
    static: bool = False
    dtype: DTYPE | None = None
    nodata: float | None = None
    values: Literal["raw", "physical"] | None = None

    @model_validator(mode="after")
    def _static_only(self) -> Source:
        own = [k for k in ("dtype", "nodata", "values") if getattr(self, k) is not None]
        if own and not self.static:
            raise ValueError(
                f"{', '.join(own)}: only a static source sets its own; a time-varying source's bands share the "
                "cube's one variable, so they take the cube's dtype, nodata and values"
            )
        if self.static and (self.composite.method != "first_valid" or self.composite.count_band):
            raise ValueError("composite: a static source has no time steps to reduce; use first_valid, no count_band")
        return self


class CubeSpec(_GridFields):
    """Several datasets on one grid and one time axis (FlyteMosaic's ``xr.concat(feature_dsets, dim="band")``).

    Each source is run as a mosaic of its own (``source_specs``: scene tables, GTIs, reads, composites),
    named ``<cube>_<source>``, all writing into the cube's one store: the time-varying sources' bands
    concatenated along ``band`` in source order, each static band a ``(y, x)`` variable."""

    sources: Annotated[tuple[Source, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _sources(self) -> CubeSpec:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources[].name: names must be unique, got {names}")
        if all(s.static for s in self.sources):
            raise ValueError(
                "sources: at least one source must vary in time (a cube of static layers only has no time axis)"
            )
        if self.anchor == "native":
            raise ValueError("anchor: 'native' follows one dataset's grid; a cube names it: 'edge', 'center' or [x, y]")
        owner: dict[str, str] = {}
        for i, source in enumerate(self.sources):
            try:
                spec = self.source_spec(source)
            except ValidationError as exc:
                raise ValueError(_format_errors(exc, f"sources[{i}]")) from None
            for band in spec.band_names:
                if band in owner:
                    raise ValueError(
                        f"sources[{i}].bands: band {band!r} of source {source.name!r} is also a band of source "
                        f"{owner[band]!r}; band names must be unique across a cube's sources"
                    )
                if source.static and band in RESERVED_VARIABLES:
                    raise ValueError(
                        f"sources[{i}].bands: static band {band!r} would be a store variable, and that name is "
                        f"taken ({sorted(RESERVED_VARIABLES)})"
                    )
                owner[band] = source.name
        return self

    def source_spec(self, source: Source) -> MosaicSpec:
        """The mosaic spec the engine runs for ``source``: the cube's grid, time and store fields with the
        source's own data fields."""
        raw = self.model_dump(include=set(_GridFields.model_fields), exclude={"name"})
        raw.update(name=f"{self.name}_{source.name}", cube=self.name, static=source.static)
        raw.update(source.model_dump(include={"stac", "bands", "best_on_top", "mask"}))
        composite = source.composite.model_dump()
        if "count_band_name" not in source.composite.model_fields_set:
            composite["count_band_name"] = f"{source.name}_valid_count"
        raw["composite"] = composite
        raw["resampling"] = source.resampling or self.resampling
        for key in ("bad_scenes", "dtype", "nodata", "values"):
            if getattr(source, key) is not None:
                raw[key] = getattr(source, key)
        if source.static and source.values == "physical" and source.dtype is None:
            raw.update(dtype="float32", nodata=float("nan") if source.nodata is None else source.nodata)
        return MosaicSpec.model_validate(raw)

    @property
    def source_specs(self) -> tuple[MosaicSpec, ...]:
        return tuple(self.source_spec(s) for s in self.sources)


def _format_errors(exc: ValidationError, prefix: str) -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc.lstrip('.')}: {msg}")
    return "; ".join(lines)


def parse_specs(document: dict, source: str = "<spec>") -> tuple[MosaicSpec | CubeSpec, ...]:
    """Validate a parsed YAML document holding ``mosaics: [...]``: each entry a mosaic of one dataset, or a
    cube (an entry with ``sources:``)."""
    if not isinstance(document, dict) or not isinstance(document.get("mosaics"), list) or not document["mosaics"]:
        raise SpecError(f"{source}: mosaics: must be a non-empty list of mosaic specs")
    specs: list[MosaicSpec | CubeSpec] = []
    for i, raw in enumerate(document["mosaics"]):
        for key in ("static", "cube"):
            if isinstance(raw, dict) and raw.get(key):  # False / None: what a dumped spec carries
                raise SpecError(f"{source}: mosaics[{i}].{key}: set by a cube on its sources, not by hand")
        model = CubeSpec if isinstance(raw, dict) and "sources" in raw else MosaicSpec
        try:
            specs.append(model.model_validate(raw))
        except ValidationError as exc:
            raise SpecError(f"{source}: {_format_errors(exc, f'mosaics[{i}]')}") from None
    names = [s.name for s in specs]
    names += [f"{c.name}_{s.name}" for c in specs if isinstance(c, CubeSpec) for s in c.sources]
    if len(set(names)) != len(names):
        raise SpecError(
            f"{source}: mosaics[].name: names must be unique (a cube's sources take '<cube>_<source>'), got {names}"
        )
    return tuple(specs)


def load_specs(path: str | Path) -> tuple[MosaicSpec | CubeSpec, ...]:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_specs(document, source=str(path))
