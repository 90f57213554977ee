import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.adapters.memory import FunctionModel
from stream_infer.records import Transaction
from stream_infer.score import alert_id, alerted_rows, make_alerts


def test_alert_id_is_a_stable_uuid_that_changes_with_event_or_model() -> None:
    a = alert_id("e1", "m", "1")
    assert uuid.UUID(a).version == 5
    assert a == alert_id("e1", "m", "1")
    others = {alert_id("e2", "m", "1"), alert_id("e1", "m", "2"), alert_id("e1", "n", "1")}
    assert len({a, *others}) == 4


def test_alert_ids_published_before_stay_the_same() -> None:
    """Consumers dedup on alert ids: the id of an event must not change between releases."""
    assert alert_id("e1", "m", "1") == "c89e91f8-a3df-56bb-a719-0583740d0fc4"


@given(st.text(), st.text(), st.text())
@settings(max_examples=300)
def test_alert_id_is_uuid5_of_event_and_model(event_id: str, name: str, version: str) -> None:
    namespace = uuid.UUID("6f1d4f0e-2b8a-5c47-9a53-3d0c2f9b7e11")
    expected = str(uuid.uuid5(namespace, f"{event_id}\x1f{name}\x1f{version}"))
    assert alert_id(event_id, name, version) == expected


def test_threshold_is_inclusive() -> None:
    scores = np.float32([0.1, 0.5, 0.49999, 0.9])
    assert alerted_rows(scores, 0.5).tolist() == [1, 3]


def test_alerts_carry_model_metadata_and_event_time_in_ms() -> None:
    model = FunctionModel(lambda m: m[:, 0], ("amount",), threshold=0.3, name="fraud", version="7")
    event = Transaction(event_id="e", event_time=1_700_000_000_123, card_id="c", merchant_id="m",
                        amount=1.0, currency="EUR")
    (alert,) = make_alerts([event], np.float32([0.5]), np.array([0]), model, scored_at=9,
                           degraded=True)
    assert (alert.model_name, alert.model_version, alert.threshold) == ("fraud", "7", 0.3)
    assert (alert.event_time, alert.scored_at, alert.degraded, alert.card_id) == (
        1_700_000_000_123, 9, True, "c")


def test_top_reasons_are_the_largest_positive_contributions_in_order() -> None:
    from stream_infer.score import top_reasons

    contribs = np.float32([[0.5, -1.0, 2.0, 0.1, -3.0], [-0.2, -0.1, -0.3, -0.4, 9.0]])
    values = np.float32([[1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0]])
    first, second = top_reasons(contribs, values, ["a", "b", "c", "d"], k=2)
    assert [(r.feature, r.value, r.contribution) for r in first] == [
        ("c", None, 2.0), ("a", 1.0, 0.5)]
    assert second == []  # nothing pushed the score up; the bias (last column) is not a reason


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_top_reasons_rank_like_a_stable_descending_sort(data: st.DataObject) -> None:
    """Ties are common (a feature unused by every tree contributes exactly 0): the ranking
    must be Python's stable ``sorted(..., reverse=True)``, feature order among equals."""
    from stream_infer.score import top_reasons

    rows, columns = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 8))
    k = data.draw(st.integers(1, columns + 1))
    pool = st.sampled_from([0.0, -0.0, 0.25, 0.25, 1.5, -2.0, 3e-8, 7.0])
    contribs = np.float32(data.draw(st.lists(st.lists(pool, min_size=columns + 1,
                                                      max_size=columns + 1),
                                             min_size=rows, max_size=rows)))
    values = np.float32(np.arange(rows * columns).reshape(rows, columns) / 7)
    names = [f"f{j}" for j in range(columns)]
    got = top_reasons(contribs, values, names, k)
    for row, reasons in zip(range(rows), got, strict=True):
        push = contribs[row, :-1].tolist()
        expected = [j for j in sorted(range(columns), key=lambda j: push[j], reverse=True)[:k]
                    if push[j] > 0]
        assert [(r.feature, r.contribution, r.value) for r in reasons] == [
            (names[j], push[j], float(str(values[row, j]))) for j in expected]
