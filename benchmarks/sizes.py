"""The named benchmark sizes: how many scenes, how large, over how many dates, repeated how often.

Why these numbers: ``large`` is the design prototype's recipe (72 uint16 4-band 2048² COGs in two
UTM zones, two time steps, one ~11500² grid), so its figures compare with the ones the targets came
from; ``quick`` is the same recipe on a grid a quarter the area, so it runs in a few minutes on
2 cores and, next to ``large``, shows what grows with the mosaic and what must not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from mosaic_assets.demo.scenes import SceneSetConfig


@dataclass(frozen=True)
class BenchSize:
    name: str
    scenes: SceneSetConfig
    repeats: int

    @property
    def collection(self) -> str:
        return self.scenes.collection


_DATES = (date(2024, 6, 1), date(2024, 6, 2))
_BASE = SceneSetConfig(dates=_DATES, scene_size=2048, seed=2024)

SIZES: dict[str, BenchSize] = {
    "quick": BenchSize("quick", replace(_BASE, collection="bench-quick", scenes_per_date=9, spread_m=19_000.0), 3),
    "large": BenchSize("large", replace(_BASE, collection="bench-large", scenes_per_date=36, spread_m=48_000.0), 3),
}


def get_size(name: str, repeats: int | None = None) -> BenchSize:
    """A named size, optionally with another repeat count."""
    if name not in SIZES:
        raise KeyError(f"unknown size {name!r}; choose one of {sorted(SIZES)}")
    size = SIZES[name]
    return replace(size, repeats=repeats) if repeats else size
