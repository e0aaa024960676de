"""Which of a mosaic's bands are read together: one GTI per (asset, resampling).

Why not one GTI holding every band: a scene's assets may each have their own grid (Sentinel-2's 10,
20 and 60 m bands, Landsat's 15 m panchromatic band), and a GTI tile is one raster. Putting a 20 m
asset into a 10 m per-scene VRT would resample it twice (into the VRT's grid, then onto the mosaic
grid), so bilinear or average would no longer equal one warp. With one GTI per asset every band is
warped exactly once, from its own grid, with its own resampling. Bands of one asset (the demo's
4-band COGs) stay one read. The mask band (``spec.mask``) is one more group,
read ``nearest``. The grouping depends on the spec only, so every time step, writer and
index agrees on it without reading anything.

Stacks (``stacks``) are the one exception, for speed only: groups of one resampling whose assets lie on
one grid in every scene of a time step (Sentinel-2's 10 m bands, each its own COG; its 20 m bands) are
also indexed as one per-scene VRT, so a scene is opened and set up once and a reprojected scene warped
once for all of them instead of once per band. Nothing is resampled twice, since the assets share the
grid the VRT is on. Which stacks a time step has depends on its scenes, so the index decides and
names them in its columns; a writer uses those (``read_plan``), and an index from before stacks is
read group by group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .spec import Band, MosaicSpec


@dataclass(frozen=True)
class ReadGroup:
    """Bands read through one GTI: from one asset, with one resampling (or a stack of such groups).

    ``positions``: where each band goes in the mosaic's band axis (the spec's order)."""

    number: int
    asset: str
    resampling: str
    bands: tuple[Band, ...]
    positions: tuple[int, ...]
    members: tuple[int, ...] = ()  # a stack (``stacks``): the numbers of the read groups it reads at once

    @property
    def name(self) -> str:
        """Names its XML (``GtiFiles.group_xml``) and index column: ``g<k>``, a stack ``s<k>_<m>...``."""
        return "s" + "_".join(map(str, self.members)) if self.members else f"g{self.number}"

    @property
    def location_field(self) -> str:
        """The index column holding this group's per-scene dataset names (group 0 keeps the old name)."""
        if self.members:
            return STACK_FIELD_PREFIX + self.name
        return "location" if self.number == 0 else f"location_{self.number}"

    @property
    def assets(self) -> tuple[str, ...]:
        """The assets its bands come from, in band order, each once."""
        return tuple(dict.fromkeys(b.asset for b in self.bands))


STACK_FIELD_PREFIX = "stack_location_"  # a stack's index column (``stacks``)


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


def stacks(spec: MosaicSpec, scenes_assets: Iterable[dict]) -> tuple[ReadGroup, ...]:
    """The stacks of a time step: read groups of one resampling whose assets lie on one grid (CRS, shape,
    transform) in every one of its scenes (``scenes_assets``: each scene's scene-table asset entries),
    clustered so, in read-group order; a cluster of one is no stack. Decided where the index is built
    (``gti.build_gti``), which names each in a column (``stacks_in``). None when the spec reads
    overviews: a VRT of several files has overviews only where all its files' match, so a stacked read
    could pick another level than each asset's own read would."""
    scenes = list(scenes_assets)
    if spec.use_overviews or not scenes:
        return ()
    clusters: dict[tuple, list[int]] = {}
    for group in read_groups(spec):
        grids = tuple(_grid(assets.get(group.asset)) for assets in scenes)
        if None not in grids:
            clusters.setdefault((group.resampling, grids), []).append(group.number)
    return tuple(stack_of(spec, tuple(members)) for members in clusters.values() if len(members) > 1)


def _grid(asset: dict | None) -> tuple | None:
    if asset is None or "href" not in asset:  # absent, or the item lacks it (catalog.MISSING)
        return None
    return str(asset["crs"]), tuple(asset["shape"]), tuple(asset["transform"])


def stack_of(spec: MosaicSpec, members: tuple[int, ...]) -> ReadGroup:
    """The stack of these read groups: their bands in the spec's order."""
    groups = [read_groups(spec)[m] for m in members]
    pairs = sorted((p, b) for g in groups for p, b in zip(g.positions, g.bands))
    return ReadGroup(
        -1,
        "+".join(g.asset for g in groups),
        groups[0].resampling,
        tuple(b for _, b in pairs),
        tuple(p for p, _ in pairs),
        members=members,
    )


def stacks_in(spec: MosaicSpec, fields: Iterable[str]) -> tuple[ReadGroup, ...]:
    """The stacks an index's columns name (an index from before stacks: none). A column this spec cannot
    hold (another spec's index) is ignored, so the read falls back to its groups."""
    found = []
    count = len(read_groups(spec))
    for field in sorted(fields):
        if not field.startswith(STACK_FIELD_PREFIX + "s"):
            continue
        try:
            members = tuple(int(m) for m in field.removeprefix(STACK_FIELD_PREFIX + "s").split("_"))
        except ValueError:
            continue
        if len(members) > 1 and all(0 <= m < count for m in members):
            found.append(stack_of(spec, members))
    return tuple(found)


def shares_grid(stack: ReadGroup, assets: dict[str, dict]) -> bool:
    """Whether a scene's assets of the stack lie on one grid, all present: only then may one VRT hold
    them without resampling any."""
    grids = {_grid(assets.get(name)) for name in stack.assets}
    return None not in grids and len(grids) == 1


def read_plan(spec: MosaicSpec, scenes: list[dict] | None) -> tuple[ReadGroup, ...]:
    """The groups to read for these scenes (``writer.block_scenes`` records), covering every band once:
    each stack whose index column is filled for every one of them in place of its members, the other
    read groups as they are. Unknown scenes (``None``) or none: the read groups."""
    plan = list(read_groups(spec))
    if not scenes:
        return tuple(plan)
    for stack in stacks_in(spec, scenes[0]):
        if all(scene.get(stack.location_field) for scene in scenes):
            plan = [g for g in plan if g.number not in stack.members]
            plan.append(stack)
    return tuple(sorted(plan, key=lambda g: g.positions[0]))


def index_groups(spec: MosaicSpec) -> tuple[ReadGroup, ...]:
    """Every group the time step's index holds a location column and an XML for, besides its stacks."""
    mask = mask_group(spec)
    return read_groups(spec) + ((mask,) if mask else ())
