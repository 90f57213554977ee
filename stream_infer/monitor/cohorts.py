"""Realized accuracy of one model version over a cohort of events, from joined rows. Pure.

A cohort is a UTC day of event time, or any set of days (a report's range, a metrics
window). Over every row of a cohort:

- **label coverage**: labelled events / events;
- **precision** of alerts: labelled frauds among the labelled alerted events;
- **recall**: alerted events among the labelled frauds;
- **label delay**: from the event to its first label, p50/p90/p99 in hours (numpy's
  linear interpolation), over the labelled events.

A day is **mature** once ``horizon_days`` have passed since it ended (``as_of``). Only there
does an event without a label count as genuine, and only there are the figures that rank every
event computed: **AUC**, **average precision** (scikit-learn's definitions) and **card
precision@k** (each day, the ``k`` cards with the highest score that day, the share of them
with a fraud that day, over ``k``: :func:`stream_infer.offline.backtest.card_precision_by_day`,
the backtest's definition; a cohort of several days gives the mean over its mature days).
Before maturity these are None: an unlabelled event may still turn out fraudulent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from ..offline.backtest import average_precision, card_precision_by_day, roc_auc
from .join import DAY_MS, ModelRows

HOUR_MS = 3_600_000
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
"""The metrics' rolling cohorts: the last N UTC days of event time, today included."""
MATURED_WINDOW = ("matured_7d", 7)
"""And the last 7 mature days."""


@dataclass(frozen=True, slots=True)
class Cohort:
    """One model version's figures over one cohort (None: nothing to compute them on)."""

    model: str
    version: str
    cohort: str
    """A UTC date, ``all`` (a report's whole range) or a window name."""
    days: int
    mature_days: int
    events: int
    labelled: int
    label_coverage: float | None
    frauds: int
    """Labelled frauds."""
    alerts: int
    labelled_alerts: int
    precision: float | None
    recall: float | None
    matured_events: int
    """Events of the mature days: the rows of AUC, AP and card precision@k."""
    auc: float | None
    average_precision: float | None
    card_precision_at_k: float | None
    k: int
    delay_p50_h: float | None
    delay_p90_h: float | None
    delay_p99_h: float | None
    last_label_ms: int | None
    """The newest label time among the cohort's labels."""


def mature(day: int, as_of_ms: int, horizon_days: int) -> bool:
    """Day ``day`` (UTC day number) ended ``horizon_days`` or more before ``as_of_ms``."""
    return (day + 1 + horizon_days) * DAY_MS <= as_of_ms


def day_name(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, UTC).date().isoformat()


def by_day(rows: ModelRows, *, as_of_ms: int, horizon_days: int = 7, k: int = 100
           ) -> list[Cohort]:
    """A cohort per UTC day of ``rows``, in order."""
    days = rows.days
    return [cohort(rows.take(days == day), day_name(int(day)), as_of_ms=as_of_ms,
                   horizon_days=horizon_days, k=k) for day in np.unique(days).tolist()]


def windows(rows: ModelRows, *, as_of_ms: int, horizon_days: int = 7, k: int = 100
            ) -> list[Cohort]:
    """The metrics' cohorts: :data:`WINDOWS` ending on the day of ``as_of_ms``, then the
    last 7 mature days (:data:`MATURED_WINDOW`)."""
    today, days = as_of_ms // DAY_MS, rows.days
    found = [cohort(rows.take((days > today - n) & (days <= today)), name, as_of_ms=as_of_ms,
                    horizon_days=horizon_days, k=k) for name, n in WINDOWS.items()]
    name, n = MATURED_WINDOW
    last = as_of_ms // DAY_MS - horizon_days - 1
    found.append(cohort(rows.take((days > last - n) & (days <= last)), name,
                        as_of_ms=as_of_ms, horizon_days=horizon_days, k=k))
    return found


def cohort(rows: ModelRows, name: str, *, as_of_ms: int, horizon_days: int = 7,
           k: int = 100) -> Cohort:
    """The figures of ``rows`` as one cohort named ``name``."""
    labelled = rows.labels >= 0
    fraud = rows.labels == 1
    alerted = rows.alerted
    days = np.unique(rows.days)
    ripe = np.array([mature(int(d), as_of_ms, horizon_days) for d in days.tolist()], dtype=bool)
    in_mature = np.isin(rows.days, days[ripe])
    ranked = _ranked(rows.take(in_mature), k)
    delays = (rows.first_label_ms - rows.event_ms)[labelled] / HOUR_MS
    p50, p90, p99 = (np.percentile(delays, [50, 90, 99]).tolist() if len(delays)
                     else (None, None, None))
    return Cohort(
        model=rows.model, version=rows.version, cohort=name,
        days=len(days), mature_days=int(ripe.sum()),
        events=len(rows), labelled=int(labelled.sum()),
        label_coverage=_share(int(labelled.sum()), len(rows)),
        frauds=int(fraud.sum()), alerts=int(alerted.sum()),
        labelled_alerts=int((alerted & labelled).sum()),
        precision=_share(int((alerted & fraud).sum()), int((alerted & labelled).sum())),
        recall=_share(int((alerted & fraud).sum()), int(fraud.sum())),
        matured_events=int(in_mature.sum()), k=k, **ranked,
        delay_p50_h=p50, delay_p90_h=p90, delay_p99_h=p99,
        last_label_ms=int(rows.label_ms.max()) if labelled.any() else None)


def card_precision(rows: ModelRows, k: int) -> dict[int, float]:
    """Card precision@k of each day of ``rows``, unlabelled events counted as genuine (so:
    of mature rows only)."""
    if not len(rows):
        return {}
    fraud = (rows.labels == 1).astype(np.int64)
    per_day = card_precision_by_day(rows.scores, fraud, rows.cards.astype(str), rows.days, k)
    return dict(zip(np.unique(rows.days).tolist(), [d.plain for d in per_day], strict=True))

def _ranked(rows: ModelRows, k: int) -> dict[str, float | None]:
    """AUC, average precision and card precision@k of mature rows, unlabelled as genuine."""
    y = rows.labels == 1
    both = bool(y.any()) and not bool(y.all())
    per_day = card_precision(rows, k)
    return {"auc": roc_auc(y, rows.scores) if both else None,
            "average_precision": average_precision(y, rows.scores) if y.any() else None,
            "card_precision_at_k": float(np.mean(list(per_day.values()))) if per_day else None}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None

