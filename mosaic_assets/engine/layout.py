"""Where a mosaic's files live: the one place that turns (spec, data root, keys) into locations.

The data root is a local folder or an object-store URL (``s3://bucket/prefix``). Scene tables, GTIs
and the default store live under it, so with a URL every pod of a cluster reads what another pod
wrote; only files meant for this machine (previews) go to ``work_dir``, always a local folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .gti import GtiFiles
from .keys import BlockIndex, check_step_key
from .object_store import Location, as_location, join, local_cache_dir
from .spec import MosaicSpec


@dataclass(frozen=True)
class MosaicLayout:
    spec: MosaicSpec
    data_root: Location

    def __post_init__(self) -> None:
        # Path("s3://b/k") collapses to "s3:/b/k": restore the URL whatever the caller wrapped it in
        object.__setattr__(self, "data_root", as_location(self.data_root))

    @property
    def store(self) -> str:
        """The Zarr store: the spec's ``store`` when set, else ``<data_root>/stores/<name>.zarr`` (a cube's
        source: its cube's name)."""
        return self.spec.store or str(join(self.data_root, "stores", f"{self.spec.cube or self.spec.name}.zarr"))

    @property
    def work_location(self) -> Location:
        """Scene tables and GTIs: under the data root, shared by every process that sees it."""
        return join(self.data_root, "work", self.spec.name)

    @property
    def work_dir(self) -> Path:
        """A local folder for this machine's own files (previews); the work location when that is local."""
        return local_cache_dir(self.data_root) / "work" / self.spec.name

    def scene_table(self, step_key: str) -> Location:
        check_step_key(step_key)  # a key is validated before it becomes part of a path
        return join(self.work_location, "catalog", f"{step_key}.parquet")

    def skipped_record(self, step_key: str, block_key: str) -> Location:
        """Scenes the (time step, block) partition was written without (``bad_scenes: skip``)."""
        check_step_key(step_key)
        BlockIndex.parse(block_key)
        return join(self.work_location, "skipped", step_key, f"{block_key}.json")

    def gti(self, step_key: str) -> GtiFiles:
        check_step_key(step_key)
        return GtiFiles.for_step(join(self.work_location, "gti"), step_key)
