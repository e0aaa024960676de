"""What one method run needs, handed from the harness to the method's own process as a JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    method: str
    spec: str  # spec file (one mosaic)
    data_root: str  # prepared scene tables and GTIs (benchmarks.prepare)
    out: str  # this run's output folder (removed before the run)
    steps: tuple[str, ...]  # time-step keys that have scenes
    workers: int
    api: str
    reference: str = ""  # a finished store of this mosaic (the floor encodes its pixels)
    postgres: str = ""  # libpq keywords of a PostgreSQL server for dagster_postgres ("host=… port=…")

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> Job:
        raw = json.loads(path.read_text())
        return cls(**{**raw, "steps": tuple(raw["steps"])})
