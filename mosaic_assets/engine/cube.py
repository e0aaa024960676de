"""A cube: several datasets (sources) on one grid, one time axis and one store.

Each source runs as a mosaic of its own (``CubeSpec.source_spec``: its scene tables, GTIs, reads and
composite), on the cube's one grid, and writes its own part of the cube's store (``store.Placement``).
The engine below this module never learns it is part of a cube: a source is just a mosaic spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grid import MosaicGrid
from .spec import CubeSpec, MosaicSpec
from .store import Placement, placements


@dataclass(frozen=True)
class CubeSource:
    """One source as the engine runs it: its mosaic spec and where it writes."""

    name: str
    spec: MosaicSpec
    placement: Placement

    @property
    def static(self) -> bool:
        return self.spec.static


@dataclass(frozen=True)
class Cube:
    spec: CubeSpec
    grid: MosaicGrid
    sources: tuple[CubeSource, ...]

    @classmethod
    def from_spec(cls, spec: CubeSpec) -> Cube:
        """The cube's sources on one grid. Its blocks are sized for the source with the most bytes per
        pixel, so no source's partition exceeds ``partition_bytes`` (each source writes only its bands)."""
        subs = spec.source_specs
        where = placements(spec)
        largest = max(subs, key=lambda s: s.chunk_bytes)
        grid = MosaicGrid.from_spec(largest)
        return cls(spec, grid, tuple(CubeSource(s.name, sub, where[s.name]) for s, sub in zip(spec.sources, subs)))

    def source(self, name: str) -> CubeSource:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"cube {self.spec.name} has no source {name!r} (it has {[s.name for s in self.sources]})")
