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
# The same as large with every scene in the mosaic's own zone and grid: nothing to warp, so the floor
# (decode + encode, no warping) is a fair bar; on ``large`` half the scenes are reprojected.
# Twice large's time steps (four dates): twice the partitions per build, the same per-run and
# per-build costs; shows how Dagster's overhead amortises as a build grows.
SIZES["xlarge"] = BenchSize(
    "xlarge",
    replace(
        SIZES["large"].scenes,
        collection="bench-xlarge",
        dates=(date(2024, 6, 1), date(2024, 6, 2), date(2024, 6, 4), date(2024, 6, 7)),
    ),
    3,
)
# Large's recipe over three times its area (three times the scenes, same density): 16 blocks per
# time step at the spec's 256 MiB, so chunk runs carry the spec's default 8 partitions each, as in a
# real build; on ``large`` a time step has 6 blocks and build's runs carry 3. Shows Dagster's per-run
# and per-step costs against runs of the size a deployment runs.
SIZES["wide"] = BenchSize(
    "wide", replace(SIZES["large"].scenes, collection="bench-wide", scenes_per_date=108, spread_m=90_000.0), 3
)
SIZES["large_utm32"] = BenchSize(
    "large_utm32", replace(SIZES["large"].scenes, collection="bench-large-utm32", utm_zones=(32,)), 3
)


def get_size(name: str, repeats: int | None = None) -> BenchSize:
    """A named size, optionally with another repeat count."""
    if name not in SIZES:
        raise KeyError(f"unknown size {name!r}; choose one of {sorted(SIZES)}")
    size = SIZES[name]
    return replace(size, repeats=repeats) if repeats else size
