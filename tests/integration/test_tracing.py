"""Spans read back from the traces topic: OTLP protobuf, batch -> stage structure, links to
the inputs' traces, alerts continuing the trace, and never a card number."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.adapters.otel import Tracing
from stream_infer.demo.embedded import free_port
from stream_infer.offline import simulate
from stream_infer.service.app import build_runner
from tests.support.configs import settings_for
from tests.support.events import keyed
from tests.support.topics import produce, read_all, spans

pytestmark = pytest.mark.integration
PAN = "4111111111111111"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def test_batches_are_traced_to_the_traces_topic(
    broker: Any, redis_server: Any, population: simulate.Population,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run_id = uuid.uuid4().hex[:8]
    settings = settings_for(run_id, broker.bootstrap_servers, redis_server.url, tracing={
        "kafka_topic": f"traces-{run_id}", "schedule_delay_ms": 100})
    kafka = settings.kafka
    events = list(simulate.transactions(population, count=400, seed=31))
    pairs = keyed(events)
    pairs += [(PAN.encode(), json.dumps({**events[0], "card_id": PAN, "merchant_id": PAN,
                                         "attributes": {PAN: 1.0}}).encode())]
    headers: list[Any] = [None] * len(pairs)
    for i in range(0, len(pairs), 5):
        headers[i] = [("traceparent", f"00-{TRACE_ID}-{i + 1:016x}-01".encode())]
    headers[1] = [("traceparent", b"garbage")]

    tracing = Tracing(settings)
    runner = build_runner(settings, tracer=tracing.tracer)
    produce(kafka.bootstrap_servers, kafka.input_topics[0], pairs, headers=headers)
    stats = runner.run(max_events=len(pairs))
    tracing.shutdown()

    exported = spans(kafka.bootstrap_servers, f"traces-{run_id}")
    batches = {s.span_id: s for s in exported if s.name == "batch"}
    assert len(batches) == stats.batches
    children: dict[bytes, list[Any]] = {}
    for span in exported:
        if span.name != "batch":
            children.setdefault(span.parent_span_id, []).append(span)
    for span_id, batch in batches.items():
        kids = children[span_id]
        assert {k.name for k in kids} <= {"decode", "enrich", "score", "explain", "emit"}
        assert {"decode", "emit"} <= {k.name for k in kids}
        assert all(k.trace_id == batch.trace_id for k in kids)
        assert all(batch.start_time_unix_nano <= k.start_time_unix_nano
                   and k.end_time_unix_nano <= batch.end_time_unix_nano for k in kids)
        assert sum(k.end_time_unix_nano - k.start_time_unix_nano for k in kids) <= (
            batch.end_time_unix_nano - batch.start_time_unix_nano)
        attributes = {a.key for a in batch.attributes}
        assert {"stream_infer.partitions", "stream_infer.model.version"} <= attributes
    linked = {link.trace_id.hex() for b in batches.values() for link in b.links}
    assert linked == {TRACE_ID}

    batch_traces = {b.trace_id.hex() for b in batches.values()}
    alerts = read_all(kafka.bootstrap_servers, kafka.alert_topic)
    assert alerts
    for alert in alerts:
        assert alert.headers["traceparent"].decode().split("-")[1] in batch_traces

    everything = b"".join(r.value or b"" for r in
                          read_all(kafka.bootstrap_servers, f"traces-{run_id}"))
    assert PAN.encode() not in everything
    assert PAN not in caplog.text
    dead = read_all(kafka.bootstrap_servers, kafka.dlq_topic)
    assert len(dead) == 1 and PAN.encode() not in dead[0].headers["dlq.error"]


def test_a_dead_otlp_endpoint_changes_nothing(
    broker: Any, redis_server: Any, population: simulate.Population,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    run_id = uuid.uuid4().hex[:8]
    settings = settings_for(run_id, broker.bootstrap_servers, redis_server.url, tracing={
        "kafka_topic": None, "otlp": True, "otlp_timeout_s": 0.5, "schedule_delay_ms": 50,
        "max_queue_size": 64, "max_export_batch_size": 32})
    events = list(simulate.transactions(population, count=1500, seed=32))
    tracing = Tracing(settings)
    runner = build_runner(settings, tracer=tracing.tracer)
    produce(broker.bootstrap_servers, settings.kafka.input_topics[0], keyed(events))
    stats = runner.run(max_events=len(events))
    tracing.shutdown()
    ids = {json.loads(r.value or b"")["event_id"] for r in
           read_all(broker.bootstrap_servers, settings.kafka.scores_topic or "")}
    assert ids == {e["event_id"] for e in events}
    assert stats.counts.scored == 1500
