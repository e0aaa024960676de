"""The regular time axis of a mosaic: step ``k`` starts at ``start + k * step``.

Positions on the axis are a pure function of the date, so a late-arriving older time step always
has its slot already (the store only ever grows at the end) and time coordinates stay sorted.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np

from .spec import TimeGrid


def step_index(grid: TimeGrid, when: date | datetime) -> int:
    """Index of the time step holding ``when``; negative when before ``grid.start``."""
    day = when.date() if isinstance(when, datetime) else when
    if grid.step == "daily":
        return (day - grid.start).days
    months = (day.year - grid.start.year) * 12 + day.month - grid.start.month
    if grid.step == "monthly":
        return months
    if grid.step == "quarterly":
        return months // 3
    return day.year - grid.start.year


def step_start(grid: TimeGrid, index: int) -> date:
    """First day of time step ``index``."""
    if grid.step == "daily":
        return grid.start + timedelta(days=index)
    if grid.step in ("monthly", "quarterly"):
        months = grid.start.month - 1 + index * (3 if grid.step == "quarterly" else 1)
        return grid.start.replace(year=grid.start.year + months // 12, month=months % 12 + 1)
    return grid.start.replace(year=grid.start.year + index)


def step_bounds(grid: TimeGrid, index: int) -> tuple[datetime, datetime]:
    """[start, end) of a time step as naive UTC datetimes, for STAC datetime queries."""
    lo, hi = step_start(grid, index), step_start(grid, index + 1)
    return datetime(lo.year, lo.month, lo.day), datetime(hi.year, hi.month, hi.day)


def time_coords(grid: TimeGrid, length: int) -> np.ndarray:
    """The time coordinate values (datetime64[ns]) of the first ``length`` steps."""
    return np.array([np.datetime64(step_start(grid, i), "ns") for i in range(length)])
