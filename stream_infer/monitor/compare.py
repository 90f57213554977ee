"""Champion against a challenger on the same matured events, with bootstrap intervals. Pure.

The events compared are those both models scored, in days mature as of ``as_of`` (so an
event without a label counts as genuine, see :mod:`.cohorts`). Two figures:

- **average precision**, by a paired bootstrap over events: each draw resamples the events
  with replacement, the same events for both models, and takes both APs and their
  difference (a draw without a fraud is left out);
- **card precision@k**, by a paired bootstrap over days: each draw resamples the days and
  takes the mean of each model's daily figure and the difference.

The interval is the percentile interval of the draws at ``confidence``. The challenger's
lead is **outside the noise** when the interval of the difference excludes 0; for card
precision@k only over :data:`MIN_DAYS` days or more (resampling three days gives an interval
far narrower than the truth). Draws come
from ``numpy.random.default_rng(seed)``: the same rows and seed give the same intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..offline.backtest import average_precision
from .cohorts import card_precision, mature
from .join import Array, ModelRows

MIN_DAYS = 5
"""Fewer mature days than this and card precision@k's verdict is ``too few days``."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A figure on the rows (``point``) and its bootstrap interval."""

    point: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure for both models and the challenger's lead (challenger minus champion)."""

    champion: Interval
    challenger: Interval
    lead: Interval
    verdict: str
    """``challenger ahead``, ``champion ahead`` (the lead's interval excludes 0), ``within
    the noise``, ``not enough data``, or (card precision@k) ``too few days``."""


@dataclass(frozen=True, slots=True)
class Comparison:
    champion: str
    challenger: str
    events: int
    frauds: int
    days: int
    average_precision: Figure
    card_precision_at_k: Figure
    k: int
    draws: int
    seed: int
    confidence: float


def compare(champion: ModelRows, challenger: ModelRows, *, as_of_ms: int,
            horizon_days: int = 7, k: int = 100, draws: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> Comparison:
    """Compare the two on the mature events both scored (see the module docstring)."""
    ours, theirs = common(champion, challenger, as_of_ms=as_of_ms, horizon_days=horizon_days)
    rng = np.random.default_rng(seed)
    y = ours.labels == 1
    ap = _paired(_ap_draws(y, ours.scores, theirs.scores, draws, rng), confidence)
    cp_ours, cp_theirs = card_precision(ours, k), card_precision(theirs, k)
    days = sorted(cp_ours)
    cp = _paired(_mean_draws(np.array([cp_ours[d] for d in days]),
                             np.array([cp_theirs[d] for d in days]), draws, rng), confidence)
    if days and len(days) < MIN_DAYS:
        cp = replace(cp, verdict="too few days")
    return Comparison(
        champion=f"{champion.model}:{champion.version}",
        challenger=f"{challenger.model}:{challenger.version}",
        events=len(ours), frauds=int(y.sum()), days=len(days),
        average_precision=ap, card_precision_at_k=cp, k=k, draws=draws, seed=seed,
        confidence=confidence)


def common(a: ModelRows, b: ModelRows, *, as_of_ms: int, horizon_days: int
           ) -> tuple[ModelRows, ModelRows]:
    """The rows of the mature events both ``a`` and ``b`` scored, in the same order."""
    _, ia, ib = np.intersect1d(a.event_ids.astype(str), b.event_ids.astype(str),
                               assume_unique=True, return_indices=True)
    ripe = np.array([mature(int(d), as_of_ms, horizon_days) for d in a.days[ia].tolist()],
                    dtype=bool)
    return a.take(ia[ripe]), b.take(ib[ripe])


Draws = tuple[float | None, float | None, Array, Array]
"""Point of each model, then each model's draws (NaN where a draw has no figure)."""


def _ap_draws(y: Array, ours: Array, theirs: Array, draws: int,
              rng: np.random.Generator) -> Draws:
    if not y.any():
        return None, None, np.empty(0), np.empty(0)
    a, b = _WeightedAP(y, ours), _WeightedAP(y, theirs)
    n = len(y)
    out = np.empty((2, draws))
    for i in range(draws):
        weights = np.bincount(rng.integers(0, n, n), minlength=n)
        out[0, i], out[1, i] = a(weights), b(weights)
    return average_precision(y, ours), average_precision(y, theirs), out[0], out[1]


def _mean_draws(ours: Array, theirs: Array, draws: int, rng: np.random.Generator) -> Draws:
    if not len(ours):
        return None, None, np.empty(0), np.empty(0)
    picks = rng.integers(0, len(ours), (draws, len(ours)))
    return (float(ours.mean()), float(theirs.mean()), ours[picks].mean(axis=1),
            theirs[picks].mean(axis=1))


def _paired(found: Draws, confidence: float) -> Figure:
    ours, theirs, ours_draws, theirs_draws = found
    if ours is None or theirs is None:
        empty = Interval(None, None, None)
        return Figure(empty, empty, empty, "not enough data")
    tails = [50 * (1 - confidence), 100 - 50 * (1 - confidence)]

    def interval(point: float, values: Array) -> Interval:
        kept = values[~np.isnan(values)]
        if not len(kept):
            return Interval(point, None, None)
        low, high = np.percentile(kept, tails).tolist()
        return Interval(point, low, high)

    lead = interval(theirs - ours, theirs_draws - ours_draws)
    verdict = ("within the noise" if lead.low is None or lead.high is None
               or lead.low <= 0 <= lead.high
               else "challenger ahead" if lead.low > 0 else "champion ahead")
    return Figure(interval(ours, ours_draws), interval(theirs, theirs_draws), lead, verdict)


class _WeightedAP:
    """Average precision of one model under row weights (a bootstrap draw's counts): the
    scikit-learn definition with ``sample_weight``, from one sort done up front."""

    def __init__(self, y: Array, scores: Array) -> None:
        self.order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
        ranked = np.asarray(scores, dtype=np.float64)[self.order]
        self.y = np.asarray(y, dtype=np.float64)[self.order]
        self.last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]

    def __call__(self, weights: Array) -> float:
        w = weights[self.order].astype(np.float64)
        tp = np.cumsum(w * self.y)[self.last_of_tie]
        seen = np.cumsum(w)[self.last_of_tie]
        if tp[-1] <= 0:
            return float("nan")
        precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        return float((np.diff(np.r_[0.0, tp]) / tp[-1] * precision).sum())
