"""The target grid of a mosaic and its partition blocks, derived from the spec (no I/O).

A *block* is a rectangle of whole Zarr chunks sized so that one time step of it stays within the
spec's ``partition_bytes``; one (time step, block) pair is one unit of work (a Dagster partition).
The geometry itself (affine, footprints -> tiles) is odc-geo's ``GeoBox``/``GeoboxTiles``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from odc.geo import XY, AnchorEnum, geom, xy_
from odc.geo.geobox import GeoBox, GeoboxTiles

from .keys import BlockIndex
from .spec import MosaicSpec, SpecError

# What a mosaic may grow to over HORIZON_YEARS before it needs ``allow_huge: true``: a guard against a
# typo (a resolution of 0.1 for 10), not against continents. Europe monthly at 10 m for ten years is
# ~250 TiB, the land surface yearly at 10 m ~130 TiB (benchmarks/plan.py); 5 cm over a city is far beyond.
MAX_STORE_BYTES = 1024**5  # 1 PiB uncompressed
MAX_PARTITIONS_PER_ASSET = 100_000  # Dagster's practical ceiling per asset
HORIZON_YEARS = 10
STEPS_PER_YEAR = {"daily": 366, "monthly": 12, "quarterly": 4, "yearly": 1}


@dataclass(frozen=True)
class Block:
    """One partition block: its index and its pixel window on the grid (half-open slices)."""

    index: BlockIndex
    rows: slice
    cols: slice

    @property
    def key(self) -> str:
        return self.index.key

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start


@dataclass(frozen=True)
class MosaicGrid:
    """Geobox, chunking and block layout of one mosaic."""

    geobox: GeoBox
    chunk_shape: tuple[int, int]  # (y, x) pixels
    block_chunks: tuple[int, int]  # (y, x) chunks per block

    @classmethod
    def from_spec(cls, spec: MosaicSpec) -> MosaicGrid:
        area = geom.box(*spec.area.bbox, spec.area.crs)
        if spec.area.crs != spec.crs:
            area = area.to_crs(spec.crs, resolution=spec.resolution)
        if area.is_empty or not area.is_valid:
            raise ValueError(f"area: the bbox {list(spec.area.bbox)} has no valid footprint in {spec.crs}")
        geobox = GeoBox.from_bbox(area.boundingbox, spec.crs, resolution=spec.resolution, anchor=geobox_anchor(spec))
        chunk_shape = (min(spec.chunks.y, geobox.shape.y), min(spec.chunks.x, geobox.shape.x))
        return cls(geobox, chunk_shape, _block_chunks(spec, geobox, chunk_shape))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.geobox.shape.y), int(self.geobox.shape.x)

    @property
    def chunk_grid(self) -> tuple[int, int]:
        """Number of chunks along (y, x)."""
        return tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunk_shape))  # type: ignore[return-value]

    @property
    def block_shape(self) -> tuple[int, int]:
        """Pixels per full block along (y, x)."""
        return self.block_chunks[0] * self.chunk_shape[0], self.block_chunks[1] * self.chunk_shape[1]

    @cached_property
    def tiles(self) -> GeoboxTiles:
        return GeoboxTiles(self.geobox, self.block_shape)

    @property
    def block_grid(self) -> tuple[int, int]:
        """Number of blocks along (y, x)."""
        return int(self.tiles.shape.y), int(self.tiles.shape.x)

    def block(self, index: BlockIndex) -> Block:
        rows_total, cols_total = self.block_grid
        if not (0 <= index.row < rows_total and 0 <= index.col < cols_total):
            raise KeyError(f"block {index.key} is outside the {rows_total}x{cols_total} block grid")
        (by, bx), (h, w) = self.block_shape, self.shape
        rows = slice(index.row * by, min((index.row + 1) * by, h))
        cols = slice(index.col * bx, min((index.col + 1) * bx, w))
        return Block(index, rows, cols)

    def window_geobox(self, block: Block) -> GeoBox:
        """The geobox of a block's pixel window (a whole block's equals ``block_geobox``; a piece's is its own)."""
        return self.geobox[block.rows, block.cols]

    def chunks_in(self, block: Block) -> int:
        """Chunks the block covers (edge chunks count whole)."""
        cy, cx = self.chunk_shape
        return -(-(block.rows.stop - block.rows.start) // cy) * -(-(block.cols.stop - block.cols.start) // cx)

    def pieces(self, block: Block, max_chunks: int) -> list[Block]:
        """Chunk-aligned pieces of ``block`` of at most ``max_chunks`` chunks each, in row-major order, with
        the block's index: whole rows of chunks when one fits, else runs of chunks along a row. What a
        writer reads and writes at once, so a large partition needs neither one process nor its memory."""
        cy, cx = self.chunk_shape
        rows = range(block.rows.start, block.rows.stop, cy)
        cols = range(block.cols.start, block.cols.stop, cx)
        if len(rows) * len(cols) <= max_chunks:
            return [block]
        out = []
        if len(cols) <= max_chunks:
            step = max(1, max_chunks // len(cols)) * cy
            for top in range(block.rows.start, block.rows.stop, step):
                out.append(Block(block.index, slice(top, min(top + step, block.rows.stop)), block.cols))
            return out
        width = max_chunks * cx
        for top in rows:
            for left in range(block.cols.start, block.cols.stop, width):
                out.append(
                    Block(
                        block.index,
                        slice(top, min(top + cy, block.rows.stop)),
                        slice(left, min(left + width, block.cols.stop)),
                    )
                )
        return out

    def blocks(self) -> Iterator[Block]:
        rows_total, cols_total = self.block_grid
        for row in range(rows_total):
            for col in range(cols_total):
                yield self.block(BlockIndex(row, col))

    def block_keys(self) -> list[str]:
        return [b.key for b in self.blocks()]

    def block_geobox(self, index: BlockIndex) -> GeoBox:
        return self.tiles[index.row, index.col]

    def blocks_touching(self, footprint: geom.Geometry) -> set[BlockIndex]:
        """Blocks whose area a footprint (in any CRS) intersects."""
        if footprint.crs != self.geobox.crs:
            footprint = footprint.to_crs(self.geobox.crs, resolution=abs(self.geobox.resolution.x))
        return {BlockIndex(int(r), int(c)) for r, c in self.tiles.tiles(footprint)}

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL geotransform (x0, dx, 0, y0, 0, dy)."""
        a = self.geobox.affine
        return (a.c, a.a, a.b, a.f, a.d, a.e)

    def x_coords(self) -> np.ndarray:
        a = self.geobox.affine
        return a.c + a.a * (np.arange(self.shape[1]) + 0.5)

    def y_coords(self) -> np.ndarray:
        a = self.geobox.affine
        return a.f + a.e * (np.arange(self.shape[0]) + 0.5)


def geobox_anchor(spec: MosaicSpec) -> AnchorEnum | XY[float]:
    """The spec's ``anchor`` as odc-geo's ``GeoBox.from_bbox`` takes it. A fraction (fx, fy) puts pixel
    edges at fx * res and fy * res modulo res (odc-geo's ``snap_grid``; note that odc-geo's
    ``GeoBox.anchor``/``extract_anchor`` report x as 1 - fx for fractions other than 0 and 0.5).
    ``native`` must have been resolved into a fraction first (``engine.anchor.resolve_native``)."""
    if spec.anchor == "edge":
        return AnchorEnum.EDGE
    if spec.anchor == "center":
        return AnchorEnum.CENTER
    if spec.anchor == "native":
        raise SpecError(
            f"mosaic {spec.name}: anchor: native has not been resolved into a pixel fraction; "
            "engine.anchor.resolve_native(spec, ...) must run before the grid is derived"
        )
    fx, fy = spec.anchor
    return xy_(fx, fy)


@dataclass(frozen=True)
class SizeEstimate:
    """How big a mosaic gets over ``years`` (the time axis has no end, so a horizon is assumed)."""

    shape: tuple[int, int]
    blocks_per_step: int
    steps: int
    bytes_per_step: int

    @property
    def partitions(self) -> int:
        return self.blocks_per_step * self.steps

    @property
    def store_bytes(self) -> int:
        return self.bytes_per_step * self.steps


def size_estimate(spec: MosaicSpec, grid: MosaicGrid, years: int = HORIZON_YEARS) -> SizeEstimate:
    """Computed from the grid's dimensions only (no block is enumerated, so an absurd grid costs nothing)."""
    rows, cols = grid.block_grid
    per_step = grid.shape[0] * grid.shape[1] * len(spec.band_names) * np.dtype(spec.dtype).itemsize
    return SizeEstimate(grid.shape, rows * cols, STEPS_PER_YEAR[spec.time.step] * years, per_step)


def check_size(spec: MosaicSpec, grid: MosaicGrid) -> SizeEstimate:
    """Refuse (SpecError with the estimate) a mosaic beyond 10 TiB or 100k chunk partitions over ten
    years, unless the spec says ``allow_huge: true``. Called before any partition is defined."""
    est = size_estimate(spec, grid)
    problems = []
    if est.store_bytes > MAX_STORE_BYTES:
        problems.append(
            f"{est.store_bytes / 1024**4:,.1f} TiB uncompressed (limit {MAX_STORE_BYTES / 1024**4:.0f} TiB)"
        )
    if est.partitions > MAX_PARTITIONS_PER_ASSET:
        problems.append(
            f"{est.partitions:,} chunk partitions ({est.blocks_per_step:,} blocks x {est.steps:,} {spec.time.step} "
            f"steps; Dagster holds ~{MAX_PARTITIONS_PER_ASSET:,} per asset)"
        )
    if problems and not spec.allow_huge:
        raise SpecError(
            f"mosaic {spec.name}: over {HORIZON_YEARS} years the grid of {est.shape[0]:,} x {est.shape[1]:,} px "
            f"({est.bytes_per_step / 1024**3:,.1f} GiB per time step) would reach {' and '.join(problems)}. "
            "Coarsen the resolution, split the area into several mosaics, raise partition_bytes or use a "
            "coarser time step; or set allow_huge: true if this is intended."
        )
    return est


def _block_chunks(spec: MosaicSpec, geobox: GeoBox, chunk_shape: tuple[int, int]) -> tuple[int, int]:
    """As many whole chunks per block as ``partition_bytes`` allows, as square as the grid permits."""
    itemsize = np.dtype(spec.dtype).itemsize
    chunk_bytes = len(spec.band_names) * chunk_shape[0] * chunk_shape[1] * itemsize
    budget = max(1, spec.partition_bytes // chunk_bytes)
    rows_avail = math.ceil(geobox.shape.y / chunk_shape[0])
    cols_avail = math.ceil(geobox.shape.x / chunk_shape[1])
    bx = min(max(1, math.isqrt(budget)), cols_avail)
    by = min(max(1, budget // bx), rows_avail)
    bx = min(max(1, budget // by), cols_avail)
    return by, bx
