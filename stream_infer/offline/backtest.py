"""Backtest metrics per model and the report: a terminal table, JSON, and an HTML page.

Pure: arrays in, numbers and text out. For each model, over the rows that carry a label:
AUC ROC, average precision, precision and recall at the model's own threshold, the alert
rate, and card precision@k per day (for each UTC day, rank cards by their highest score,
take the top ``k``, count the share that had a fraudulent payment that day; the mean over
days), as in *Reproducible Machine Learning for Credit Card Fraud Detection*.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError

DAY_MS = 86_400_000
Array = npt.NDArray[Any]


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
    k: int
    days: int


def evaluate(model: str, threshold: float, scores: Array, labels: Array, cards: Array,
             event_time_ms: Array, *, k: int = 100) -> ModelReport:
    """The metrics of one model; ``labels`` holds -1 where an event had no label."""
    scores = np.asarray(scores, dtype=np.float64)
    alerted = scores >= threshold
    known = labels >= 0
    y, s, flagged = labels[known].astype(np.float64), scores[known], alerted[known]
    positives = int(y.sum())
    both = 0 < positives < len(y)
    days = np.asarray(event_time_ms)[known] // DAY_MS
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
        card_precision_at_k=(card_precision_at_k(s, y, np.asarray(cards)[known], days, k)
                             if len(y) else None),
        k=k,
        days=len(np.unique(days)),
    )


def card_precision_at_k(scores: Array, labels: Array, cards: Array, days: Array,
                        k: int) -> float:
    """Mean over days of the fraudulent share of the ``k`` cards with the highest score.

    Ties in score are broken by card id, so the figure is deterministic.
    """
    shares = []
    for day in np.unique(days):
        on_day = days == day
        best: dict[str, tuple[float, bool]] = {}
        for card, score, label in zip(cards[on_day].tolist(), scores[on_day].tolist(),
                                      labels[on_day].tolist(), strict=True):
            top, fraud = best.get(card, (-math.inf, False))
            best[card] = (max(top, score), fraud or label == 1)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
        shares.append(sum(fraud for _, (_, fraud) in ranked) / k)
    return float(np.mean(shares))


def pr_curve(scores: Array, labels: Array, points: int = 101) -> list[tuple[float, float]]:
    """(recall, precision) at up to ``points`` thresholds, for the chart."""
    known = labels >= 0
    y, s = labels[known], np.asarray(scores, dtype=np.float64)[known]
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order] == 1)
    total = max(int(tp[-1]) if len(tp) else 0, 1)
    if not len(order):
        return []
    picks = np.unique(np.linspace(0, len(order) - 1, points).astype(int))
    return [(float(tp[i] / total), float(tp[i] / (i + 1))) for i in picks.tolist()]


def table(reports: Sequence[ModelReport]) -> str:
    """Models side by side, one metric per line, for the terminal."""
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
            (f"card precision@{reports[0].k if reports else 0}/day",
             [f"{_num(r.card_precision_at_k)} ({r.days} d)" for r in reports])]
    width = max(len(name) for name, _ in rows)
    cols = [max(len(row[1][i]) for row in rows) for i in range(len(reports))]
    return "\n".join(
        "  ".join([name.ljust(width), *(v.rjust(c) for v, c in zip(vals, cols, strict=True))])
        for name, vals in rows)


def as_json(reports: Sequence[ModelReport], context: Mapping[str, Any]) -> dict[str, Any]:
    """The report as a JSON-ready dict: the run's context and each model's figures."""
    return {**context, "models": [asdict(r) for r in reports]}


def html_page(reports: Sequence[ModelReport], curves: Mapping[str, list[tuple[float, float]]],
              histograms: Mapping[str, tuple[list[int], list[int]]],
              context: Mapping[str, Any]) -> str:
    """A self-contained page: the table, precision/recall curves, score distributions."""
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                    for k, v in context.items())
    return (
        "<!doctype html><meta charset=utf-8><title>stream-infer backtest</title>"
        "<style>body{font:14px system-ui;margin:2em}pre{background:#f6f6f6;padding:1em}"
        "svg{margin:1em 1em 0 0;border:1px solid #ddd}</style>"
        f"<h1>Backtest</h1><ul>{facts}</ul><pre>{html.escape(table(reports))}</pre>"
        f"<h2>Precision / recall</h2>{_pr_svg(curves)}"
        f"<h2>Score distributions (fraud vs legitimate, log scale)</h2>"
        + "".join(_hist_svg(name, *bins) for name, bins in histograms.items())
    )


def histogram(scores: Array, labels: Array, bins: int = 40) -> tuple[list[int], list[int]]:
    """Counts of legitimate and fraudulent rows per score bin over [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    legit = np.histogram(scores[labels == 0], edges)[0].tolist()
    fraud = np.histogram(scores[labels == 1], edges)[0].tolist()
    return legit, fraud


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _pr_svg(curves: Mapping[str, list[tuple[float, float]]], size: int = 360) -> str:
    lines, legend = [], []
    for i, (name, points) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        path = " ".join(f"{20 + r * (size - 40):.1f},{size - 20 - p * (size - 40):.1f}"
                        for r, p in points)
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{path}"/>')
        legend.append(f'<text x="{size - 150}" y="{30 + 16 * i}" fill="{colour}">'
                      f"{html.escape(name)}</text>")
    axes = (f'<line x1="20" y1="{size - 20}" x2="{size - 20}" y2="{size - 20}" stroke="#999"/>'
            f'<line x1="20" y1="20" x2="20" y2="{size - 20}" stroke="#999"/>'
            f'<text x="{size / 2}" y="{size - 4}">recall</text>'
            f'<text x="2" y="14">precision</text>')
    return (f'<svg width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg">'
            f"{axes}{''.join(lines)}{''.join(legend)}</svg>")


def _hist_svg(name: str, legit: list[int], fraud: list[int], width: int = 400,
              height: int = 160) -> str:
    top = math.log10(max([*legit, *fraud, 1]) + 1)
    step = (width - 20) / max(len(legit), 1)
    bars = []
    for series, colour, shift in ((legit, "#1f77b4", 0.0), (fraud, "#d62728", step / 2)):
        for i, count in enumerate(series):
            h = (height - 30) * math.log10(count + 1) / top
            bars.append(f'<rect x="{10 + i * step + shift:.1f}" y="{height - 15 - h:.1f}" '
                        f'width="{step / 2:.1f}" height="{h:.1f}" fill="{colour}"/>')
    return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<text x="10" y="14">{html.escape(name)}: score 0 to 1</text>{"".join(bars)}</svg>')


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
