"""The agreement check sorts differences by cause: footprint edges, one-pixel picks, anything else."""

import numpy as np

from benchmarks.compare import compare


def _reader(array: np.ndarray):
    return lambda r0, r1: array[:, r0:r1, :]


def _mosaic(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 60000, size=(3, 40, 30), dtype=np.uint16)


def test_identical_mosaics_agree_everywhere():
    a = _mosaic()
    result = compare(_reader(a), _reader(a.copy()), 40, nodata=0, strip=16)
    assert result.equal == result.pixels == 40 * 30
    assert (result.mask_edge, result.neighbour_pick, result.other) == (0, 0, 0)


def test_differences_are_sorted_by_cause():
    a = _mosaic()
    b = a.copy()
    b[:, 5, 5] = 0  # footprint edge: nodata on one side only
    b[:, 16, 10] = a[:, 15, 11]  # a nearest pick one pixel off, across a strip boundary
    b[:, 30, 20] = [1, 2, 3]  # something no neighbour holds
    result = compare(_reader(a), _reader(b), 40, nodata=0, strip=16)
    assert result.pixels - result.equal == 3
    assert (result.mask_edge, result.neighbour_pick, result.other) == (1, 1, 1)
    assert 0 < result.equal_valid_fraction < 1


def test_accumulates_over_time_steps():
    a = _mosaic()
    first = compare(_reader(a), _reader(a), 40, nodata=0)
    both = compare(_reader(a), _reader(a), 40, nodata=0, into=first)
    assert both.pixels == 2 * 40 * 30
