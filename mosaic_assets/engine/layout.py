"""Where a mosaic's files live: the one place that turns (spec, data root, keys) into paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .gti import GtiFiles
from .keys import parse_time_key
from .spec import MosaicSpec


@dataclass(frozen=True)
class MosaicLayout:
    spec: MosaicSpec
    data_root: Path

    @property
    def store(self) -> str:
        """The Zarr store: the spec's ``store`` when set, else ``<data_root>/stores/<name>.zarr``."""
        return self.spec.store or str(self.data_root / "stores" / f"{self.spec.name}.zarr")

    @property
    def work_dir(self) -> Path:
        return self.data_root / "work" / self.spec.name

    def scene_table(self, step_key: str) -> Path:
        parse_time_key(step_key)  # a key is validated before it becomes part of a path
        return self.work_dir / "catalog" / f"{step_key}.parquet"

    def gti(self, step_key: str) -> GtiFiles:
        parse_time_key(step_key)
        return GtiFiles.for_step(self.work_dir / "gti", step_key)
