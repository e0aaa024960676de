"""Which of a mosaic's bands are read together: one GTI per (asset, resampling).

Why not one GTI holding every band: a scene's assets may each have their own grid (Sentinel-2's 10,
20 and 60 m bands, Landsat's 15 m panchromatic band), and a GTI tile is one raster. Putting a 20 m
asset into a 10 m per-scene VRT would resample it twice (into the VRT's grid, then onto the mosaic
grid), so bilinear or average would no longer equal one warp. With one GTI per asset every band is
warped exactly once, from its own grid, with its own resampling. Bands of one asset (the demo's
4-band COGs) stay one read. The mask band (``spec.mask``) is one more group,
read ``nearest``. The grouping depends on the spec only, so every time step, writer and
index agrees on it without reading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import Band, MosaicSpec


@dataclass(frozen=True)
class ReadGroup:
    """Bands read through one GTI: from one asset, with one resampling.

    ``positions``: where each band goes in the mosaic's band axis (the spec's order)."""

    number: int
    asset: str
    resampling: str
    bands: tuple[Band, ...]
    positions: tuple[int, ...]

    @property
    def location_field(self) -> str:
        """The index column holding this group's per-scene dataset names (group 0 keeps the old name)."""
        return "location" if self.number == 0 else f"location_{self.number}"


def read_groups(spec: MosaicSpec) -> tuple[ReadGroup, ...]:
    """The spec's bands grouped by (asset, resampling), in order of first appearance."""
    members: dict[tuple[str, str], list[int]] = {}
    for position, band in enumerate(spec.bands):
        members.setdefault((band.asset, spec.band_resampling(band)), []).append(position)
    return tuple(
        ReadGroup(n, asset, resampling, tuple(spec.bands[p] for p in positions), tuple(positions))
        for n, ((asset, resampling), positions) in enumerate(members.items())
    )


def mask_group(spec: MosaicSpec) -> ReadGroup | None:
    """The mask band (``spec.mask``) as one more read group: its asset, ``nearest``, raw values, after
    the band groups (its own location column and XML over the same index)."""
    if spec.mask is None:
        return None
    band = Band(name="mask", asset=spec.mask.asset, index=spec.mask.index)
    return ReadGroup(len(read_groups(spec)), spec.mask.asset, "nearest", (band,), ())


def index_groups(spec: MosaicSpec) -> tuple[ReadGroup, ...]:
    """Every group the time step's index holds a location column and an XML for."""
    mask = mask_group(spec)
    return read_groups(spec) + ((mask,) if mask else ())
