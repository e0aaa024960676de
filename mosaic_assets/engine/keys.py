"""The one place that builds and parses partition keys (time steps and space blocks).

Keys are stable, sortable strings: a time step is its start date (``2024-03-01``), a block is its
row and column in the block grid (``r0002c0013``). Nothing else in the project formats or parses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_BLOCK_KEY = re.compile(r"^r(\d{4,})c(\d{4,})$")


@dataclass(frozen=True, order=True)
class BlockIndex:
    """Row and column of a block in the block grid (not pixels, not chunks)."""

    row: int
    col: int

    @property
    def key(self) -> str:
        return f"r{self.row:04d}c{self.col:04d}"

    @classmethod
    def parse(cls, key: str) -> BlockIndex:
        match = _BLOCK_KEY.match(key)
        if not match:
            raise ValueError(f"not a block key: {key!r} (expected e.g. 'r0002c0013')")
        return cls(int(match.group(1)), int(match.group(2)))


STATIC_STEP = "static"  # the one "time step" of a static source (a layer without time axis)


def check_step_key(key: str) -> str:
    """``key`` if it names a time step or is ``STATIC_STEP`` (validated before it becomes part of a path)."""
    if key != STATIC_STEP:
        parse_time_key(key)
    return key


def time_key(step_start: date) -> str:
    return step_start.isoformat()


def parse_time_key(key: str) -> date:
    try:
        return date.fromisoformat(key)
    except ValueError:
        raise ValueError(f"not a time-step key: {key!r} (expected an ISO date, e.g. '2024-03-01')") from None
