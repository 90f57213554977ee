"""One micro-batch through every stage: decode -> enrich -> score -> outputs + offsets.

:meth:`Pipeline.process` is the whole per-batch contract, shared by the native runner, the
replay tool and the Faust engine. It does no Kafka I/O: it returns the records to produce and
the offsets that may be stored once every one of those records is acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from opentelemetry import propagate, trace

from .enrich import Enricher, FeatureStore
from .errors import FeatureStoreError, RecordError
from .records import Headers, Output, SourceRecord, Transaction
from .score import Model, alerted_rows, make_alerts, make_score_records, top_reasons

Encoder = Callable[[msgspec.Struct], bytes]
Decoder = Callable[[bytes | None], Transaction]
TopicPartition = tuple[str, int]
SERVICE = b"stream-infer"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Topics:
    """Where outputs go."""

    alerts: str
    dead_letter: str
    scores: str | None = None


@dataclass(slots=True)
class BatchCounts:
    """What happened to one batch; the runner adds these up."""

    consumed: int = 0
    dead_lettered: int = 0
    scored: int = 0
    alerted: int = 0
    feature_misses: int = 0
    degraded: int = 0
    store_errors: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchCounts) -> None:
        self.consumed += other.consumed
        self.dead_lettered += other.dead_lettered
        self.scored += other.scored
        self.alerted += other.alerted
        self.feature_misses += other.feature_misses
        self.degraded += other.degraded
        self.store_errors += other.store_errors
        self.dlq_reasons.update(other.dlq_reasons)


@dataclass(slots=True)
class BatchOutcome:
    """Records to produce, and the offsets to store once they are all acknowledged."""

    outputs: list[Output]
    first_offsets: dict[TopicPartition, int]
    next_offsets: dict[TopicPartition, int]
    counts: BatchCounts
    alert_source_ms: list[int]
    stage_seconds: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """The stages, built once and applied to every batch.

    ``on_store_error`` is the Redis outage policy: ``fail-open`` scores with NaN features and
    marks the outputs ``degraded``; ``pause`` lets :class:`FeatureStoreError` propagate so the
    runner stops consuming and retries the same batch.
    """

    def __init__(
        self,
        *,
        decoder: Decoder,
        enricher: Enricher,
        store: FeatureStore,
        model: Model,
        topics: Topics,
        encoder: Encoder,
        on_store_error: Literal["fail-open", "pause"] = "fail-open",
        clock: Callable[[], int] = wall_clock_ms,
        tracer: trace.Tracer | None = None,
        reasons_top_k: int = 0,
    ) -> None:
        self.reasons_top_k = reasons_top_k
        self.tracer = tracer or trace.NoOpTracer()
        self.decoder = decoder
        self.enricher = enricher
        self.store = store
        self.model = model
        self.topics = topics
        self.encoder = encoder
        self.on_store_error = on_store_error
        self.clock = clock

    def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        started = time.perf_counter()
        counts = BatchCounts(consumed=len(records))
        outputs: list[Output] = []
        first: dict[TopicPartition, int] = {}
        nxt: dict[TopicPartition, int] = {}
        with self.tracer.start_as_current_span("decode") as span:
            events, kept = self._decode(records, outputs, counts, first, nxt)
            span.set_attributes({"stream_infer.records": len(records),
                                 "stream_infer.dead_letters": counts.dead_lettered})
        stages = {"decode": time.perf_counter() - started}
        alert_ms = self._score(events, kept, outputs, counts, stages) if events else []
        return BatchOutcome(outputs, first, nxt, counts, alert_ms, stages)

    def _decode(
        self,
        records: Sequence[SourceRecord],
        outputs: list[Output],
        counts: BatchCounts,
        first: dict[TopicPartition, int],
        nxt: dict[TopicPartition, int],
    ) -> tuple[list[Transaction], list[SourceRecord]]:
        events: list[Transaction] = []
        kept: list[SourceRecord] = []
        for record in records:
            tp = (record.topic() or "", record.partition() or 0)
            offset = record.offset() or 0
            first.setdefault(tp, offset)
            nxt[tp] = offset + 1
            try:
                events.append(self.decoder(record.value()))
                kept.append(record)
            except RecordError as error:
                outputs.append(dead_letter(record, error, self.topics.dead_letter))
                counts.dead_lettered += 1
                counts.dlq_reasons[error.reason] += 1
        return events, kept

    def _score(
        self,
        events: list[Transaction],
        sources: list[SourceRecord],
        outputs: list[Output],
        counts: BatchCounts,
        stages: dict[str, float],
    ) -> list[int]:
        started = time.perf_counter()
        alert_headers = _ALERT_HEADERS + _traceparent()
        with self.tracer.start_as_current_span("enrich") as span:
            lookups, index = self.enricher.lookups(events)
            values = self._fetch(lookups) if lookups else []
            enriched = self.enricher.matrix(events, values, index)
            span.set_attributes({"stream_infer.lookups": len(lookups),
                                 "stream_infer.feature_misses": enriched.misses,
                                 "stream_infer.degraded": enriched.degraded})
        scored = time.perf_counter()
        stages["enrich"] = scored - started
        with self.tracer.start_as_current_span("score") as span:
            scores = self.model.predict(enriched.matrix)
            rows = alerted_rows(scores, self.model.threshold)
            span.set_attributes({"stream_infer.rows": len(events),
                                 "stream_infer.alerts": len(rows)})
        now = self.clock()
        reasons = None
        if self.reasons_top_k and len(rows):
            with self.tracer.start_as_current_span("explain"):
                flagged = enriched.matrix[rows]
                reasons = top_reasons(self.model.contributions(flagged), flagged,
                                      self.model.features, self.reasons_top_k)
        alerts = make_alerts(events, scores, rows, self.model, scored_at=now,
                             degraded=enriched.degraded, reasons=reasons)
        outputs.extend(
            Output(self.topics.alerts, a.card_id.encode(), self.encoder(a), alert_headers)
            for a in alerts
        )
        if self.topics.scores:
            records = make_score_records(events, scores, enriched.matrix, self.model,
                                         scored_at=now, degraded=enriched.degraded)
            outputs.extend(
                Output(self.topics.scores, r.card_id.encode(), self.encoder(r)) for r in records
            )
        counts.scored += len(events)
        counts.alerted += len(alerts)
        counts.feature_misses += enriched.misses
        counts.degraded += len(events) if enriched.degraded else 0
        counts.store_errors += 1 if enriched.degraded else 0
        stages["score"] = time.perf_counter() - scored
        return [sources[i].timestamp()[1] for i in rows.tolist()]

    def _fetch(self, lookups: list[tuple[str, Sequence[str]]]) -> list[list[bytes | None]] | None:
        try:
            return self.store.fetch(lookups)
        except FeatureStoreError:
            if self.on_store_error == "pause":
                raise
            return None


_ALERT_HEADERS: Headers = [("producer", SERVICE)]


def _traceparent() -> Headers:
    """The current span's W3C ``traceparent`` as a header (none when tracing is off)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    value = carrier.get("traceparent")
    return [("traceparent", value.encode())] if value else []


def dead_letter(record: SourceRecord, error: RecordError, topic: str) -> Output:
    """The DLQ record: the raw bytes untouched, the reason and source coordinates in headers."""
    _, ts = record.timestamp()
    original = record.headers() or []
    headers: Headers = [
        *(original.items() if isinstance(original, dict) else original),
        ("dlq.reason", error.reason.encode()),
        ("dlq.error", str(error).encode()),
        ("dlq.source.topic", (record.topic() or "").encode()),
        ("dlq.source.partition", str(record.partition()).encode()),
        ("dlq.source.offset", str(record.offset()).encode()),
        ("dlq.source.timestamp", str(ts).encode()),
        ("dlq.service", SERVICE),
    ]
    return Output(topic, record.key(), record.value(), headers)
