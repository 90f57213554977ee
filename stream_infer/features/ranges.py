"""Reductions over many index ranges of one array at once (numpy, no Python loop).

Ranges are half-open ``[lo, hi)``; an empty one gets ``empty``. Sums add the values in
place (no running total is subtracted), so a small window after large values keeps its
precision.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]


def prefix(values: Floats) -> Floats:
    """Running totals with a leading 0: ``prefix(x)[hi] - prefix(x)[lo]`` sums ``x[lo:hi]``
    (exact for the 0/1 counts it is used for)."""
    return np.concatenate((np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)))


def reduce_ranges(ufunc: np.ufunc, values: Floats, lo: Indices, hi: Indices,
                  empty: float) -> Floats:
    """``ufunc.reduce(values[lo[i]:hi[i]])`` for every i (``np.add``, ``np.fmin``, ...)."""
    if len(lo) == 0:
        return np.empty(0)
    padded = np.append(values, empty)
    bounds = np.empty(2 * len(lo), np.intp)
    bounds[0::2], bounds[1::2] = lo, hi
    reduced: Floats = ufunc.reduceat(padded, bounds)[0::2]
    reduced[hi <= lo] = empty
    return reduced


def differences(totals: Floats, lo: Indices, hi: Indices) -> Floats:
    """``totals[hi] - totals[lo]``: the sums of ranges from a :func:`prefix`."""
    diff: Floats = totals[hi] - totals[lo]
    return diff
