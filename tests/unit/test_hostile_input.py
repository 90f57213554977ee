"""Hostile input through :meth:`Pipeline.process` and the runner, with the in-memory fakes.

Whatever the bytes, keys or headers, nothing escapes ``process()``: every input offset ends as
exactly one score record or exactly one dead letter carrying one ``dlq.reason``, and the
batch's offsets move past all of them. Card numbers planted anywhere in an event never reach
logs, spans, metric labels or the ``dlq.reason`` / ``dlq.error`` headers.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from stream_infer.adapters.memory import (
    FunctionModel,
    MemoryFeatureStore,
    MemorySink,
    MemorySource,
    Record,
)
from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.config import FeatureView
from stream_infer.decode import (
    SCHEMA_DIR,
    AvroDecoder,
    Decoder,
    JsonDecoder,
    JsonEncoder,
    LocalSchemas,
    encode_avro_transaction,
    looks_like_pan,
)
from stream_infer.errors import RecordError
from stream_infer.pipeline import BatchOutcome, Pipeline, Topics
from stream_infer.records import Headers, Output
from stream_infer.registry import resolve
from stream_infer.retry import Backoff
from stream_infer.runner import Runner, RunnerConfig
from stream_infer.score import ModelSet
from stream_infer.service.metrics import ServiceMetrics

MODELS = Path(__file__).resolve().parents[2] / "models"
TOPICS = Topics(alerts="alerts", dead_letter="dlq", scores="scores")
FEATURES = ("amount", "attributes.x", "card.risk")
VIEWS = {"card": FeatureView(key="card:{card_id}", fields=["risk"])}
REASONS = {"undecodable", "oversized", "unknown-schema", "schema"}
LIMIT = 4096
EVENT: dict[str, Any] = {
    "event_id": "e", "event_time": "2026-01-01T00:00:00+02:00", "card_id": "c1",
    "merchant_id": "m", "amount": 12.5, "currency": "EUR", "customer_id": "u",
    "terminal_id": "t", "mcc": "5411", "country": "FR", "channel": "pos", "label": 1,
    "attributes": {"x": 1.5},
}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
LONG_DIGITS = re.compile(r"\d(?:[ -]?\d){11,}")


def make_decoder(fmt: str, limit: int = LIMIT) -> Decoder:
    if fmt == "json":
        return JsonDecoder(limit)
    return AvroDecoder(LocalSchemas(SCHEMA_DIR, 1), limit)


def make_pipeline(fmt: str = "json", *, limit: int = LIMIT, tracer: Any = None,
                  model: Any = None, views: dict[str, FeatureView] = VIEWS) -> Pipeline:
    def score(m: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(m[:, 2]), 0.9, m[:, 2])

    return Pipeline(
        decoder=make_decoder(fmt, limit),
        models=ModelSet.build(model or FunctionModel(score, FEATURES, threshold=0.5), views),
        store=MemoryFeatureStore({"card:c1": {"risk": b"0.2"}}),
        topics=TOPICS,
        encoder=JsonEncoder(),
        clock=lambda: 42,
        tracer=tracer,
        reasons_top_k=3,
    )


def encode(fmt: str, event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() if fmt == "json" else encode_avro_transaction(event)


def records(values: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None,
            headers: Sequence[Headers | None] | None = None) -> list[Record]:
    return [Record(v, _offset=i, _key=keys[i] if keys else b"k",
                   _headers=headers[i] if headers else None, _timestamp=1000 + i)
            for i, v in enumerate(values)]


def expectations(decoder: Decoder, values: Sequence[bytes | None]
                 ) -> tuple[dict[int, str], Counter[str]]:
    """Each input decoded on its own: dead-letter reason per offset, event ids to be scored."""
    reasons: dict[int, str] = {}
    scored: Counter[str] = Counter()
    for offset, value in enumerate(values):
        try:
            scored[decoder(value).event_id] += 1
        except RecordError as error:
            reasons[offset] = error.reason
    return reasons, scored


def reconcile(batch: Sequence[Record], outputs: Sequence[Output], decoder: Decoder) -> None:
    """Every input offset is exactly one score record or exactly one well-formed dead letter."""
    reasons, scored = expectations(decoder, [r.value() for r in batch])
    dead: dict[int, str] = {}
    for out in (o for o in outputs if o.topic == TOPICS.dead_letter):
        names = [k for k, _ in out.headers]
        assert names.count("dlq.reason") == 1 and names.count("dlq.error") == 1
        headers = dict(out.headers)
        offset = int(headers["dlq.source.offset"] or b"")
        assert offset not in dead, "two dead letters for one offset"
        reason = (headers["dlq.reason"] or b"").decode()
        assert reason in REASONS and headers["dlq.error"]
        assert not LONG_DIGITS.search((headers["dlq.error"] or b"").decode())
        assert (out.key, out.value) == (batch[offset].key(), batch[offset].value())
        dead[offset] = reason
    assert dead == reasons
    ids = Counter(json.loads(o.value or b"")["event_id"] for o in outputs
                  if o.topic == TOPICS.scores)
    assert ids == scored


def process(pipeline: Pipeline, batch: Sequence[Record]) -> BatchOutcome:
    outcome = pipeline.process(batch)
    reconcile(batch, outcome.outputs, pipeline.features.decoder)
    assert outcome.next_offsets == {("transactions", 0): len(batch)}
    c = outcome.counts
    assert c.consumed == len(batch) == c.dead_lettered + c.scored
    assert sum(c.dlq_reasons.values()) == c.dead_lettered
    return outcome


# --- bytes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "avro"])
@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.none() | st.binary(max_size=LIMIT + 64), min_size=1, max_size=12))
def test_random_bytes_and_tombstones_are_dead_lettered(fmt: str,
                                                       values: list[bytes | None]) -> None:
    process(make_pipeline(fmt), records(values))


mutation = st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 10_000),
                     st.integers(0, 255))


def mutate(value: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(value)
    for op, at, byte in edits:
        at %= len(out) + 1
        if op == "flip" and at < len(out):
            out[at] ^= 1 << byte % 8
        elif op == "cut":
            del out[at:]
        elif op == "insert":
            out[at:at] = bytes([byte])
        if not out:
            break
    return bytes(out)


@pytest.mark.parametrize("fmt", ["json", "avro"])
@settings(max_examples=200, deadline=None)
@given(edits=st.lists(st.lists(mutation, min_size=1, max_size=6), min_size=1, max_size=10))
def test_truncated_and_bit_flipped_events_are_scored_or_dead_lettered(
    fmt: str, edits: list[list[tuple[str, int, int]]]
) -> None:
    values = [encode(fmt, {**EVENT, "event_id": f"e{i}"}) for i in range(len(edits))]
    values = [mutate(v, e) for v, e in zip(values, edits, strict=True)]
    process(make_pipeline(fmt), records(values))


@settings(max_examples=100, deadline=None)
@given(magic=st.integers(0, 255), schema_id=st.integers(0, 2**32 - 1))
def test_wrong_magic_bytes_and_schema_ids_name_their_reason(magic: int, schema_id: int) -> None:
    body = encode_avro_transaction(EVENT)[5:]
    value = bytes([magic]) + schema_id.to_bytes(4, "big") + body
    outcome = process(make_pipeline("avro"), records([value]))
    reason = None if magic == 0 and schema_id == 1 else (
        "undecodable" if magic else "unknown-schema")
    assert outcome.counts.dlq_reasons == (Counter({reason: 1}) if reason else Counter())


# --- documents ----------------------------------------------------------------------------------

FIELDS = [*EVENT, "unknown"]


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(FIELDS), depth=st.integers(1, 20_000),
       brackets=st.sampled_from(["[]", "{}"]))
def test_deep_nesting_in_any_field_is_dead_lettered(field: str, depth: int,
                                                    brackets: str) -> None:
    opening, closing = brackets
    nested = ('{"k":' * depth + "1" + "}" * depth) if opening == "{" else (
        opening * depth + closing * depth)
    doc = json.dumps({**EVENT, field: "@"}).replace('"@"', nested).encode()
    outcome = process(make_pipeline(limit=1 << 20), records([doc]))
    if field == "unknown" and depth > 2_000:  # skipped, but parsed: far past the recursion limit
        assert outcome.counts.dlq_reasons == Counter({"undecodable": 1})


def test_nesting_within_the_size_limit_is_undecodable_not_a_crash() -> None:
    doc = json.dumps({**EVENT, "unknown": "@"}).replace('"@"', "[" * 5000 + "]" * 5000)
    assert len(doc) < 64 * 1024
    outcome = process(make_pipeline(limit=64 * 1024), records([doc.encode()]))
    assert outcome.counts.dlq_reasons == Counter({"undecodable": 1})


def test_invalid_utf8_inside_a_string_is_undecodable_not_a_crash() -> None:
    doc = json.dumps({**EVENT, "card_id": "@"}).encode().replace(b'"@"', b'"\x89\xc6"')
    outcome = process(make_pipeline(), records([doc]))
    assert outcome.counts.dlq_reasons == Counter({"undecodable": 1})


number_token = st.one_of(
    st.integers(-(10**400), 10**400).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999",
                     "-0", "0", "1" + "0" * 400, "0x10", "1_000", "01", ".5", "5."]),
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["amount", "event_time", "label", "attributes.x", "attributes.y"]),
       token=number_token)
def test_huge_numbers_nan_and_infinity_in_numeric_fields(field: str, token: str) -> None:
    head, _, attr = field.partition(".")
    doc = {**EVENT, "attributes": {**EVENT["attributes"], attr: "@"}} if attr else {
        **EVENT, head: "@"}
    process(make_pipeline(), records([json.dumps(doc).replace('"@"', token).encode()]))


@settings(max_examples=150, deadline=None)
@given(amount=st.floats(), attribute=st.floats())
def test_any_double_in_avro_is_scored_or_dead_lettered(amount: float, attribute: float) -> None:
    value = encode_avro_transaction({**EVENT, "amount": amount, "attributes": {"x": attribute}})
    outcome = process(make_pipeline("avro"), records([value]))
    finite = all(np.isfinite([amount, attribute])) and amount >= 0
    assert outcome.counts.scored == (1 if finite else 0)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(LIMIT - 64, LIMIT * 4))
def test_oversized_payloads_are_refused_before_parsing(size: int) -> None:
    doc = json.dumps({**EVENT, "unknown": "@"})
    value = doc.replace("@", "x" * (size - len(doc) + 1)).encode()
    assert len(value) == size
    outcome = process(make_pipeline(), records([value]))
    assert outcome.counts.dlq_reasons == (Counter({"oversized": 1}) if size > LIMIT else Counter())


def test_doubles_beyond_float32_are_scored_and_explained_by_the_real_model() -> None:
    served = XGBoostModel.load(resolve(MODELS, "demo"))
    everything_alerts = XGBoostModel(served.booster, name="demo", version="1",
                                     features=served.features, threshold=0.0)
    views = {view: FeatureView(key=f"{view}:{{{view}_id}}",
                               fields=[f.split(".")[1] for f in served.features
                                       if f.startswith(f"{view}.")])
             for view in ("card", "merchant")}
    pipeline = make_pipeline(model=everything_alerts, views=views)
    huge = [1e39, 1e300, 1.7976931348623157e308]
    values = [json.dumps({**EVENT, "event_id": f"e{i}", "amount": a,
                          "attributes": {"secs_since_prev": -a, "distance_km": a}}).encode()
              for i, a in enumerate(huge)]
    outcome = process(pipeline, records(values))
    alerts = [json.loads(o.value or b"") for o in outcome.outputs if o.topic == "alerts"]
    assert len(alerts) == len(huge) and all(0 <= a["score"] <= 1 for a in alerts)


# --- keys and headers ---------------------------------------------------------------------------

def traceparent(i: int) -> bytes:
    return f"00-{TRACE_ID}-{i + 1:016x}-01".encode()


header_value = st.one_of(
    st.none(), st.binary(max_size=80), st.text(max_size=60).map(str.encode),
    st.integers(0, 1000).map(traceparent),
    st.sampled_from([b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01", b"ff-" + b"a" * 53,
                     traceparent(1)[:-1], traceparent(1) + b"-extra", b"\xff" * 55]),
)
headers_strategy = st.lists(
    st.tuples(st.sampled_from(["traceparent", "tracestate", "dlq.reason", "dlq.source.offset",
                               "x", ""]), header_value), max_size=4)


def traced_runner(values: Sequence[bytes | None], keys: Sequence[bytes | None],
                  headers: Sequence[Headers | None], *, fmt: str = "json",
                  metrics: ServiceMetrics | None = None
                  ) -> tuple[Runner, MemorySink, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pipeline = make_pipeline(fmt, tracer=provider.get_tracer("test"))
    sink = MemorySink()
    source = MemorySource(records(values, keys, headers))
    config = RunnerConfig(max_records=7, max_wait_s=0, max_links=4,
                          backoff=Backoff(0.001, 0.001))
    return Runner(source, sink, pipeline, config, observer=metrics), sink, exporter


def drain(runner: Runner, total: int) -> None:
    for _ in range(total + 5):
        if runner.stats.counts.consumed >= total:
            return
        runner.step()
    raise AssertionError("the runner stopped consuming")


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(st.tuples(st.sampled_from(["good", "bad", "none"]),
                                st.none() | st.binary(max_size=20), headers_strategy),
                      min_size=1, max_size=20))
def test_null_keys_and_garbage_headers_never_stop_the_runner(
    batch: list[tuple[str, bytes | None, Headers]]
) -> None:
    values = [encode("json", {**EVENT, "event_id": f"e{i}"}) if kind == "good"
              else b"{garbage" if kind == "bad" else None for i, (kind, _, _) in enumerate(batch)]
    keys = [key for _, key, _ in batch]
    headers = [h for _, _, h in batch]
    runner, sink, exporter = traced_runner(values, keys, headers)
    drain(runner, len(batch))
    reconcile(records(values, keys, headers), sink.delivered, runner.pipeline.features.decoder)
    for out in sink.on(TOPICS.dead_letter):
        forged = [k for k, _ in out.headers if k.startswith("dlq.")]
        assert sorted(forged) == sorted(["dlq.reason", "dlq.error", "dlq.source.topic",
                                         "dlq.source.partition", "dlq.source.offset",
                                         "dlq.source.timestamp", "dlq.service"])
    links = [link for s in exporter.get_finished_spans() if s.name == "batch" for link in s.links]
    assert all(link.context.trace_id == int(TRACE_ID, 16) for link in links)


# --- card numbers -------------------------------------------------------------------------------

def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(int(c) for c in reversed(digits)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
    return total % 10 == 0


def card_number(rng: random.Random, length: int) -> str:
    body = str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(length - 2))
    check = next(d for d in "0123456789" if luhn_valid(body + d))
    return body + check


def formatted(pan: str, style: int) -> str:
    groups = [pan[i:i + 4] for i in range(0, len(pan), 4)]
    return pan if style == 0 else (" " if style == 1 else "-").join(groups)


def planted(fmt: str, pan: str) -> list[tuple[bytes | None, bytes, Headers]]:
    """(value, key, headers) with the card number in each field, the key and the headers."""
    digits = pan.replace(" ", "").replace("-", "")
    number = int(digits)
    docs = [{**EVENT, field: pan} for field in EVENT if field not in ("attributes", "label")]
    docs += [{**EVENT, "attributes": {pan: 1.0}}, {**EVENT, "unknown": pan}]
    numeric = [{**EVENT, "amount": number}, {**EVENT, "event_time": number},
               {**EVENT, "attributes": {"x": float(number)}}]
    if fmt == "json":
        numeric += [{**EVENT, "label": number}, {**EVENT, "amount": float(number)}]
    out: list[tuple[bytes | None, bytes, Headers]] = []
    for i, doc in enumerate(docs + numeric):
        doc = {**doc, "event_id": doc["event_id"] if doc["event_id"] == pan else f"e{i}"}
        try:
            value: bytes | None = encode(fmt, doc)
        except (ValueError, TypeError, OverflowError):
            continue  # a type Avro cannot carry there
        out.append((value, b"k", []))
    bad = encode(fmt, {**EVENT, "currency": "euro", "channel": pan, "card_id": pan})
    out.append((bad, pan.encode(), [("traceparent", pan.encode()), ("x", pan.encode())]))
    out.append((pan.encode(), pan.encode(), [("dlq.error", pan.encode())]))
    out.append((None, pan.encode(), []))
    return out


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_card_numbers_never_reach_logs_spans_metrics_or_dlq_text(
    fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(5)
    pans = [formatted(card_number(rng, n), style) for n in range(13, 20) for style in range(3)]
    assert all(looks_like_pan(p) and luhn_valid(p.replace(" ", "").replace("-", ""))
               for p in pans)
    cases = [case for pan in pans for case in planted(fmt, pan)]
    values, keys, headers = ([c[i] for c in cases] for i in range(3))
    metrics = ServiceMetrics()
    runner, sink, exporter = traced_runner(values, keys, headers, fmt=fmt, metrics=metrics)
    sink.fail_next = 1  # a failed delivery is logged and the batch consumed again
    drain(runner, len(cases))
    reconcile(records(values, keys, headers), sink.delivered, runner.pipeline.features.decoder)
    dlq_text = [v.decode() for o in sink.on(TOPICS.dead_letter) for k, v in o.headers
                if k in ("dlq.reason", "dlq.error") and v]
    assert sink.on(TOPICS.dead_letter) and "outputs not acknowledged" in caplog.text
    sources: dict[str, Callable[[], str]] = {
        "logs": lambda: caplog.text,
        "spans": lambda: "".join(s.to_json() for s in exporter.get_finished_spans()),
        "metrics": lambda: generate_latest(metrics.registry).decode(),
        "dlq headers": lambda: "\n".join(dlq_text),
    }
    for where, text in sources.items():
        seen = text()
        for pan in pans:
            digits = pan.replace(" ", "").replace("-", "")
            assert pan not in seen and digits not in seen, f"a card number in the {where}"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(13, 19), style=st.integers(0, 2))
def test_card_numbers_in_every_field_give_redacted_dead_letter_text(
    seed: int, length: int, style: int
) -> None:
    pan = formatted(card_number(random.Random(seed), length), style)
    cases = planted("json", pan)
    values = [c[0] for c in cases]
    outcome = process(make_pipeline(), records(values, [c[1] for c in cases],
                                               [c[2] for c in cases]))
    digits = pan.replace(" ", "").replace("-", "")
    for out in outcome.outputs:
        headers = dict(out.headers)
        text = b"".join(headers.get(k) or b"" for k in ("dlq.reason", "dlq.error")).decode()
        assert pan not in text and digits not in text
