"""The regular time axis, quarterly steps included (seasons: a start on December 1st gives DJF, MAM, ...)."""

from __future__ import annotations

from datetime import date

import pytest

from mosaic_assets.engine.spec import SpecError, TimeGrid, parse_specs
from mosaic_assets.engine.timegrid import step_bounds, step_index, step_start


@pytest.mark.parametrize(
    "day, index",
    [
        (date(2023, 12, 1), 0),
        (date(2024, 2, 29), 0),
        (date(2024, 3, 1), 1),
        (date(2024, 11, 30), 3),
        (date(2024, 12, 1), 4),
    ],
)
def test_quarterly_steps_are_seasons_from_the_start(day: date, index: int) -> None:
    grid = TimeGrid(start=date(2023, 12, 1), step="quarterly")
    assert step_index(grid, day) == index
    assert step_start(grid, index) <= day < step_start(grid, index + 1)
    lo, hi = step_bounds(grid, index)
    assert (hi - lo).days in (90, 91, 92)


def test_a_quarterly_grid_starts_on_a_months_first_day() -> None:
    mosaic = {
        "name": "q",
        "stac": {"url": "http://127.0.0.1:1", "collections": ["c"]},
        "bands": [{"name": "b", "asset": "data"}],
        "area": {"bbox": [11.9, 47.0, 12.0, 47.1]},
        "crs": "EPSG:32632",
        "resolution": 10,
        "time": {"start": "2024-01-15", "step": "quarterly"},
    }
    with pytest.raises(SpecError, match=r"mosaics\[0\].time: .*a quarterly grid starts on a month's first day"):
        parse_specs({"mosaics": [mosaic]})
