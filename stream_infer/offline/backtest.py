"""Backtest metrics per model and the report: a terminal table, JSON, and an HTML page.

Pure: arrays in, numbers and text out. For each model, over the rows that carry a label:
AUC ROC, average precision, precision and recall at the model's own threshold, the alert
rate, the exact precision/recall and ROC curves (:func:`curves`: a point at every distinct
score, as ``sklearn.metrics.precision_recall_curve`` and ``roc_curve(drop_intermediate=False)``
compute them), and card precision@k per day by two definitions.

Card precision@k follows *Reproducible Machine Learning for Credit Card Fraud Detection —
Practical Handbook* (Le Borgne et al., chapter 4, "Precision top-k metrics"): investigators
check ``k`` cards a day, so a model is judged on the ``k`` cards it ranks first each day.

- **plain** (``card_precision_at_k``): for each UTC day, rank the cards that paid that day by
  their highest score that day, take the top ``k``, and count the share of them that had a
  fraudulent payment that day. The denominator is ``k`` even on a day with fewer cards, so a
  day with ``f`` fraudulent cards scores at most ``min(f, k) / k``. The figure is the mean over
  the days that have labelled payments.
- **excluding known compromised** (``card_precision_at_k_excluding_known``): the same, except
  that each day's ranking leaves out the cards already known to be compromised: a card that
  was fraudulent and in the top ``k`` on an earlier day (investigators found it then and
  blocked it), and the cards the caller says were known compromised before the test period
  (frauds whose labels arrived before it, e.g. from the delay period), each from the day it is
  known. This is the Handbook's ``card_precision_top_k(..., remove_detected_compromised_cards=
  True)``, its default and the figure its ``performance_assessment`` reports. The Handbook also
  drops every payment of a card known compromised before a test day from its whole test set
  (``get_train_test_set``: frauds of the training period, then of the delay period as their
  labels come in); here such cards, when the caller names them, leave this ranking only: AUC,
  average precision and the other figures count every labelled row.

Two deliberate differences from the Handbook's code: cards with equal scores are ranked by
card id (the Handbook's sort leaves ties in an unspecified order), and only labelled payments
are ranked (every payment in its simulated data has a label). Per-day values of both
definitions are kept in :attr:`ModelReport.card_precision_days`.

**Drift** (:func:`drift_against_training`): the PSI of every feature and of each model's score
over the replayed rows against the model's training profile (:mod:`stream_infer.drift`), each
beside what no drift would give for that many rows; in the table, the JSON and the page.

A report may carry **warnings** (:func:`point_in_time_warnings` gives the ones for each
feature source): the table prints them under the figures, the JSON lists them, and the page
shows them above everything else. The page's charts come from :mod:`.charts` (matplotlib, the
``report`` extra), imported only when a page is asked for.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..drift import SCORE, FeatureDrift, Profile, no_drift, psi
from ..errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .charts import Line

DAY_MS = 86_400_000
Array = npt.NDArray[Any]
Drift = Mapping[str, Sequence[FeatureDrift]]
"""PSI against training by model (its report's label): each feature's, then the score's."""

WARNINGS_BY_FEATURE_SOURCE = {
    "redis": "features from live Redis are not point-in-time: every event was scored with the "
             "store's values at replay time, which may already reflect what happened after it "
             "(figures can look better than the model will do live)",
    "snapshot": "snapshot features are one snapshot, not as of each event: every event was "
                "scored with the same table, so events before the snapshot see values from "
                "their future and events after it see stale ones",
}
"""The point-in-time caveat of each ``--features`` source that has one (``event`` and
``scores`` carry the values that went with each event)."""


def point_in_time_warnings(features: str) -> list[str]:
    """The warnings a report on features from ``features`` must carry (maybe none)."""
    warning = WARNINGS_BY_FEATURE_SOURCE.get(features)
    return [warning] if warning else []


def roc_auc(labels: Sequence[int] | npt.NDArray[Any], scores: Sequence[float] | Array) -> float:
    """Area under the ROC curve (ties count one half): the Mann-Whitney statistic."""
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        raise ConfigError("AUC needs both classes in the held-out labels")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(labels: Sequence[int] | npt.NDArray[Any],
                      scores: Sequence[float] | Array) -> float:
    """Sum over distinct thresholds of (recall step) x precision, as scikit-learn defines it."""
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    if not y.any():
        raise ConfigError("average precision needs at least one positive label")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall_step = np.diff(np.r_[0, tp]) / y.sum()
    return float((recall_step * precision).sum())


def _average_ranks(values: Array) -> Array:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


class OperatingPoint(NamedTuple):
    """What alerting at ``score >= threshold`` gives on the labelled rows."""

    precision: float
    recall: float
    false_positive_rate: float


@dataclass(frozen=True, slots=True)
class Curves:
    """Every operating point of one model on the labelled rows: for each distinct score
    (``thresholds``, descending), the fraudulent (``tp``) and legitimate (``fp``) rows scored at
    or above it."""

    thresholds: Array
    tp: Array
    fp: Array

    @property
    def positives(self) -> int:
        return int(self.tp[-1]) if len(self.tp) else 0

    @property
    def negatives(self) -> int:
        return int(self.fp[-1]) if len(self.fp) else 0

    def precision_recall(self) -> tuple[Array, Array]:
        """(precision, recall) in ``sklearn.metrics.precision_recall_curve``'s order: lowest
        threshold first, then the point (recall 0, precision 1); needs a fraudulent row."""
        if not self.positives:
            raise ConfigError("a precision/recall curve needs at least one fraudulent row")
        precision = self.tp / (self.tp + self.fp)
        recall = self.tp / self.positives
        return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]

    def roc(self) -> tuple[Array, Array]:
        """(false-positive rate, true-positive rate) from (0, 0), as
        ``sklearn.metrics.roc_curve(drop_intermediate=False)``; needs both classes."""
        if not self.positives or not self.negatives:
            raise ConfigError("a ROC curve needs fraudulent and legitimate rows")
        return np.r_[0.0, self.fp / self.negatives], np.r_[0.0, self.tp / self.positives]

    def at(self, threshold: float) -> OperatingPoint | None:
        """The point of alerting at ``score >= threshold`` (None if no labelled row would)."""
        n = int(np.count_nonzero(self.thresholds >= threshold))
        if not n or not self.positives:
            return None
        tp, fp = int(self.tp[n - 1]), int(self.fp[n - 1])
        return OperatingPoint(tp / (tp + fp), tp / self.positives,
                              fp / self.negatives if self.negatives else math.nan)


def curves(scores: Array, labels: Array) -> Curves:
    """The exact curves of ``scores`` on the rows whose label is 0 or 1 (-1: unlabelled)."""
    known = np.asarray(labels) >= 0
    y = np.asarray(labels)[known] == 1
    s = np.asarray(scores, dtype=np.float64)[known]
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = (np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s)
                   else np.empty(0, dtype=np.int64))
    tp = np.cumsum(y)[last_of_tie]
    return Curves(thresholds=s[last_of_tie], tp=tp, fp=last_of_tie + 1 - tp)


@dataclass(frozen=True, slots=True)
class CardPrecisionDay:
    """Card precision@k on one UTC day, by both definitions (see the module's docstring)."""

    day: str
    """The UTC date, ``2026-01-03``."""
    cards: int
    """Distinct cards with a labelled payment that day."""
    fraud_cards: int
    """Of which had a fraudulent payment that day."""
    known_cards: int
    """Of which were left out of the second ranking as known compromised."""
    plain: float
    excluding_known: float


@dataclass(frozen=True, slots=True)
class ModelReport:
    """How one model did on the replayed rows (labelled metrics are None without labels)."""

    model: str
    threshold: float
    rows: int
    labelled: int
    positives: int
    alerts: int
    alert_rate: float
    auc: float | None
    average_precision: float | None
    precision: float | None
    recall: float | None
    card_precision_at_k: float | None
    """Plain: the mean over days of each day's top-``k`` fraudulent share."""
    card_precision_at_k_excluding_known: float | None
    """The same with known-compromised cards left out of each day's ranking."""
    k: int
    days: int
    card_precision_days: tuple[CardPrecisionDay, ...] = ()


def evaluate(model: str, threshold: float, scores: Array, labels: Array, cards: Array,
             event_time_ms: Array, *, k: int = 100,
             known_compromised: Mapping[str, int] | Collection[str] = ()) -> ModelReport:
    """The metrics of one model; ``labels`` holds -1 where an event had no label.

    ``known_compromised``: cards known compromised before the test period, as card ids (known
    from the start) or card id -> the time (epoch ms) from which it is known; see
    :func:`card_precision_by_day`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    alerted = scores >= threshold
    known = labels >= 0
    y, s, flagged = labels[known].astype(np.float64), scores[known], alerted[known]
    positives = int(y.sum())
    both = 0 < positives < len(y)
    days = np.asarray(event_time_ms)[known] // DAY_MS
    per_day = (card_precision_by_day(s, y, np.asarray(cards)[known], days, k,
                                     known_compromised=known_compromised) if len(y) else [])
    return ModelReport(
        model=model,
        threshold=threshold,
        rows=len(scores),
        labelled=int(known.sum()),
        positives=positives,
        alerts=int(alerted.sum()),
        alert_rate=float(alerted.mean()) if len(scores) else 0.0,
        auc=roc_auc(y, s) if both else None,
        average_precision=average_precision(y, s) if positives else None,
        precision=float(y[flagged].mean()) if flagged.any() else None,
        recall=float(flagged[y == 1].mean()) if positives else None,
        card_precision_at_k=_mean([d.plain for d in per_day]),
        card_precision_at_k_excluding_known=_mean([d.excluding_known for d in per_day]),
        k=k,
        days=len(per_day),
        card_precision_days=tuple(per_day),
    )


def card_precision_at_k(scores: Array, labels: Array, cards: Array, days: Array, k: int, *,
                        excluding_known: bool = False,
                        known_compromised: Mapping[str, int] | Collection[str] = ()) -> float:
    """Card precision@k, plain or excluding known-compromised cards: the mean over days of
    :func:`card_precision_by_day`."""
    per_day = card_precision_by_day(scores, labels, cards, days, k,
                                    known_compromised=known_compromised)
    if not per_day:
        raise ConfigError("card precision@k needs labelled rows")
    return float(np.mean([d.excluding_known if excluding_known else d.plain for d in per_day]))


def card_precision_by_day(scores: Array, labels: Array, cards: Array, days: Array, k: int, *,
                          known_compromised: Mapping[str, int] | Collection[str] = (),
                          ) -> list[CardPrecisionDay]:
    """Each day's card precision@k by both definitions, days in order; ``days`` are UTC day
    numbers (``event_time_ms // DAY_MS``), ``labels`` are 0 or 1.

    A card in ``known_compromised`` is left out of the second ranking of every day: given as an
    id, from the first day; given as id -> epoch ms, from each day that starts at or after that
    time. A card that is fraudulent and in that ranking's top ``k`` is left out from the next
    day on. Ties in score go to the smaller card id, so the figures are deterministic.
    """
    known_from = (dict(known_compromised) if isinstance(known_compromised, Mapping)
                  else dict.fromkeys(known_compromised, -math.inf))
    detected: set[str] = set()
    result = []
    for day, card_ids, best, fraud in _cards_by_day(scores, labels, cards, days):
        ranked = np.lexsort((card_ids, -best))
        start = day * DAY_MS
        known = np.array([c in detected or known_from.get(c, math.inf) <= start
                          for c in card_ids.tolist()], dtype=bool)
        kept = ranked[~known[ranked]][:k]
        detected.update(card_ids[kept][fraud[kept]].tolist())
        result.append(CardPrecisionDay(
            day=datetime.fromtimestamp(start / 1000, UTC).date().isoformat(),
            cards=len(card_ids), fraud_cards=int(fraud.sum()), known_cards=int(known.sum()),
            plain=int(fraud[ranked[:k]].sum()) / k, excluding_known=int(fraud[kept].sum()) / k))
    return result


def _cards_by_day(scores: Array, labels: Array, cards: Array,
                  days: Array) -> list[tuple[int, Array, Array, Array]]:
    """Per day (in order): its distinct cards, each card's highest score that day, and
    whether it had a fraudulent payment that day."""
    days = np.asarray(days, dtype=np.int64)
    cards = np.asarray(cards).astype(str)
    order = np.lexsort((cards, days))
    days, cards = days[order], cards[order]
    scores = np.asarray(scores, dtype=np.float64)[order]
    fraud = np.asarray(labels)[order] == 1
    if not len(order):
        return []
    first = np.flatnonzero(np.r_[True, (days[1:] != days[:-1]) | (cards[1:] != cards[:-1])])
    day_of, card_of = days[first], cards[first]
    best, any_fraud = np.maximum.reduceat(scores, first), np.logical_or.reduceat(fraud, first)
    bounds = np.r_[np.flatnonzero(np.diff(day_of)) + 1, len(first)]
    out, lo = [], 0
    for hi in bounds.tolist():
        out.append((int(day_of[lo]), card_of[lo:hi], best[lo:hi], any_fraud[lo:hi]))
        lo = hi
    return out


def drift_against_training(columns: Mapping[str, Array], model: str,
                           profile: Profile) -> list[FeatureDrift]:
    """PSI of the replayed rows against ``model``'s training ``profile``: each profiled
    feature among the results' ``feature:<name>`` columns, then the score (``score:<model>``),
    each with what no drift would give for that many rows."""
    found = [(name, bins, columns[f"feature:{name}"]) for name, bins in profile.features.items()
             if f"feature:{name}" in columns]
    if profile.score is not None and f"score:{model}" in columns:
        found.append((SCORE, profile.score, columns[f"score:{model}"]))
    return [FeatureDrift(name, psi(bins.counts(values), bins.shares),
                         no_drift(bins.shares, len(values), profile.rows))
            for name, bins, values in found if len(values)]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def table(reports: Sequence[ModelReport], *, warnings: Sequence[str] = (),
          drift: Drift | None = None) -> str:
    """Models side by side, one metric per line, then card precision@k day by day and PSI
    against training (``drift``) per feature, for the terminal; ``warnings`` are printed
    under it."""
    k = reports[0].k if reports else 0
    rows = [("model", [r.model for r in reports]),
            ("threshold", [f"{r.threshold:.4f}" for r in reports]),
            ("rows (labelled)", [f"{r.rows} ({r.labelled})" for r in reports]),
            ("fraud rows", [str(r.positives) for r in reports]),
            ("alerts", [str(r.alerts) for r in reports]),
            ("alert rate", [f"{r.alert_rate:.4%}" for r in reports]),
            ("AUC ROC", [_num(r.auc) for r in reports]),
            ("average precision", [_num(r.average_precision) for r in reports]),
            ("precision @ threshold", [_num(r.precision) for r in reports]),
            ("recall @ threshold", [_num(r.recall) for r in reports]),
            (f"card precision@{k}/day", [f"{_num(r.card_precision_at_k)} ({r.days} d)"
                                         for r in reports]),
            ("  excl. known compromised",
             [_num(r.card_precision_at_k_excluding_known) for r in reports])]
    days = _days(reports)
    if days:
        rows.append((f"card precision@{k} by day", ["plain / excl. known"] * len(reports)))
        rows.extend((f"  {day}", [_day_cell(r, day) for r in reports]) for day in days)
    rows.extend(_drift_rows(reports, drift or {}))
    width = max(len(name) for name, _ in rows)
    cols = [max(len(row[1][i]) for row in rows) for i in range(len(reports))]
    lines = ["  ".join([name.ljust(width), *(v.rjust(c) for v, c in zip(vals, cols, strict=True))])
             for name, vals in rows]
    return "\n".join([*lines, *(f"WARNING: {w}" for w in warnings)])


def as_json(reports: Sequence[ModelReport], context: Mapping[str, Any], *,
            warnings: Sequence[str] = (), drift: Drift | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict: the run's context, its warnings (``warnings`` and any
    under the context's ``"warnings"`` key), each model's figures with its days, and with
    ``drift``, each model's PSI per feature (``expected`` and ``p99``: with no drift)."""
    out = {**context, "warnings": _warnings(context, warnings),
           "models": [asdict(r) for r in reports]}
    if drift is not None:
        out["drift"] = {model: [{"feature": f.feature, "psi": f.psi,
                                 "expected": f.no_drift.expected, "p99": f.no_drift.p99}
                                for f in features] for model, features in drift.items()}
    return out


def histogram(scores: Array, labels: Array, bins: int = 40) -> tuple[list[int], list[int]]:
    """Counts of legitimate and fraudulent rows per score bin over [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    legit = np.histogram(scores[labels == 0], edges)[0].tolist()
    fraud = np.histogram(scores[labels == 1], edges)[0].tolist()
    return legit, fraud


def html_page(reports: Sequence[ModelReport], curves: Mapping[str, Curves],
              histograms: Mapping[str, tuple[list[int], list[int]]],
              context: Mapping[str, Any], *, warnings: Sequence[str] = (),
              drift: Drift | None = None) -> str:
    """A self-contained page: the warnings, the run's facts, the table, and the charts
    (precision/recall, ROC, score distributions, card precision@k per day, PSI against
    training per model), inline SVG.

    ``curves`` and ``histograms`` are by model (:func:`curves`, :func:`histogram`). Raises
    :class:`ConfigError` naming the extra to install when matplotlib is missing.
    """
    from . import charts

    charts.require()
    notes = _warnings(context, warnings)
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                    for k, v in context.items() if k != "warnings")
    alarm = ("<div class=warnings><b>Warnings: read these figures with care</b><ul>"
             + "".join(f"<li>{html.escape(w)}</li>" for w in notes) + "</ul></div>"
             if notes else "")
    sections = "".join(f"<h2>{html.escape(title)}</h2>{charts.svg(figure, f'chart{i}-')}"
                       for i, (title, figure) in enumerate(figures(reports, curves,
                                                                   histograms, drift).items()))
    return (
        "<!doctype html><meta charset=utf-8><title>stream-infer backtest</title>"
        "<style>body{font:14px system-ui;margin:2em;max-width:60em}"
        "pre{background:#f6f6f6;padding:1em}svg{max-width:100%;height:auto}"
        ".warnings{border:2px solid #d62728;background:#fff3f3;padding:0 1em;margin:1em 0}"
        "</style>"
        f"<h1>Backtest</h1>{alarm}<ul>{facts}</ul>"
        f"<pre>{html.escape(table(reports, warnings=notes, drift=drift))}</pre>{sections}"
    )


def figures(reports: Sequence[ModelReport], curves: Mapping[str, Curves],
            histograms: Mapping[str, tuple[list[int], list[int]]],
            drift: Drift | None = None) -> dict[str, Figure]:
    """The page's charts by section title (models without the labels a chart needs are left
    out of it, and a chart with no model is left out)."""
    from . import charts

    by_model = {r.model: r for r in reports}
    thresholds = {r.model: r.threshold for r in reports}
    out: dict[str, Figure] = {}
    pr = [_pr_line(name, c, by_model.get(name)) for name, c in curves.items() if c.positives]
    if pr:
        rates = {c.positives / (c.positives + c.negatives) for c in curves.values() if c.positives}
        out["Precision / recall"] = charts.precision_recall(
            pr, fraud_rate=rates.pop() if len(rates) == 1 else None)
    roc = [_roc_line(name, c, by_model.get(name)) for name, c in curves.items()
           if c.positives and c.negatives]
    if roc:
        least = min(1 / c.negatives for c in curves.values() if c.negatives)
        out["ROC"] = charts.roc(roc, min_fpr=max(min(1e-4, least / 2), 1e-7))
    if histograms:
        edges = {name: np.linspace(0.0, 1.0, len(legit) + 1)
                 for name, (legit, _) in histograms.items()}
        out["Score distributions (log scale)"] = charts.score_histograms(
            {name: (edges[name], np.asarray(legit), np.asarray(fraud))
             for name, (legit, fraud) in histograms.items()}, thresholds)
    days = _days(reports)
    if days:
        k = reports[0].k
        out[f"Card precision@{k} per day"] = charts.card_precision_by_day(days, {
            label: [_day_value(r, day, plain) for day in days]
            for r in reports if r.card_precision_days
            for label, plain in ((f"{r.model} plain", True),
                                 (f"{r.model} excl. known compromised", False))}, k=k)
    for model, features in (drift or {}).items():
        if features:
            out[f"PSI against training: {model}"] = charts.psi_by_feature(
                {f.feature: f.psi for f in features},
                {f.feature: f.no_drift.p99 for f in features},
                title=f"{model}: PSI of the replayed rows against its training rows")
    return out


def _drift_rows(reports: Sequence[ModelReport], drift: Drift) -> list[tuple[str, list[str]]]:
    """The table's PSI lines: a feature per line, ``PSI / no-drift p99`` per model."""
    by_model = {model: {f.feature: f for f in features} for model, features in drift.items()}
    names = list(dict.fromkeys(f.feature for features in drift.values() for f in features))
    if not names:
        return []

    def cell(model: str, name: str) -> str:
        found = by_model.get(model, {}).get(name)
        return "-" if found is None else f"{found.psi:.4f} / {found.no_drift.p99:.4f}"

    return [("PSI against training", ["PSI / no-drift p99"] * len(reports)),
            *((f"  {name}", [cell(r.model, name) for r in reports]) for name in names)]


def _pr_line(name: str, c: Curves, report: ModelReport | None) -> Line:
    from .charts import Line

    precision, recall = c.precision_recall()
    point = c.at(report.threshold) if report else None
    ap = f" (AP {_num(report.average_precision)})" if report else ""
    return Line(label=f"{name}{ap}", x=recall, y=precision,
                point=(point.recall, point.precision) if point else None,
                point_label=_at_threshold(name, report))


def _roc_line(name: str, c: Curves, report: ModelReport | None) -> Line:
    from .charts import Line

    fpr, tpr = c.roc()
    point = c.at(report.threshold) if report else None
    auc = f" (AUC {_num(report.auc)})" if report else ""
    return Line(label=f"{name}{auc}", x=fpr, y=tpr,
                point=(point.false_positive_rate, point.recall) if point else None,
                point_label=_at_threshold(name, report))


def _at_threshold(name: str, report: ModelReport | None) -> str:
    return f"{name} at its threshold {report.threshold:.4f}" if report else ""


def _days(reports: Sequence[ModelReport]) -> list[str]:
    return sorted({d.day for r in reports for d in r.card_precision_days})


def _day_value(report: ModelReport, day: str, plain: bool) -> float:
    for d in report.card_precision_days:
        if d.day == day:
            return d.plain if plain else d.excluding_known
    return math.nan


def _day_cell(report: ModelReport, day: str) -> str:
    plain, excluding = _day_value(report, day, True), _day_value(report, day, False)
    return "-" if math.isnan(plain) else f"{plain:.4f} / {excluding:.4f}"


def _warnings(context: Mapping[str, Any], warnings: Sequence[str]) -> list[str]:
    given = [*context.get("warnings", ()), *warnings]
    return list(dict.fromkeys(str(w) for w in given))


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
