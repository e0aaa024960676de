"""The record of scenes a partition was written without (spec ``bad_scenes: skip``).

It lives next to the scene tables, one small JSON file per (time step, block), so the asset checks
and a person reading the data root both see which scenes are missing from which block: the coverage
audit leaves their footprints out (the block is complete without them), and ``no_skipped_scenes``
warns. A later write of the block that needs no skipping removes the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .object_store import Location, exists, filesystem, read_bytes, write_bytes


@dataclass(frozen=True)
class SkippedScene:
    item_id: str
    reason: str  # names the asset href and what GDAL or the header check said


def save_skipped(location: Location, skipped: list[SkippedScene]) -> None:
    """Write the record, or remove a stale one when nothing was skipped."""
    if skipped:
        write_bytes(location, json.dumps([asdict(s) for s in skipped], indent=1).encode())
    elif exists(location):
        filesystem(location).rm(str(location))


def load_skipped(location: Location) -> list[SkippedScene]:
    if not exists(location):
        return []
    return [SkippedScene(**entry) for entry in json.loads(read_bytes(location))]
