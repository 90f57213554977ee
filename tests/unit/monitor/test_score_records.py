"""Score records carry the model's threshold and whether the score reached it, decided
exactly as the champion's alerts are."""

from __future__ import annotations

import msgspec
import numpy as np

from stream_infer.adapters.memory import FunctionModel
from stream_infer.records import ScoreRecord, Transaction
from stream_infer.score import alerted_rows, make_score_records


def test_alerted_is_what_raised_an_alert_even_at_a_float32_edge() -> None:
    threshold = 0.5041022896766663  # not a float32: its nearest float32 is below it
    scores = np.float32([0.1, threshold, 0.9, np.nextafter(np.float32(threshold), 0)])
    model = FunctionModel(lambda m: m[:, 0], ("amount",), threshold=threshold)
    events = [Transaction(event_id=f"e{i}", event_time=1, card_id="c", merchant_id="m",
                          amount=1.0, currency="EUR") for i in range(len(scores))]
    records = make_score_records(events, scores, np.zeros((len(scores), 1), np.float32), model,
                                 scored_at=2, degraded=False, shadow=True)
    assert [r.alerted for r in records] == [
        i in set(alerted_rows(scores, threshold).tolist()) for i in range(len(scores))]
    assert [r.alerted for r in records] == [False, True, True, False]
    assert {r.threshold for r in records} == {threshold}


def test_a_record_written_before_the_fields_reads_with_none() -> None:
    old = {"event_id": "e", "card_id": "c", "score": 0.5, "model_name": "m",
           "model_version": "1", "event_time": 1, "scored_at": 2, "features": {},
           "label": None, "degraded": False, "shadow": False}
    record = msgspec.json.decode(msgspec.json.encode(old), type=ScoreRecord)
    assert (record.threshold, record.alerted) == (None, None)
