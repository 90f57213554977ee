"""The service end to end on each broker (Tansu, Apache Kafka) and a real redis-server.

Every input offset is reconciled against the outputs read back from the topics: exactly one
score record per good event, exactly one dead letter per bad record, alerts exactly where the
model scores the same rows offline at or above its threshold.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import numpy as np
import pytest
import xgboost

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.demo.embedded import free_port
from stream_infer.errors import BrokerError
from stream_infer.offline import simulate
from stream_infer.registry import load_verified, resolve
from stream_infer.service.app import build_runner
from tests.support.configs import MODELS, settings_for
from tests.support.events import bad_records, good_events, keyed
from tests.support.topics import produce, read_all

pytestmark = pytest.mark.integration


def expected_scores(pop: simulate.Population, events: list[dict[str, Any]]) -> dict[str, float]:
    """Score the rows offline: features joined by hand, the booster called directly."""
    verified = load_verified(resolve(MODELS, "demo"))
    booster = xgboost.Booster()
    booster.load_model(bytearray(verified.raw))
    cards = {r["card_id"]: r for r in simulate.card_features(pop)}
    merchants = {r["merchant_id"]: r for r in simulate.merchant_features(pop)}

    def value(event: dict[str, Any], name: str) -> float:
        head, _, field = name.partition(".")
        if not field:
            return float(event[head])
        if head == "attributes":
            return float(event.get("attributes", {}).get(field, math.nan))
        row = (cards if head == "card" else merchants).get(event[f"{head}_id"], {})
        return float(row.get(field, math.nan))

    matrix = np.array([[value(e, f) for f in verified.manifest.features] for e in events],
                      dtype=np.float32)
    scores = booster.inplace_predict(matrix, validate_features=False)
    return {e["event_id"]: float(s) for e, s in zip(events, scores, strict=True)}


def test_every_input_offset_becomes_one_score_or_one_dead_letter(
    broker: Any, redis_server: Any, population: simulate.Population
) -> None:
    run_id = uuid.uuid4().hex[:8]
    settings = settings_for(run_id, broker.bootstrap_servers, redis_server.url)
    kafka = settings.kafka
    events = good_events(population, 1500, seed=11)
    bad = bad_records()
    pairs = keyed(events)
    pairs[100:100] = [(b"bad", raw) for _, raw in bad]
    runner = build_runner(settings)  # creates the topics
    placed = produce(kafka.bootstrap_servers, kafka.input_topics[0], pairs)
    stats = runner.run(max_events=len(pairs))

    scores = read_all(kafka.bootstrap_servers, kafka.scores_topic or "")
    dlq = read_all(kafka.bootstrap_servers, kafka.dlq_topic)
    alerts = read_all(kafka.bootstrap_servers, kafka.alert_topic)

    by_event = {}
    for record in scores:
        doc = json.loads(record.value or b"")
        assert doc["event_id"] not in by_event, "duplicate score"
        by_event[doc["event_id"]] = doc
    assert set(by_event) == {e["event_id"] for e in events}  # lost = 0, duplicates = 0

    bad_offsets = {placed[100 + i]: reason for i, (reason, _) in enumerate(bad)}
    seen = {(int(r.headers["dlq.source.partition"]), int(r.headers["dlq.source.offset"])):
            r.headers["dlq.reason"].decode() for r in dlq}
    assert seen == bad_offsets
    for record in dlq:
        assert record.value == pairs[placed.index(
            (int(record.headers["dlq.source.partition"]),
             int(record.headers["dlq.source.offset"])))][1]
        assert b"4111" not in record.headers["dlq.error"]

    expected = expected_scores(population, events)
    threshold = runner.pipeline.model.threshold
    for event_id, doc in by_event.items():
        assert doc["score"] == expected[event_id]
    alerted = {json.loads(a.value or b"")["event_id"] for a in alerts}
    assert alerted == {e for e, s in expected.items() if s >= threshold}
    assert 0 < len(alerted) < len(events)
    assert all(a.key == json.loads(a.value or b"")["card_id"].encode() for a in alerts)
    features = set(load_verified(resolve(MODELS, "demo")).manifest.features)
    for alert in alerts:
        reasons = json.loads(alert.value or b"")["reasons"]
        contributions = [r["contribution"] for r in reasons]
        assert 1 <= len(reasons) <= 3 and {r["feature"] for r in reasons} <= features
        assert contributions == sorted(contributions, reverse=True) and min(contributions) > 0
    assert stats.counts.dead_lettered == len(bad) and stats.counts.alerted == len(alerted)


def test_a_restarted_consumer_resumes_from_committed_offsets(
    broker: Any, redis_server: Any, population: simulate.Population
) -> None:
    run_id = uuid.uuid4().hex[:8]
    settings = settings_for(run_id, broker.bootstrap_servers, redis_server.url)
    kafka = settings.kafka
    first, second = good_events(population, 300, 21), good_events(population, 200, 22)
    runner = build_runner(settings)
    produce(kafka.bootstrap_servers, kafka.input_topics[0], keyed(first))
    runner.run(max_events=len(first))

    produce(kafka.bootstrap_servers, kafka.input_topics[0], keyed(second))
    restarted = build_runner(settings)
    stats = restarted.run(max_events=len(second))

    assert stats.counts.consumed == len(second)
    ids = [json.loads(r.value or b"")["event_id"] for r in
           read_all(kafka.bootstrap_servers, kafka.scores_topic or "")]
    assert sorted(ids) == sorted(e["event_id"] for e in first + second)


def test_missing_topics_with_creation_off_is_a_clear_error(broker: Any) -> None:
    with pytest.raises(BrokerError, match=r"missing topics \['nope-"):
        ensure_topics({"bootstrap.servers": broker.bootstrap_servers},
                      [f"nope-{uuid.uuid4().hex[:6]}"], create=False, partitions=1,
                      replication_factor=1)


def test_unreachable_broker_is_a_clear_error() -> None:
    with pytest.raises(BrokerError, match="cannot reach Kafka"):
        ensure_topics({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, ["t"], create=True,
                      partitions=1, replication_factor=1, timeout_s=2)


def test_fail_open_scores_without_redis_and_marks_outputs_degraded(broker: Any) -> None:
    run_id = uuid.uuid4().hex[:8]
    settings = settings_for(run_id, broker.bootstrap_servers,
                            f"redis://127.0.0.1:{free_port()}/0")
    kafka = settings.kafka
    pop = simulate.make_population(cards=50, merchants=10, seed=9)
    events = good_events(pop, 200, seed=1)
    runner = build_runner(settings)
    produce(kafka.bootstrap_servers, kafka.input_topics[0], keyed(events))
    stats = runner.run(max_events=len(events))
    scores = [json.loads(r.value or b"") for r in
              read_all(kafka.bootstrap_servers, kafka.scores_topic or "")]
    assert len(scores) == 200 and all(s["degraded"] for s in scores)
    assert all(s["features"]["card.avg_amount_30d"] is None for s in scores)
    assert all(s["features"]["amount"] is not None for s in scores)
    assert stats.counts.degraded == 200
