"""Hostile records mixed into real traffic, through the real runner on each broker and redis-server.

Every input offset is reconciled: exactly one score record or exactly one dead letter (with
the reason the decoder gives that record on its own), the dead-letter counter agrees, the
partition keeps moving past every bad record, and no card number reaches the logs, the
spans or the dead letters' reason/error headers.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stream_infer.decode import encode_avro_transaction, make_decoder
from stream_infer.errors import RecordError
from stream_infer.offline import simulate
from stream_infer.service.app import build_runner
from stream_infer.service.metrics import ServiceMetrics
from tests.support.configs import settings_for
from tests.support.topics import produce, read_all

pytestmark = pytest.mark.integration
PAN = "4111111111111111"
PAN_SPACED = "5500 0000 0000 0004"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
Case = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]


def hostile(template: dict[str, Any], rng: random.Random) -> list[Case]:
    """(key, value, headers) for every kind of bad input, and a few odd but valid ones."""
    good = json.dumps(template).encode()

    def doc(**changes: Any) -> bytes:
        return json.dumps({**template, **changes}).encode()

    def flipped(value: bytes) -> bytes:
        out = bytearray(value)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)

    cases: list[Case] = [
        (b"k", bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))), None),
        (b"k", good[: rng.randrange(1, len(good))], None),
        (b"k", flipped(good), None),
        (b"k", good.replace(b'"EUR"', b'"\x89\xc6R"'), None),
        (b"k", doc(unknown="@").replace(b'"@"', b"[" * 900 + b"]" * 900), None),
        (b"k", doc(amount="@").replace(b'"@"', b"1e999"), None),
        (b"k", doc(amount="@").replace(b'"@"', b"NaN"), None),
        (b"k", doc(amount="@").replace(b'"@"', b"1" + b"0" * 400), None),
        (b"k", doc(event_time=10**30), None),
        (b"k", doc(attributes={"x": "@"}).replace(b'"@"', b"-Infinity"), None),
        (b"k", doc(channel="x" * 4096), None),  # oversized
        (None, None, None),  # tombstone with a null key
        (b"k", b"", None),
        (b"k", encode_avro_transaction(template), None),  # Avro where JSON is expected
        (b"\x00\xff" * 8, b"\x01\x00\x00\x00\x07garbage", None),
        (b"k", doc(card_id=PAN), [("traceparent", PAN.encode()), ("x", PAN.encode())]),
        (PAN.encode(), doc(card_id=PAN_SPACED, currency="euro", channel=PAN), None),
        (b"k", PAN.encode(), [("dlq.reason", b"forged"), ("dlq.error", PAN.encode())]),
        (b"k", b"{garbage", [("traceparent", b"\xff" * 55)]),
        (b"k", doc(amount=1e300, event_id="huge-amount"), [("traceparent", b"00-zz")]),
        (None, doc(event_id="null-key", merchant_id=PAN), [("traceparent", b"")]),
        (b"k", doc(event_id="linked"), [("traceparent", f"00-{TRACE_ID}-{1:016x}-01".encode())]),
    ]
    return cases


def test_hostile_records_mixed_with_good_ones_each_end_as_one_score_or_one_dead_letter(
    broker: Any, redis_server: Any, population: simulate.Population,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run_id = uuid.uuid4().hex[:8]
    settings = settings_for(run_id, broker.bootstrap_servers, redis_server.url)
    kafka = settings.kafka
    rng = random.Random(7)
    events = list(simulate.transactions(population, count=800, seed=41))
    cases: list[Case] = [(e["card_id"].encode(), json.dumps(e).encode(), None) for e in events]
    for template in events[:6]:
        for case in hostile({**template, "event_id": f"h-{uuid.uuid4().hex[:6]}"}, rng):
            cases.insert(rng.randrange(len(cases) + 1), case)

    decode = make_decoder(settings.decode)
    expected_ids: Counter[str] = Counter()
    bad: list[int] = []
    for i, (_, value, _) in enumerate(cases):
        try:
            expected_ids[decode(value).event_id] += 1
        except RecordError:
            bad.append(i)
    assert len(bad) >= 6 * 15

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = ServiceMetrics()
    runner = build_runner(settings, metrics=metrics, tracer=provider.get_tracer("test"))
    placed = produce(kafka.bootstrap_servers, kafka.input_topics[0],
                     [(key, value) for key, value, _ in cases],  # type: ignore[misc]
                     headers=[h for _, _, h in cases])
    stats = runner.run(max_events=len(cases))

    expected_dead = {}
    for i in bad:
        try:
            decode(cases[i][1])
        except RecordError as error:
            expected_dead[placed[i]] = error.reason
    dead: dict[tuple[int, int], str] = {}
    for record in read_all(kafka.bootstrap_servers, kafka.dlq_topic):
        where = (int(record.headers["dlq.source.partition"]),
                 int(record.headers["dlq.source.offset"]))
        assert where not in dead, "two dead letters for one input offset"
        dead[where] = record.headers["dlq.reason"].decode()
        assert (record.key, record.value) == cases[placed.index(where)][:2]
        for text in (record.headers["dlq.reason"], record.headers["dlq.error"]):
            assert PAN.encode() not in text and PAN_SPACED.encode() not in text
    assert dead == expected_dead

    scored = Counter(json.loads(r.value or b"")["event_id"]
                     for r in read_all(kafka.bootstrap_servers, kafka.scores_topic or ""))
    assert scored == expected_ids
    assert {"huge-amount", "null-key", "linked"} <= set(scored)
    assert stats.counts.consumed == len(cases) == sum(scored.values()) + len(dead)

    for reason, count in Counter(expected_dead.values()).items():
        sample = metrics.registry.get_sample_value("stream_infer_dead_letters_total",
                                                   {"reason": reason})
        assert sample == count
    assert set(Counter(expected_dead.values())) >= {"undecodable", "schema", "oversized"}

    spans = exporter.get_finished_spans()
    links = {link.context.trace_id for s in spans if s.name == "batch" for link in s.links}
    assert links == {int(TRACE_ID, 16)}
    span_text = "".join(s.to_json() for s in spans)
    for pan in (PAN, PAN_SPACED, PAN_SPACED.replace(" ", "")):
        assert pan not in span_text and pan not in caplog.text
