"""``monitor report``: realized accuracy per model version and day, and the champion against
each challenger, as a terminal table, JSON, and an HTML page. Pure but for the page's charts
(matplotlib, the ``report`` extra, as the backtest's: :mod:`stream_infer.offline.charts`).

The champion is the model version that scored the most events as the served model (score
records with ``shadow`` false); every version that scored as a shadow is a challenger.

**Drift.** Given the scores' feature vectors (:class:`FeatureVectors`, one row per model
version and event, the one the join keeps) and each model's training profile from its
manifest (:func:`load_profiles`), the report gives the PSI of every profiled feature and of the
score against training, beside what no drift would give for that many rows: the backtest's
:func:`~stream_infer.offline.backtest.drift_against_training` on those rows, so the offline
check is :func:`stream_infer.drift.psi` of the same vectors.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ..drift import FeatureDrift, Profile
from ..errors import ModelError
from ..records import ScoreRecord
from ..registry import read_manifest
from .cohorts import Cohort, by_day, cohort, mature
from .compare import Comparison, Interval, compare
from .join import DAY_MS, JoinState, ModelKey, ModelRows

PSI_MAJOR = 0.25
"""PSI above which a feature's distribution has shifted markedly (the usual rule of thumb)."""


@dataclass(frozen=True, slots=True)
class ReportOptions:
    from_ms: int
    to_ms: int
    as_of_ms: int
    horizon_days: int = 7
    k: int = 100
    draws: int = 1000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True, slots=True)
class MonitorReport:
    context: dict[str, Any]
    models: list[dict[str, Any]]
    """Per model version: ``model``, ``version``, ``role``, ``days`` (a :class:`Cohort` per
    day) and ``all`` (the whole range as one cohort)."""
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drift: dict[ModelKey, Drift] = field(default_factory=dict)
    """PSI against training per model version that has a profile and rows."""


@dataclass(frozen=True, slots=True)
class Drift:
    """One model version's PSI against its training profile over ``rows`` score records:
    each profiled feature, then the score."""

    rows: int
    features: list[FeatureDrift]


class FeatureVectors:
    """The feature vectors and scores of score records, per model version: per event, the
    record :class:`~.join.JoinState` keeps (the earliest ``scored_at``, then the lower score),
    of events in ``[from_ms, to_ms)`` when given. Undecodable bytes are skipped (the feed
    counts them)."""

    def __init__(self, from_ms: int | None = None, to_ms: int | None = None) -> None:
        self.from_ms, self.to_ms = from_ms, to_ms
        self._held: dict[ModelKey, dict[str, ScoreRecord]] = {}
        self._decode = msgspec.json.Decoder(ScoreRecord).decode

    def add_bytes(self, value: bytes | None) -> None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            self.add(self._decode(value or b""))

    def add(self, record: ScoreRecord) -> None:
        if (self.from_ms is not None and record.event_time < self.from_ms) or (
                self.to_ms is not None and record.event_time >= self.to_ms):
            return
        held = self._held.setdefault((record.model_name, record.model_version), {})
        kept = held.get(record.event_id)
        if kept is None or (record.scored_at, record.score) < (kept.scored_at, kept.score):
            held[record.event_id] = record

    def models(self) -> list[ModelKey]:
        return sorted(self._held)

    def columns(self, key: ModelKey, features: Iterable[str]) -> dict[str, np.ndarray[Any, Any]]:
        """``feature:<name>`` for each of ``features`` (NaN where a record lacks it or holds
        null) and ``score:<name>:<version>``, rows by event id."""
        records = [self._held[key][e] for e in sorted(self._held.get(key, {}))]
        out = {f"feature:{name}": np.array(
            [_value(r.features.get(name)) for r in records], dtype=np.float64)
            for name in features}
        out[f"score:{key[0]}:{key[1]}"] = np.array([r.score for r in records], np.float64)
        return out


def _value(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def load_profiles(models_dir: Path, keys: Iterable[ModelKey]) -> dict[ModelKey, Profile]:
    """The training profile in the manifest of each model version found under
    ``models_dir`` (``<name>/<version>/manifest.json``); versions without one are left out."""
    found: dict[ModelKey, Profile] = {}
    for name, version in keys:
        directory = models_dir / name / version
        try:
            data = read_manifest(directory).profile if directory.is_dir() else {}
            if data:
                found[name, version] = Profile.from_json(data)
        except ModelError:
            continue
    return found


def drift(vectors: FeatureVectors, profiles: Mapping[ModelKey, Profile]
          ) -> dict[ModelKey, Drift]:
    """PSI against training of each model version with both rows and a profile."""
    from ..offline.backtest import drift_against_training

    out: dict[ModelKey, Drift] = {}
    for key in vectors.models():
        profile = profiles.get(key)
        if profile is None:
            continue
        columns = vectors.columns(key, profile.features)
        rows = len(columns[f"score:{key[0]}:{key[1]}"])
        if rows:
            out[key] = Drift(rows, drift_against_training(columns, f"{key[0]}:{key[1]}",
                                                          profile))
    return out


def build(state: JoinState, options: ReportOptions,
          context: Mapping[str, Any] | None = None,
          drift: Mapping[ModelKey, Drift] | None = None) -> MonitorReport:
    """The report on the events of ``[from_ms, to_ms)`` held in ``state``, with ``drift``
    (:func:`drift`) when given."""
    o = options
    rows = state.rows(o.from_ms, o.to_ms)
    champion = champion_of(rows)
    models = []
    order = {"champion": 0, "challenger": 1}
    for key, model_rows in sorted(rows.items(), key=lambda item: (
            order.get(_role(item[0], champion, rows), 2), item[0])):
        kw: dict[str, Any] = {"as_of_ms": o.as_of_ms, "horizon_days": o.horizon_days, "k": o.k}
        models.append({"model": key[0], "version": key[1], "role": _role(key, champion, rows),
                       "days": by_day(model_rows, **kw), "all": cohort(model_rows, "all", **kw)})
    comparisons = [compare(rows[champion], rows[key], as_of_ms=o.as_of_ms,
                           horizon_days=o.horizon_days, k=o.k, draws=o.draws, seed=o.seed,
                           confidence=o.confidence)
                   for key in rows if champion and key != champion and rows[key].shadow.any()]
    last_mature = datetime.fromtimestamp(
        ((o.as_of_ms // DAY_MS) - o.horizon_days) * DAY_MS / 1000, UTC).date()
    notes = [f"AUC, average precision and card precision@{o.k} count an event without a label "
             f"as genuine, so they are computed only on days mature for {o.horizon_days} days "
             f"(days before {last_mature.isoformat()}, as of {_when(o.as_of_ms)}); on younger "
             "days they read n/a. Precision, recall and the label delay use labelled events "
             "only; coverage is labelled / scored."]
    facts = {"from": _when(o.from_ms), "to": _when(o.to_ms), "as_of": _when(o.as_of_ms),
             "maturity_horizon_days": o.horizon_days, "k": o.k, **(context or {})}
    if drift:
        notes.append(f"PSI compares each feature's distribution over the model's scored events "
                     f"with its training rows' (the manifest's profile); above {PSI_MAJOR} is a "
                     "marked shift, and 'no-drift p99' is what a sample of that many rows of "
                     "the training population stays under 99 times in 100.")
    return MonitorReport(facts, models, comparisons, notes, dict(drift or {}))


def champion_of(rows: Mapping[ModelKey, ModelRows]) -> ModelKey | None:
    """The version that served (``shadow`` false) the most events; ties to the newest name."""
    served = {key: int((~r.shadow).sum()) for key, r in rows.items()}
    best = max(served.items(), key=lambda item: (item[1], item[0]), default=None)
    return best[0] if best and best[1] else None


def _role(key: ModelKey, champion: ModelKey | None, rows: Mapping[ModelKey, ModelRows]) -> str:
    if key == champion:
        return "champion"
    return "challenger" if rows[key].shadow.any() else "served earlier"


COLUMNS = ("cohort", "mature", "events", "labelled", "coverage", "alerts", "precision", "recall",
           "AUC", "AP", "CP@k", "delay h p50/p90/p99")


def table(report: MonitorReport) -> str:
    """Each model's days and whole range, then the comparisons, then the notes."""
    out = [f"{k}: {v}" for k, v in report.context.items()]
    for model in report.models:
        out += ["", f"{model['model']}:{model['version']} ({model['role']})"]
        rows = [[_cell(c, name) for name in COLUMNS] for c in [*model["days"], model["all"]]]
        out += _grid([list(COLUMNS), *rows])
        found = report.drift.get((model["model"], model["version"]))
        if found is not None:
            out += drift_lines(found)
    for comparison in report.comparisons:
        out += ["", *comparison_lines(comparison)]
    return "\n".join([*out, "", *(f"NOTE: {n}" for n in report.notes)])


def comparison_lines(c: Comparison) -> list[str]:
    head = (f"{c.challenger} (challenger) against {c.champion} (champion): {c.events:,} "
            f"matured events both scored, {c.frauds:,} frauds, {c.days} days; "
            f"{c.draws:,} paired bootstrap draws (seed {c.seed}), "
            f"{c.confidence:.0%} intervals")
    grid = [["", "champion", "challenger", "lead", "verdict"]]
    for name, fig in ((" average precision", c.average_precision),
                      (f" card precision@{c.k}", c.card_precision_at_k)):
        grid.append([name, _interval(fig.champion), _interval(fig.challenger),
                     _interval(fig.lead, signed=True), fig.verdict])
    return [head, *_grid(grid)]


def drift_lines(d: Drift) -> list[str]:
    """PSI against training, a feature per line, largest first."""
    grid = [["  PSI against training", "PSI", "no-drift p99", "shift"]]
    for f in sorted(d.features, key=lambda f: -f.psi):
        shift = ("marked" if f.psi > PSI_MAJOR else
                 "beyond noise" if f.psi > f.no_drift.p99 else "-")
        grid.append([f"  {f.feature}", f"{f.psi:.4f}", f"{f.no_drift.p99:.4f}", shift])
    return [f"  PSI over {d.rows:,} scored events against the training profile",
            *_grid(grid)]


def as_json(report: MonitorReport) -> dict[str, Any]:
    """The report as JSON-ready data; a model with a profile has ``drift``: ``rows`` and,
    per feature (and ``score``), ``psi`` and the no-drift ``expected`` and ``p99``."""
    def model(m: dict[str, Any]) -> dict[str, Any]:
        out = {"model": m["model"], "version": m["version"], "role": m["role"],
               "all": asdict(m["all"]), "days": [asdict(d) for d in m["days"]]}
        found = report.drift.get((m["model"], m["version"]))
        if found is not None:
            out["drift"] = {"rows": found.rows, "features": [
                {"feature": f.feature, "psi": f.psi, "expected": f.no_drift.expected,
                 "p99": f.no_drift.p99} for f in found.features]}
        return out

    return {**report.context, "notes": report.notes,
            "models": [model(m) for m in report.models],
            "comparisons": [asdict(c) for c in report.comparisons]}


def html_page(report: MonitorReport, rows: Mapping[ModelKey, ModelRows],
              options: ReportOptions) -> str:
    """A self-contained page: the facts, the notes, the table, and the charts (precision /
    recall of the mature events, card precision@k per mature day), inline SVG. Raises
    :class:`~stream_infer.errors.ConfigError` naming the extra when matplotlib is missing."""
    from ..offline import charts

    charts.require()
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                    for k, v in report.context.items())
    notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in report.notes)
    sections = "".join(f"<h2>{html.escape(title)}</h2>{charts.svg(figure, f'chart{i}-')}"
                       for i, (title, figure) in enumerate(_figures(report, rows,
                                                                    options).items()))
    return ("<!doctype html><meta charset=utf-8><title>stream-infer monitor</title>"
            "<style>body{font:14px system-ui;margin:2em;max-width:70em}"
            "pre{background:#f6f6f6;padding:1em}svg{max-width:100%;height:auto}"
            ".note{border-left:3px solid #888;padding-left:1em}</style>"
            f"<h1>Realized accuracy</h1><ul>{facts}</ul>{notes}"
            f"<pre>{html.escape(table(report))}</pre>{sections}")


def _figures(report: MonitorReport, rows: Mapping[ModelKey, ModelRows],
             options: ReportOptions) -> dict[str, Any]:
    from ..offline import charts
    from ..offline.backtest import curves

    out: dict[str, Any] = {}
    lines = []
    for (name, version), r in rows.items():
        ripe = r.take(np.array([mature(int(d), options.as_of_ms, options.horizon_days)
                                for d in r.days.tolist()], dtype=bool))
        found = curves(ripe.scores, (ripe.labels == 1).astype(np.int64))
        if found.positives:
            precision, recall = found.precision_recall()
            lines.append(charts.Line(label=f"{name}:{version}", x=recall, y=precision))
    if lines:
        out["Precision / recall on mature days"] = charts.precision_recall(lines)
    days = sorted({c.cohort for m in report.models for c in m["days"]
                   if c.card_precision_at_k is not None})
    if days:
        series = {f"{m['model']}:{m['version']}": [_on(m["days"], day) for day in days]
                  for m in report.models}
        out[f"Card precision@{options.k} per mature day"] = charts.card_precision_by_day(
            days, series, k=options.k)
    for (name, version), measured in report.drift.items():
        out[f"PSI against training: {name}:{version}"] = charts.psi_by_feature(
            {f.feature: f.psi for f in measured.features},
            {f.feature: f.no_drift.p99 for f in measured.features},
            title=f"{name}:{version}: PSI of {measured.rows:,} scored events against training")
    return out


def _on(days: list[Cohort], day: str) -> float:
    found = [c.card_precision_at_k for c in days if c.cohort == day]
    return found[0] if found and found[0] is not None else float("nan")


def _cell(c: Cohort, name: str) -> str:
    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if name == "delay h p50/p90/p99":
        return ("n/a" if c.delay_p50_h is None else
                f"{c.delay_p50_h:.1f}/{c.delay_p90_h:.1f}/{c.delay_p99_h:.1f}")
    values: dict[str, str] = {
        "cohort": c.cohort, "events": f"{c.events:,}", "labelled": f"{c.labelled:,}",
        "mature": "yes" if c.mature_days == c.days else ("no" if not c.mature_days else
                                                        f"{c.mature_days}/{c.days} d"),
        "coverage": num(c.label_coverage), "alerts": f"{c.alerts:,}",
        "precision": num(c.precision), "recall": num(c.recall), "AUC": num(c.auc),
        "AP": num(c.average_precision), "CP@k": num(c.card_precision_at_k)}
    return values[name]


def _interval(i: Interval, *, signed: bool = False) -> str:
    if i.point is None:
        return "n/a"
    point = f"{i.point:+.4f}" if signed else f"{i.point:.4f}"
    if i.low is None or i.high is None:
        return point
    return f"{point} [{i.low:+.4f}, {i.high:+.4f}]" if signed else \
        f"{point} [{i.low:.4f}, {i.high:.4f}]"


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                      for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

