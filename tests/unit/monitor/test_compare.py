"""Champion against challenger: paired bootstrap intervals, seeded, around the point figures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from stream_infer.monitor import compare as comparing
from stream_infer.monitor.join import JoinState, ModelRows

from .streams import AS_OF, stream

HORIZON, K = 7, 10


def rows(seed: int = 7) -> dict[tuple[str, str], ModelRows]:
    s = stream(seed=seed)
    state = JoinState(ttl_days=None, max_scores=None, max_labels=None)
    for record in s.scores:
        state.add_score(record)
    for label in s.labels:
        state.add_label(label)
    return state.rows()


ROWS = rows()


def run(seed: int = 0, draws: int = 300) -> comparing.Comparison:
    return comparing.compare(ROWS["champ", "1"], ROWS["chal", "1"], as_of_ms=AS_OF,
                             horizon_days=HORIZON, k=K, draws=draws, seed=seed)


def test_points_are_the_figures_on_the_common_mature_events() -> None:
    found = run()
    ours, theirs = comparing.common(ROWS["champ", "1"], ROWS["chal", "1"], as_of_ms=AS_OF,
                                    horizon_days=HORIZON)
    y = ours.labels == 1
    assert (ours.event_ids == theirs.event_ids).all()
    assert found.events == len(ours) and found.frauds == int(y.sum())
    ap = found.average_precision
    assert ap.champion.point == pytest.approx(average_precision_score(y, ours.scores))
    assert ap.challenger.point == pytest.approx(average_precision_score(y, theirs.scores))
    assert ap.lead.point == pytest.approx(ap.challenger.point - ap.champion.point)


def test_intervals_hold_the_point_and_are_reproducible() -> None:
    found = run()
    for figure in (found.average_precision, found.card_precision_at_k):
        for interval in (figure.champion, figure.challenger, figure.lead):
            assert interval.low is not None and interval.high is not None
            assert interval.point is not None
            assert interval.low <= interval.point <= interval.high
    assert run() == found
    assert run(seed=1) != found
    assert found.average_precision.verdict == "challenger ahead"


def test_the_same_model_twice_is_within_the_noise() -> None:
    same = comparing.compare(ROWS["champ", "1"], ROWS["champ", "1"], as_of_ms=AS_OF,
                             horizon_days=HORIZON, k=K, draws=100)
    assert same.average_precision.verdict == "within the noise"
    assert same.average_precision.lead.point == 0


def test_a_bootstrap_draw_is_sklearn_on_the_resampled_rows() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.2
    scores = np.round(rng.random(400), 2)  # ties
    ap = comparing._WeightedAP(y, scores)
    picks = rng.integers(0, 400, 400)
    weights = np.bincount(picks, minlength=400)
    assert ap(weights) == pytest.approx(average_precision_score(y[picks], scores[picks]))
    assert ap(np.ones(400, dtype=np.int64)) == pytest.approx(average_precision_score(y, scores))


def test_no_mature_event_means_not_enough_data() -> None:
    found = comparing.compare(ROWS["champ", "1"], ROWS["chal", "1"], as_of_ms=0, draws=10)
    assert found.events == 0
    assert found.average_precision.verdict == "not enough data"
    assert found.card_precision_at_k.verdict == "not enough data"


def test_card_precision_over_a_few_days_gives_no_verdict() -> None:
    few = comparing.compare(ROWS["champ", "1"], ROWS["chal", "1"], as_of_ms=AS_OF - 10 * 86_400_000,
                            horizon_days=HORIZON, k=K, draws=50)
    assert 0 < few.days < comparing.MIN_DAYS
    assert few.card_precision_at_k.verdict == "too few days"
