"""Every figure of the join equals an offline computation on the same rows (scikit-learn,
pandas, numpy), whatever order the scores and labels arrive in, twice or after a restart."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from stream_infer.features.labels import Label
from stream_infer.monitor import cohorts
from stream_infer.monitor.feed import Feed
from stream_infer.monitor.join import JoinState
from stream_infer.monitor.report import ReportOptions, as_json, build
from stream_infer.records import ScoreRecord

from .streams import AS_OF, DAY_MS, HOUR_MS, Stream, encoded, shuffled, stream, truth

HORIZON, K = 7, 10
S = stream()


def joined(records: list[ScoreRecord | Label], state: JoinState | None = None) -> JoinState:
    state = state or JoinState(ttl_days=None, max_scores=None, max_labels=None)
    for record in records:
        if isinstance(record, ScoreRecord):
            state.add_score(record)
        else:
            state.add_label(record)
    return state


def frame(s: Stream, model: str) -> pd.DataFrame:
    """The model's rows with their final labels, built without the join."""
    known = truth(s)
    rows = [{"event_id": r.event_id, "card": r.card_id, "score": r.score,
             "alerted": r.alerted, "event_ms": r.event_time, "day": r.event_time // DAY_MS,
             "label": known.get(r.event_id, (-1, -1, -1))[0],
             "first_ms": known.get(r.event_id, (-1, -1, -1))[1],
             "label_ms": known.get(r.event_id, (-1, -1, -1))[2]}
            for r in s.scores if r.model_name == model]
    return pd.DataFrame(rows)


def card_precision(df: pd.DataFrame, k: int) -> float:
    """Per day: top-k cards by their highest score, the share with a fraud that day (over k),
    ties to the smaller card id; the mean over days."""
    per_day = []
    for _, day in df.groupby("day"):
        cards = day.groupby("card").agg(best=("score", "max"), fraud=("label", "max"))
        top = cards.reset_index().sort_values(["best", "card"], ascending=[False, True]).head(k)
        per_day.append(float((top["fraud"] == 1).sum()) / k)
    return float(np.mean(per_day))


def expected(df: pd.DataFrame) -> dict[str, Any]:
    labelled = df[df["label"] >= 0]
    ripe = df[(df["day"] + 1 + HORIZON) * DAY_MS <= AS_OF]
    y = (ripe["label"] == 1).astype(int)
    delays = (labelled["first_ms"] - labelled["event_ms"]) / HOUR_MS
    return {
        "events": len(df), "labelled": len(labelled),
        "label_coverage": len(labelled) / len(df),
        "precision": precision_score(labelled["label"], labelled["alerted"]),
        "recall": recall_score(labelled["label"], labelled["alerted"]),
        "auc": roc_auc_score(y, ripe["score"]) if 0 < y.sum() < len(y) else None,
        "average_precision": average_precision_score(y, ripe["score"]) if y.sum() else None,
        "card_precision_at_k": card_precision(ripe, K) if len(ripe) else None,
        "delays": np.percentile(delays, [50, 90, 99]).tolist(),
        "last_label_ms": int(labelled["label_ms"].max()),
    }


def assert_figures(c: cohorts.Cohort, want: dict[str, Any]) -> None:
    assert (c.events, c.labelled) == (want["events"], want["labelled"])
    for name in ("label_coverage", "precision", "recall", "auc", "average_precision",
                 "card_precision_at_k"):
        got, exp = getattr(c, name), want[name]
        assert (got is None) == (exp is None), (c.cohort, name)
        if exp is not None:
            assert got == pytest.approx(exp, abs=1e-12), (c.cohort, name)
    assert [c.delay_p50_h, c.delay_p90_h, c.delay_p99_h] == pytest.approx(want["delays"])
    assert c.last_label_ms == want["last_label_ms"]


@pytest.mark.parametrize("model", ["champ", "chal"])
def test_every_figure_equals_an_offline_computation(model: str) -> None:
    rows = joined(shuffled(S, seed=1)).rows()[(model, "1")]
    df = frame(S, model)
    days = cohorts.by_day(rows, as_of_ms=AS_OF, horizon_days=HORIZON, k=K)
    assert [c.cohort for c in days] == [cohorts.day_name(d) for d in sorted(df["day"].unique())]
    for c, (_, day) in zip(days, df.groupby("day"), strict=True):
        assert_figures(c, expected(day))
        assert (c.mature_days == 1) == ((day["day"].iloc[0] + 1 + HORIZON) * DAY_MS <= AS_OF)
    whole = cohorts.cohort(rows, "all", as_of_ms=AS_OF, horizon_days=HORIZON, k=K)
    assert_figures(whole, expected(df))
    assert 0 < whole.mature_days < whole.days  # both kinds of day are in the stream


def test_young_days_have_no_ranking_figures() -> None:
    rows = joined(S.scores + S.labels).rows()[("champ", "1")]
    young = [c for c in cohorts.by_day(rows, as_of_ms=AS_OF, horizon_days=HORIZON, k=K)
             if not c.mature_days]
    assert young
    assert all(c.auc is None and c.average_precision is None and c.card_precision_at_k is None
               and c.precision is not None for c in young)


def report(state: JoinState) -> dict[str, Any]:
    options = ReportOptions(from_ms=0, to_ms=AS_OF, as_of_ms=AS_OF, horizon_days=HORIZON, k=K,
                            draws=50)
    return as_json(build(state, options))


def test_order_duplicates_and_a_restart_change_no_figure() -> None:
    straight = report(joined(S.scores + S.labels))
    assert report(joined(shuffled(S, seed=2))) == straight
    twice = joined(shuffled(S, seed=3))
    assert report(joined(shuffled(S, seed=4), twice)) == straight
    # a restart: the first process read half; the next one reads everything again
    records = shuffled(S, seed=5)
    first = joined(records[: len(records) // 2])
    assert report(first) != straight
    assert report(joined(shuffled(S, seed=6))) == straight


def test_a_restart_through_the_wire_changes_no_figure() -> None:
    wire = encoded(shuffled(S, seed=8))
    before = Feed(JoinState(ttl_days=None, max_scores=None, max_labels=None))
    for kind, value in wire[: len(wire) // 3]:
        (before.score if kind == "scores" else before.label)(value)
    after = Feed(JoinState(ttl_days=None, max_scores=None, max_labels=None))
    for kind, value in [*wire, *wire[: len(wire) // 3]]:  # re-read, and a replayed stretch
        (after.score if kind == "scores" else after.label)(value)
    assert report(after.state) == report(joined(S.scores + S.labels))
    assert after.counts["labels", "undecodable"] == 0
    assert after.counts["scores", "applied"] == len(S.scores)


def test_the_ttl_keeps_the_same_days_whatever_the_order() -> None:
    ttl = 6
    a = joined(shuffled(S, seed=9), JoinState(ttl_days=ttl, max_scores=None, max_labels=None))
    b = joined(shuffled(S, seed=10), JoinState(ttl_days=ttl, max_scores=None, max_labels=None))
    assert report(a) == report(b)
    newest = max(r.event_time for r in S.scores) // DAY_MS
    kept = {int(d) for r in a.rows().values() for d in np.unique(r.days)}
    assert kept == set(range(newest - ttl, newest + 1))
    rows = a.rows()[("champ", "1")]
    full = frame(S, "champ")
    whole = cohorts.cohort(rows, "all", as_of_ms=AS_OF, horizon_days=HORIZON, k=K)
    assert_figures(whole, expected(full[full["day"] >= newest - ttl]))
    assert a.evicted["scores"] > 0


def test_the_caps_bound_the_state() -> None:
    state = joined(S.scores + S.labels, JoinState(ttl_days=None, max_scores=500, max_labels=300))
    assert state.scores <= 500
    assert state.labels <= 300
    assert state.evicted["scores_cap"] and state.evicted["labels_cap"]


def test_windows_cover_the_last_days_and_the_last_mature_week() -> None:
    rows = joined(S.scores + S.labels).rows()[("champ", "1")]
    found = {c.cohort: c for c in cohorts.windows(rows, as_of_ms=AS_OF, horizon_days=HORIZON,
                                                  k=K)}
    df = frame(S, "champ")
    today = AS_OF // DAY_MS
    assert found["7d"].events == int((df["day"] > today - 7).sum())
    last = today - HORIZON - 1
    week = df[(df["day"] > last - 7) & (df["day"] <= last)]
    assert found["matured_7d"].mature_days == found["matured_7d"].days == 7
    assert_figures(found["matured_7d"], expected(week))
