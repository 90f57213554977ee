"""One micro-batch through every stage: decode -> enrich -> score -> outputs + offsets.

:meth:`Pipeline.process` is the whole per-batch contract, shared by the native runner, the
replay tool and the Faust engine. It does no Kafka I/O: it returns the records to produce and
the offsets that may be stored once every one of those records is acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np
from opentelemetry import propagate, trace

from . import failpoints
from .decode import Decoder
from .enrich import FeatureStore, Lookup, Matrix, Reply
from .errors import FeatureStoreError, RecordError
from .records import Headers, Output, SourceRecord, Transaction
from .score import (
    Model,
    Scores,
    Scoring,
    alerted_rows,
    make_alerts,
    make_score_records,
    top_reasons,
)

Encoder = Callable[[msgspec.Struct], bytes]
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
    shadow_alerts: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchCounts) -> None:
        self.consumed += other.consumed
        self.dead_lettered += other.dead_lettered
        self.scored += other.scored
        self.alerted += other.alerted
        self.feature_misses += other.feature_misses
        self.degraded += other.degraded
        self.store_errors += other.store_errors
        self.dlq_reasons.update(other.dlq_reasons)
        self.shadow_alerts.update(other.shadow_alerts)


@dataclass(slots=True)
class BatchOutcome:
    """Records to produce, and the offsets to store once they are all acknowledged."""

    outputs: list[Output]
    first_offsets: dict[TopicPartition, int]
    next_offsets: dict[TopicPartition, int]
    counts: BatchCounts
    alert_source_ms: list[int]
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Scored:
    """The valid events of a batch with their features and every model's scores."""

    scoring: Scoring
    events: list[Transaction]
    sources: list[SourceRecord]
    matrix: Matrix
    scores: Scores
    shadow_scores: list[Scores]
    degraded: bool


class Pipeline:
    """The stages, built once and applied to every batch.

    ``on_store_error`` is the Redis outage policy: ``fail-open`` scores with NaN features and
    marks the outputs ``degraded``; ``pause`` lets :class:`FeatureStoreError` propagate so the
    runner stops consuming and retries the same batch. :meth:`swap` replaces the models
    between batches (hot reload).
    """

    def __init__(
        self,
        *,
        decoder: Decoder,
        scoring: Scoring,
        store: FeatureStore,
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
        self.scoring = scoring
        self.store = store
        self.topics = topics
        self.encoder = encoder
        self.on_store_error = on_store_error
        self.clock = clock

    @property
    def model(self) -> Model:
        """The champion: the model whose scores raise alerts."""
        return self.scoring.champion

    def swap(self, scoring: Scoring) -> None:
        """Serve ``scoring`` from the next batch on (call between batches)."""
        self.scoring = scoring

    def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Decode, enrich and score a batch; build its alerts, scores and dead letters."""
        outcome, scored = self.score(records)
        failpoints.hit("after_score")
        if scored is not None:
            self.complete(outcome, scored)
        return outcome

    def complete(self, outcome: BatchOutcome, scored: Scored) -> None:
        """Add the alerts and score records of ``scored`` to ``outcome``."""
        outcome.alert_source_ms = self._emit(scored, outcome.outputs, outcome.counts,
                                             outcome.stage_seconds)

    def score(self, records: Sequence[SourceRecord]) -> tuple[BatchOutcome, Scored | None]:
        """Decode, enrich and score, without building alerts (replay reads this directly).

        The outcome holds the dead letters and the offsets; ``Scored`` is None when no
        record of the batch was valid.
        """
        scoring = self.scoring
        started = time.perf_counter()
        counts = BatchCounts(consumed=len(records))
        outputs: list[Output] = []
        first: dict[TopicPartition, int] = {}
        nxt: dict[TopicPartition, int] = {}
        with self.tracer.start_as_current_span("decode") as span:
            events, kept = self._decode(records, outputs, counts, first, nxt)
            failpoints.hit("after_decode")
            span.set_attributes({"stream_infer.records": len(records),
                                 "stream_infer.dead_letters": counts.dead_lettered})
        stages = {"decode": time.perf_counter() - started}
        outcome = BatchOutcome(outputs, first, nxt, counts, [], stages)
        if not events:
            return outcome, None
        return outcome, self._score(scoring, events, kept, counts, stages)

    def _decode(
        self,
        records: Sequence[SourceRecord],
        outputs: list[Output],
        counts: BatchCounts,
        first: dict[TopicPartition, int],
        nxt: dict[TopicPartition, int],
    ) -> tuple[list[Transaction], list[SourceRecord]]:
        span_offsets(records, first, nxt)
        events, failures = self.decoder.many([r.value() for r in records])
        if not failures:
            return events, list(records)
        for position, error in failures:
            outputs.append(dead_letter(records[position], error, self.topics.dead_letter))
            counts.dead_lettered += 1
            counts.dlq_reasons[error.reason] += 1
        refused = {position for position, _ in failures}
        return events, [r for i, r in enumerate(records) if i not in refused]

    def _score(self, scoring: Scoring, events: list[Transaction], sources: list[SourceRecord],
               counts: BatchCounts, stages: dict[str, float]) -> Scored:
        started = time.perf_counter()
        with self.tracer.start_as_current_span("enrich") as span:
            enriched = scoring.enricher.enrich(events, self._fetch)
            span.set_attributes({"stream_infer.lookups": enriched.lookups,
                                 "stream_infer.feature_misses": enriched.misses,
                                 "stream_infer.degraded": enriched.degraded})
        scored_at = time.perf_counter()
        stages["enrich"] = scored_at - started
        with self.tracer.start_as_current_span("score") as span:
            scores = scoring.champion.predict(scoring.champion_matrix(enriched.matrix))
            shadow_scores = scoring.shadow_scores(enriched.matrix)
            span.set_attributes({"stream_infer.rows": len(events),
                                 "stream_infer.shadow_models": len(shadow_scores)})
        counts.scored += len(events)
        counts.feature_misses += enriched.misses
        counts.degraded += len(events) if enriched.degraded else 0
        counts.store_errors += 1 if enriched.degraded else 0
        for model, shadow in zip(scoring.shadows, shadow_scores, strict=True):
            counts.shadow_alerts[f"{model.name}:{model.version}"] += int(
                np.count_nonzero(shadow >= model.threshold))
        stages["score"] = time.perf_counter() - scored_at
        return Scored(scoring, events, sources, enriched.matrix, scores, shadow_scores,
                      enriched.degraded)

    def _emit(self, scored: Scored, outputs: list[Output], counts: BatchCounts,
              stages: dict[str, float]) -> list[int]:
        """Alerts (champion only, explained) and score records (every model) as outputs."""
        started = time.perf_counter()
        scoring, events, degraded = scored.scoring, scored.events, scored.degraded
        champion = scoring.champion
        matrix = scoring.champion_matrix(scored.matrix)
        rows = alerted_rows(scored.scores, champion.threshold)
        now = self.clock()
        reasons = None
        if self.reasons_top_k and len(rows):
            with self.tracer.start_as_current_span("explain"):
                flagged = np.ascontiguousarray(matrix[rows])
                reasons = top_reasons(champion.contributions(flagged), flagged,
                                      champion.features, self.reasons_top_k)
        alerts = make_alerts(events, scored.scores, rows, champion, scored_at=now,
                             degraded=degraded, reasons=reasons)
        alert_headers = _ALERT_HEADERS + _traceparent()
        outputs.extend(
            Output(self.topics.alerts, a.card_id.encode(), self.encoder(a), alert_headers)
            for a in alerts
        )
        if self.topics.scores:
            models = [(champion, scored.scores, matrix, False)] + [
                (model, shadow, scored.matrix[:, cols], True) for model, shadow, cols
                in zip(scoring.shadows, scored.shadow_scores, scoring.columns, strict=True)]
            for model, scores, features, shadow in models:
                records = make_score_records(events, scores, features, model, scored_at=now,
                                             degraded=degraded, shadow=shadow)
                outputs.extend(Output(self.topics.scores, r.card_id.encode(), self.encoder(r))
                               for r in records)
        counts.alerted += len(alerts)
        stages["score"] += time.perf_counter() - started
        return [scored.sources[i].timestamp()[1] for i in rows.tolist()]

    def _fetch(self, lookups: list[Lookup]) -> Sequence[Reply] | None:
        try:
            return self.store.fetch(lookups)
        except FeatureStoreError:
            if self.on_store_error == "pause":
                raise
            return None


def span_offsets(records: Sequence[SourceRecord], first: dict[TopicPartition, int],
                 nxt: dict[TopicPartition, int]) -> None:
    """Add each partition's first offset in ``records`` to ``first``, and the offset after
    its last one to ``nxt``.

    Only the first and last record of each partition are asked their offset, and records of
    one topic (the usual batch) are told apart by partition number alone; a batch of one
    partition (a consumer owning one, or a run of one partition's fetch) needs no more.
    """
    if not records:
        return
    topics = [r.topic() or "" for r in records]
    partitions = [r.partition() or 0 for r in records]
    count = len(records)
    one_topic = topics.count(topics[0]) == count
    if one_topic and partitions.count(partitions[0]) == count:
        first[topics[0], partitions[0]] = records[0].offset() or 0
        nxt[topics[0], partitions[0]] = (records[-1].offset() or 0) + 1
        return
    places: Sequence[Hashable] = (
        partitions if one_topic else list(zip(topics, partitions, strict=True)))
    earliest = dict(zip(reversed(places), range(count - 1, -1, -1), strict=True))
    latest = dict(zip(places, range(count), strict=True))
    for i in earliest.values():
        first[topics[i], partitions[i]] = records[i].offset() or 0
    for i in latest.values():
        nxt[topics[i], partitions[i]] = (records[i].offset() or 0) + 1


_ALERT_HEADERS: Headers = [("producer", SERVICE)]


def _traceparent() -> Headers:
    """The current span's W3C ``traceparent`` as a header (none when tracing is off)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    value = carrier.get("traceparent")
    return [("traceparent", value.encode())] if value else []


def dead_letter(record: SourceRecord, error: RecordError, topic: str) -> Output:
    """The DLQ record: the raw bytes untouched, the reason and source coordinates in headers.

    The input's own headers are kept, except ``dlq.*`` ones: a record cannot forge its reason
    or coordinates, and a dead letter replayed into the input gets fresh ones.
    """
    _, ts = record.timestamp()
    original = record.headers() or []
    headers: Headers = [
        *((k, v) for k, v in (original.items() if isinstance(original, dict) else original)
          if not k.startswith("dlq.")),
        ("dlq.reason", error.reason.encode()),
        ("dlq.error", str(error).encode()),
        ("dlq.source.topic", (record.topic() or "").encode()),
        ("dlq.source.partition", str(record.partition()).encode()),
        ("dlq.source.offset", str(record.offset()).encode()),
        ("dlq.source.timestamp", str(ts).encode()),
        ("dlq.service", SERVICE),
    ]
    return Output(topic, record.key(), record.value(), headers)
