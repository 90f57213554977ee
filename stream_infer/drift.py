"""Drift against the training data: a reference profile, the population stability index
(PSI) of live rows against it, and the PSI expected with no drift at all.

**Profile.** ``model train`` bins each feature and the model's score on the training rows
(:func:`fit_profile`): a feature with at most :data:`MAX_CATEGORIES` distinct values gets one
bin per value (plus an *other* bin for values training never saw), any other gets the
training deciles as cut points (bin ``i`` is ``[cut[i-1], cut[i])``; tied deciles merge). Every
feature also has a *missing* bin, for NaN. The profile stores each bin's share of the rows.

**PSI** of live counts ``c`` (``n`` rows) against reference shares ``e``, with ``a = c / n``:
``sum((a - e) * ln(a / e))`` over the bins, each share floored at :data:`EPSILON` first.
Every term is non-negative; a bin empty on both sides adds nothing.

**No drift.** A sample of ``n`` rows from the very population of the training rows still gives
a PSI above zero. For small deviations ``(a - e) ln(a / e) ≈ (a - e)² / e``, so PSI is about
Pearson's statistic divided by the sample size; the ``m`` training rows are themselves a
sample of that population, so ``a - e`` has variance ``e(1 - e)(1/n + 1/m)`` and
``PSI ≈ (1/n + 1/m) · χ²(k - 1)``, ``k`` the bins with a reference share above zero. Hence
(:func:`no_drift`) ``E[PSI] ≈ (k - 1)(1/n + 1/m)`` and its 99th percentile
``χ²₀.₉₉(k - 1)(1/n + 1/m)`` (the quantile by Wilson and Hilferty's approximation). The
approximation holds when each bin expects a few rows; :func:`simulate_psi` draws the same
figure by simulation, and the tests hold one to the other.

**Windows.** :class:`DriftTracker` keeps, per model, each window's counts in a ring of time
buckets (``buckets`` per window: a 1 h window in 60 one-minute buckets), so a batch costs one
``searchsorted`` per feature and one ``bincount``, and a window's total is a sum over its
buckets: the current bucket and the ``buckets - 1`` before it, i.e. between
``(buckets - 1) / buckets`` of the window and all of it. Time is processing time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .enrich import Matrix
from .errors import ModelError
from .score import Model, Scores

Vector = npt.NDArray[np.float64]
Counts = npt.NDArray[np.int64]
Kind = Literal["numeric", "categorical"]
EPSILON = 1e-4
"""The share an empty bin counts as (``ln(a / e)`` is undefined at 0): one row in 10,000. A
bin empty on one side only adds about ``share · ln(share / EPSILON)``, 0.69 for a decile."""
MAX_CATEGORIES = 10
"""A feature with at most this many distinct training values is binned by value."""
DECILES = np.linspace(0.1, 0.9, 9)
SCORE = "score"
"""The name the model's score goes by in a profile and in the metrics' ``feature`` label."""
Z99 = 2.3263478740408408
"""The standard normal's 99th percentile."""
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Bins:
    """One feature's reference bins: ``edges`` are the cut points (``numeric``) or the values
    (``categorical``, ascending); ``shares`` are every bin's share of the training rows, in
    bin order: the value bins, then *other* (categorical only), then *missing* (NaN)."""

    kind: Kind
    edges: Vector
    shares: Vector
    _cuts: Vector = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # searchsorted orders NaN last: a NaN cut after the edges sends NaN alone past it
        object.__setattr__(self, "_cuts", np.r_[self.edges, np.nan])

    @property
    def size(self) -> int:
        return len(self.shares)

    @property
    def missing(self) -> float:
        """The share of training rows without a value."""
        return float(self.shares[-1])

    def assign(self, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """The bin of each value (NaN: the last bin, *missing*)."""
        if self.kind == "numeric":
            return np.searchsorted(self._cuts, values, side="right")
        x = np.asarray(values, dtype=np.float64)
        if len(self.edges):
            found = np.searchsorted(self.edges, x)
            known = self.edges[np.minimum(found, len(self.edges) - 1)] == x
            found = np.where(known, found, len(self.edges))
        else:
            found = np.zeros(len(x), dtype=np.intp)
        return np.where(np.isnan(x), self.size - 1, found)

    def counts(self, values: npt.ArrayLike) -> Counts:
        """How many of ``values`` fall in each bin."""
        return np.bincount(self.assign(values), minlength=self.size).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        edges = "edges" if self.kind == "numeric" else "values"
        value_bins = len(self.edges) + 1
        return {"kind": self.kind, edges: self.edges.tolist(),
                "shares": self.shares[:value_bins].tolist(), "missing": self.missing}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bins:
        """The bins :meth:`to_json` wrote; :class:`ModelError` if they do not hold together."""
        try:
            kind = data["kind"]
            edges = np.asarray(data["edges" if kind == "numeric" else "values"], np.float64)
            shares = np.asarray([*data["shares"], data["missing"]], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"a profile's bins lack {exc}") from None
        if kind not in ("numeric", "categorical") or edges.ndim != 1 or shares.ndim != 1:
            raise ModelError(f"a profile's bins are malformed: {dict(data)}")
        if len(shares) != len(edges) + 2 or np.any(np.diff(edges) <= 0):
            raise ModelError("a profile's bins need ascending edges and one share per bin")
        if np.any(shares < 0) or not math.isclose(shares.sum(), 1.0, abs_tol=1e-6):
            raise ModelError("a profile's shares must be non-negative and sum to 1")
        return cls(kind, edges, shares)


def fit_bins(values: npt.ArrayLike) -> Bins:
    """Bins for these training values: by value when there are at most
    :data:`MAX_CATEGORIES` distinct ones, else the deciles; with each bin's share."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    distinct = np.unique(x[~np.isnan(x)])
    kind: Kind = "categorical" if len(distinct) <= MAX_CATEGORIES else "numeric"
    edges = distinct if kind == "categorical" else np.unique(np.quantile(finite, DECILES))
    shell = Bins(kind, edges, np.zeros(len(edges) + 2))
    return Bins(kind, edges, shell.counts(x) / max(len(x), 1))


@dataclass(frozen=True, slots=True)
class Profile:
    """The training data's bins for each feature and for the score, over ``rows`` rows."""

    rows: int
    features: Mapping[str, Bins]
    score: Bins | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows,
                "features": {name: bins.to_json() for name, bins in self.features.items()},
                **({SCORE: self.score.to_json()} if self.score is not None else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        """The profile a manifest holds; :class:`ModelError` if it is malformed."""
        try:
            rows, features = int(data["rows"]), data["features"]
            score = data.get(SCORE)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"a profile lacks {exc}") from None
        if rows < 1 or not isinstance(features, Mapping):
            raise ModelError("a profile needs rows and bins per feature")
        return cls(rows, {name: Bins.from_json(bins) for name, bins in features.items()},
                   None if score is None else Bins.from_json(score))


def fit_profile(matrix: npt.ArrayLike, features: Sequence[str],
                scores: npt.ArrayLike | None = None) -> Profile:
    """The profile of training rows: ``matrix``'s columns are ``features``, ``scores`` the
    model's scores on the same rows."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(features) or not len(x):
        raise ValueError(f"a profile needs rows of {len(features)} features, got {x.shape}")
    return Profile(len(x), {name: fit_bins(x[:, j]) for j, name in enumerate(features)},
                   None if scores is None else fit_bins(scores))


def psi(counts: npt.ArrayLike, shares: npt.ArrayLike) -> float:
    """The population stability index of ``counts`` against the reference ``shares``
    (both in bin order), shares floored at :data:`EPSILON`; NaN for no rows."""
    c = np.asarray(counts, dtype=np.float64)
    return float(psi_rows(c[np.newaxis], np.asarray(shares, dtype=np.float64))[0])


def psi_rows(counts: npt.NDArray[Any], shares: npt.NDArray[Any]) -> Vector:
    """:func:`psi` of each row of ``counts`` (against the matching row of ``shares``, or the
    one vector ``shares``)."""
    n = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        actual = np.maximum(counts / n, EPSILON)
    expected = np.maximum(shares, EPSILON)
    result: Vector = np.sum((actual - expected) * np.log(actual / expected), axis=-1)
    return result


@dataclass(frozen=True, slots=True)
class NoDrift:
    """What PSI is with no drift, for a sample of that size: its mean and 99th percentile."""

    expected: float
    p99: float


def no_drift(shares: npt.ArrayLike, n: int, reference_rows: int) -> NoDrift:
    """The PSI of ``n`` live rows drawn from the training population, against ``shares``
    fitted on ``reference_rows`` rows of it: ``(k - 1)(1/n + 1/m)`` and the χ² 99th percentile
    in place of ``k - 1`` (see the module's docstring)."""
    dof = max(int(np.count_nonzero(np.asarray(shares) > 0)) - 1, 0)
    scale = 1 / n + (1 / reference_rows if reference_rows else 0.0)
    return NoDrift(dof * scale, chi2_p99(dof) * scale)


def chi2_p99(dof: int) -> float:
    """The 99th percentile of χ² with ``dof`` degrees of freedom (Wilson-Hilferty: within
    1% from one degree of freedom up)."""
    if dof <= 0:
        return 0.0
    c = 2 / (9 * dof)
    return dof * (1 - c + Z99 * math.sqrt(c)) ** 3


def simulate_psi(shares: npt.ArrayLike, n: int, reference_rows: int, *, draws: int = 4000,
                 seed: int = 0) -> Vector:
    """PSI of ``draws`` samples of ``n`` rows from the population ``shares`` describe,
    each against the shares of a fresh sample of ``reference_rows`` rows (or ``shares``
    themselves when 0): the no-drift distribution by simulation."""
    p = np.asarray(shares, dtype=np.float64)
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    live = rng.multinomial(n, p, size=draws)
    reference = (rng.multinomial(reference_rows, p, size=draws) / reference_rows
                 if reference_rows else p)
    return psi_rows(live, reference)


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window of processing time, ``seconds`` long, kept in ``buckets`` buckets."""

    label: str
    seconds: float
    buckets: int = 60

    @property
    def width(self) -> float:
        return self.seconds / self.buckets


def window(label: str, buckets: int = 60) -> Window:
    """A window from its label: ``90s``, ``15m``, ``1h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = label[:-1], label[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{label!r} is not a window like 15m, 1h or 1d")
    return Window(label, int(number) * units[unit], buckets)


class _Ring:
    """A window's counts per time bucket; a bucket is cleared when time comes round to it."""

    def __init__(self, window: Window, size: int) -> None:
        self.window = window
        self.counts = np.zeros((window.buckets, size), dtype=np.int64)
        self.stamps = np.full(window.buckets, np.iinfo(np.int64).min, dtype=np.int64)

    def add(self, counts: Counts, now: float) -> None:
        bucket = int(now // self.window.width)
        slot = bucket % self.window.buckets
        if self.stamps[slot] != bucket:
            self.counts[slot] = 0
            self.stamps[slot] = bucket
        self.counts[slot] += counts

    def total(self, now: float) -> Counts:
        bucket = int(now // self.window.width)
        live = (self.stamps > bucket - self.window.buckets) & (self.stamps <= bucket)
        total: Counts = self.counts[live].sum(axis=0)
        return total


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's (or the score's) PSI in a window, beside what no drift would give."""

    feature: str
    psi: float
    no_drift: NoDrift


@dataclass(frozen=True, slots=True)
class WindowDrift:
    """A window of one model: the rows it holds, and PSI per feature once there are enough
    (``features`` is empty below the minimum sample)."""

    window: str
    rows: int
    features: tuple[FeatureDrift, ...] = ()


class ModelDrift:
    """One model's live counts per bin in every window, against its profile."""

    def __init__(self, profile: Profile, features: Sequence[str], windows: Sequence[Window],
                 clock: Callable[[], float] = time.time) -> None:
        self.profile = profile
        self.columns = [(j, name, profile.features[name]) for j, name in enumerate(features)
                        if name in profile.features]
        self.bins = [bins for _, _, bins in self.columns]
        self.names = [name for _, name, _ in self.columns]
        if profile.score is not None:
            self.bins.append(profile.score)
            self.names.append(SCORE)
        sizes = [bins.size for bins in self.bins]
        self.offsets = np.r_[0, np.cumsum(sizes)].astype(np.intp)
        self.clock = clock
        self.rings = [_Ring(w, int(self.offsets[-1])) for w in windows]
        self._lock = threading.Lock()

    def observe(self, matrix: Matrix, scores: Scores) -> None:
        """Count a scored batch: ``matrix`` in the model's feature order, its scores."""
        rows = len(matrix)
        if not rows or not self.bins:
            return
        where = np.empty((len(self.bins), rows), dtype=np.intp)
        columns = matrix.T
        for c, (j, _, bins) in enumerate(self.columns):
            where[c] = bins.assign(columns[j])
        if self.profile.score is not None:
            where[-1] = self.profile.score.assign(scores)
        where += self.offsets[:-1, np.newaxis]
        counts = np.bincount(where.ravel(), minlength=int(self.offsets[-1])).astype(np.int64)
        now = self.clock()
        with self._lock:
            for ring in self.rings:
                ring.add(counts, now)

    def windows(self, min_sample: int) -> list[WindowDrift]:
        """Each window's rows, and its PSI per feature when it holds ``min_sample`` rows."""
        now = self.clock()
        with self._lock:
            totals = [(ring.window.label, ring.total(now)) for ring in self.rings]
        out = []
        for label, total in totals:
            rows = int(total[: self.offsets[1]].sum()) if self.bins else 0
            features: tuple[FeatureDrift, ...] = ()
            if rows and rows >= min_sample:
                features = tuple(
                    FeatureDrift(name, psi(total[lo:hi], bins.shares),
                                 no_drift(bins.shares, rows, self.profile.rows))
                    for name, bins, lo, hi in zip(self.names, self.bins, self.offsets[:-1],
                                                  self.offsets[1:], strict=True))
            out.append(WindowDrift(label, rows, features))
        return out


class Watched:
    """A :class:`~stream_infer.score.Model` that counts every batch it scores in its
    :class:`ModelDrift`. Counting never raises: a failure is logged once and scoring goes on."""

    def __init__(self, model: Model, drift: ModelDrift) -> None:
        self.model = model
        self.drift = drift
        self.name, self.version = model.name, model.version
        self.features, self.threshold = model.features, model.threshold
        self._failed = False

    def predict(self, matrix: Matrix) -> Scores:
        scores = self.model.predict(matrix)
        try:
            self.drift.observe(matrix, scores)
        except Exception:
            if not self._failed:
                log.exception("drift of %s %s not counted", self.name, self.version)
            self._failed = True
        return scores

    def contributions(self, matrix: Matrix) -> npt.NDArray[np.float32]:
        return self.model.contributions(matrix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@dataclass
class DriftTracker:
    """The drift of the models being served, over ``windows``; PSI from ``min_sample`` rows.

    :meth:`watch` wraps a model so that its batches are counted; a model served again (same
    name and version, after a reload) keeps its windows; :meth:`keep` forgets the others.
    """

    windows: Sequence[Window]
    min_sample: int = 500
    clock: Callable[[], float] = time.time
    models: dict[tuple[str, str], ModelDrift] = field(default_factory=dict)

    def watch(self, model: Model, profile: Profile | None) -> Model:
        """``model``, counted against ``profile`` as it scores (itself when there is none)."""
        if profile is None:
            return model
        key = (model.name, model.version)
        drift = self.models.get(key)
        if drift is None:
            drift = ModelDrift(profile, model.features, self.windows, self.clock)
            self.models[key] = drift
        return Watched(model, drift)

    def keep(self, served: Iterable[tuple[str, str]]) -> None:
        """Forget every model but the ``(name, version)`` pairs ``served``."""
        wanted = set(served)
        self.models = {key: drift for key, drift in self.models.items() if key in wanted}

    def readings(self) -> list[tuple[str, str, WindowDrift]]:
        """``(name, version, window)`` for every model watched and window."""
        return [(name, version, reading)
                for (name, version), drift in list(self.models.items())
                for reading in drift.windows(self.min_sample)]
