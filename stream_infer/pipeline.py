"""One micro-batch through every stage: features (decode, enrich) -> score -> emit.

Each stage is a function that returns a value. :meth:`Pipeline.process` runs them on a batch
of records for the native runner and the Faust engine; replay feeds the same stages from its
bounded sources. No stage does Kafka I/O: ``process`` returns the records to produce and the
offsets that may be stored once every one of those records is acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec
import numpy as np
from opentelemetry import propagate, trace

from . import failpoints
from .decode import Decoder, LabelDecoder
from .enrich import Enricher, FeatureStore, Lookup, Matrix, Reply
from .errors import FeatureStoreError, RecordError, ValidationError
from .records import (
    Alert,
    Headers,
    LabelRecord,
    Output,
    ScoreRecord,
    SourceRecord,
    Transaction,
    header_pairs,
    wall_clock_ms,
)
from .score import (
    Model,
    ModelSet,
    Scores,
    alerted_rows,
    make_alerts,
    make_score_records,
    top_reasons,
)

Encoder = Callable[[msgspec.Struct], bytes]
TopicPartition = tuple[str, int]
SERVICE = b"stream-infer"
_NO_ROWS: Matrix = np.empty((0, 0), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Topics:
    """Where outputs go (and the input topic of labels, told apart from events)."""

    alerts: str
    dead_letter: str
    scores: str | None = None
    labels: str | None = None


class WindowFeatures(Protocol):
    """The window features port (``stream_infer.features.live.LiveWindows``): one row per
    event in ``names`` order, the batch's labels applied first."""

    names: tuple[str, ...]

    def __call__(self, events: Sequence[Transaction],
                 labels: Sequence[LabelRecord] = ()) -> Matrix:
        """Raises ``FeatureStoreError`` when the window state is unreachable."""
        ...


@dataclass(slots=True)
class BatchCounts:
    """What happened to one batch; the runner adds these up."""

    consumed: int = 0
    dead_lettered: int = 0
    labels: int = 0
    scored: int = 0
    alerted: int = 0
    feature_misses: int = 0
    degraded: int = 0
    store_errors: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    shadow_alerts: Counter[str] = field(default_factory=Counter)

    def count(self, batch: FeatureBatch, scored: Scored, alerts: int) -> None:
        """Add a scored batch: its rows, misses, degradation, alerts and shadow alerts."""
        models = scored.models
        rows = len(batch.events)
        self.scored += rows
        self.alerted += alerts
        self.feature_misses += batch.misses
        self.degraded += rows if batch.degraded else 0
        self.store_errors += 1 if batch.degraded else 0
        for model, shadow in zip(models.shadows, scored.shadow_scores, strict=True):
            self.shadow_alerts[f"{model.name}:{model.version}"] += int(
                np.count_nonzero(shadow >= model.threshold))

    def add(self, other: BatchCounts) -> None:
        self.consumed += other.consumed
        self.dead_lettered += other.dead_lettered
        self.labels += other.labels
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
class FeatureBatch:
    """Stage one's answer: the valid events of a batch and their feature rows, and the
    positions of the records the decoder refused, with why."""

    events: list[Transaction]
    failures: list[tuple[int, RecordError]]
    matrix: Matrix
    misses: int = 0
    degraded: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent in each step (``decode``, ``enrich``)."""

    def kept(self, records: Sequence[SourceRecord]) -> list[SourceRecord]:
        """The records behind :attr:`events` (``records`` minus the refused ones)."""
        if not self.failures:
            return list(records)
        refused = {position for position, _ in self.failures}
        return [r for i, r in enumerate(records) if i not in refused]


@dataclass(slots=True)
class Scored:
    """Stage two's answer: every model's scores for a feature matrix (champion first)."""

    models: ModelSet
    matrix: Matrix
    scores: Scores
    shadow_scores: list[Scores]


@dataclass(slots=True)
class Emitted:
    """Stage three's answer: the champion's alerts and every model's score records as
    records to produce, and the input timestamps of the alerted events."""

    alerts: list[Output]
    scores: list[Output]
    alert_source_ms: list[int]


class Outputs:
    """The one home of the output topics: each kind of output record is built here.

    Adding an output topic is a method here and its name in ``kafka`` settings."""

    def __init__(self, topics: Topics, encoder: Encoder) -> None:
        self.topics = topics
        self.encoder = encoder

    def dead_letters(self, records: Sequence[SourceRecord],
                     failures: Sequence[tuple[int, RecordError]]) -> list[Output]:
        return [dead_letter(records[i], error, self.topics.dead_letter) for i, error in failures]

    def alerts(self, alerts: Sequence[Alert]) -> list[Output]:
        headers = _ALERT_HEADERS + _traceparent()
        encode, topic = self.encoder, self.topics.alerts
        return [Output(topic, a.card_id.encode(), encode(a), headers) for a in alerts]

    def scores(self, records: Sequence[ScoreRecord]) -> list[Output]:
        topic = self.topics.scores
        if not topic:
            return []
        return [Output(topic, r.card_id.encode(), self.encoder(r)) for r in records]


class Features:
    """Stage one: record values -> valid events and their feature rows, one store round trip.

    ``on_store_error`` is the Redis outage policy: ``fail-open`` gives NaN features and marks
    the batch ``degraded``; ``pause`` lets :class:`FeatureStoreError` propagate.
    """

    def __init__(self, decoder: Decoder, enricher: Enricher, store: FeatureStore, *,
                 on_store_error: Literal["fail-open", "pause"] = "fail-open",
                 tracer: trace.Tracer | None = None,
                 windows: WindowFeatures | None = None) -> None:
        self.decoder = decoder
        self.enricher = enricher
        self.store = store
        self.on_store_error = on_store_error
        self.tracer = tracer or trace.NoOpTracer()
        self.windows = windows

    def __call__(self, values: Sequence[bytes | None],
                 labels: Sequence[LabelRecord] = ()) -> FeatureBatch:
        started = time.perf_counter()
        with self.tracer.start_as_current_span("decode") as span:
            events, failures = self.decoder.many(values)
            failpoints.hit("after_decode")
            span.set_attributes({"stream_infer.records": len(values),
                                 "stream_infer.dead_letters": len(failures)})
        decoded = time.perf_counter()
        if not events and not (labels and self.windows is not None):
            return FeatureBatch(events, failures, _NO_ROWS, seconds={"decode": decoded - started})
        with self.tracer.start_as_current_span("enrich") as span:
            windows = self._windows(events, labels)
            if not events:
                return FeatureBatch(events, failures, _NO_ROWS,
                                    seconds={"decode": decoded - started})
            enriched = self.enricher.enrich(events, self._fetch, windows)
            span.set_attributes({"stream_infer.lookups": enriched.lookups,
                                 "stream_infer.feature_misses": enriched.misses,
                                 "stream_infer.degraded": enriched.degraded})
        return FeatureBatch(events, failures, enriched.matrix, enriched.misses,
                            enriched.degraded, {"decode": decoded - started,
                                                "enrich": time.perf_counter() - decoded})

    def _windows(self, events: Sequence[Transaction],
                 labels: Sequence[LabelRecord]) -> Matrix | None:
        """The window features (labels applied first); None when the state is unavailable
        and the policy is fail-open (those events then never enter the windows)."""
        if self.windows is None:
            return None
        try:
            return self.windows(events, labels)
        except FeatureStoreError:
            if self.on_store_error == "pause":
                raise
            return None

    def _fetch(self, lookups: list[Lookup]) -> Sequence[Reply] | None:
        try:
            return self.store.fetch(lookups)
        except FeatureStoreError:
            if self.on_store_error == "pause":
                raise
            return None


class Pipeline:
    """The stages, built once and applied to every batch, in data-flow order:
    :attr:`features` (values -> :class:`FeatureBatch`), :meth:`score` (-> :class:`Scored`),
    :meth:`emit` (-> :class:`Emitted`). :meth:`process` runs them on a batch of records.

    :meth:`swap` replaces the models between batches (hot reload).
    """

    def __init__(
        self,
        *,
        decoder: Decoder,
        models: ModelSet,
        store: FeatureStore,
        topics: Topics,
        encoder: Encoder,
        on_store_error: Literal["fail-open", "pause"] = "fail-open",
        clock: Callable[[], int] = wall_clock_ms,
        tracer: trace.Tracer | None = None,
        reasons_top_k: int = 0,
        windows: WindowFeatures | None = None,
        label_decoder: LabelDecoder | None = None,
        labels_max_ahead_ms: int = 0,
    ) -> None:
        self.reasons_top_k = reasons_top_k
        self.tracer = tracer or trace.NoOpTracer()
        self.models = models
        self.store = store
        self.outputs = Outputs(topics, encoder)
        self.clock = clock
        self.features = Features(decoder, models.enricher, store,
                                 on_store_error=on_store_error, tracer=self.tracer,
                                 windows=windows)
        self.label_decoder = label_decoder
        self.labels_max_ahead_ms = labels_max_ahead_ms
        """A label whose ``label_time`` is further ahead of :attr:`clock` is refused (0: no
        bound): it would beat every later correction of its event."""

    @property
    def model(self) -> Model:
        """The champion: the model whose scores raise alerts."""
        return self.models.champion

    def swap(self, models: ModelSet) -> None:
        """Serve ``models`` from the next batch on (call between batches)."""
        self.models = models
        self.features.enricher = models.enricher

    def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Every stage on a batch: its dead letters, alerts and score records, and the
        offsets to store once they are acknowledged."""
        models = self.models
        first: dict[TopicPartition, int] = {}
        nxt: dict[TopicPartition, int] = {}
        span_offsets(records, first, nxt)
        records, label_records = self._split(records)
        labels, label_failures = self._labels(label_records)
        batch = self.features([r.value() for r in records], labels)
        outputs = self.outputs.dead_letters(records, batch.failures)
        outputs += self.outputs.dead_letters(label_records, label_failures)
        failed = [*batch.failures, *label_failures]
        counts = BatchCounts(consumed=len(records) + len(label_records),
                             dead_lettered=len(failed), labels=len(labels),
                             dlq_reasons=Counter(e.reason for _, e in failed))
        outcome = BatchOutcome(outputs, first, nxt, counts, [], batch.seconds)
        if not batch.events:
            return outcome
        scoring = time.perf_counter()
        scored = self.score(batch.matrix, models)
        failpoints.hit("after_score")
        emitted = self.emit(scored, batch, batch.kept(records))
        outputs += emitted.alerts
        outputs += emitted.scores
        outcome.alert_source_ms = emitted.alert_source_ms
        counts.count(batch, scored, len(emitted.alerts))
        outcome.stage_seconds["score"] = time.perf_counter() - scoring
        return outcome

    def _split(self, records: Sequence[SourceRecord]
               ) -> tuple[Sequence[SourceRecord], list[SourceRecord]]:
        """The batch's events and, apart, its records from the labels topic."""
        topic = self.outputs.topics.labels
        if topic is None or self.label_decoder is None:
            return records, []
        labels = [r for r in records if r.topic() == topic]
        if not labels:
            return records, []
        return [r for r in records if r.topic() != topic], labels

    def _labels(self, records: Sequence[SourceRecord]
                ) -> tuple[list[LabelRecord], list[tuple[int, RecordError]]]:
        """Decoded labels, and the positions of the refused ones with why."""
        labels: list[LabelRecord] = []
        failures: list[tuple[int, RecordError]] = []
        decode, bound = self.label_decoder, self.labels_max_ahead_ms
        latest = self.clock() + bound if bound and records else None
        for i, record in enumerate(records):
            assert decode is not None
            try:
                label = decode(record.value())
                if latest is not None and label.label_time_ms > latest:
                    raise ValidationError(
                        f"label_time is more than {bound:,} ms (redis.windows_max_ahead_ms) "
                        "ahead of this worker's clock: a wrong clock, time zone or unit - at "
                        "`$.label_time`")
                labels.append(label)
            except RecordError as error:
                failures.append((i, error))
        return labels, failures

    def score(self, matrix: Matrix, models: ModelSet | None = None) -> Scored:
        """Stage two: every model's scores for the feature rows ``matrix`` (by default the
        models now served)."""
        models = models or self.models
        with self.tracer.start_as_current_span("score") as span:
            scores = models.champion.predict(models.champion_matrix(matrix))
            shadow_scores = models.shadow_scores(matrix)
            span.set_attributes({"stream_infer.rows": len(matrix),
                                 "stream_infer.shadow_models": len(shadow_scores)})
        return Scored(models, matrix, scores, shadow_scores)

    def emit(self, scored: Scored, batch: FeatureBatch,
             sources: Sequence[SourceRecord]) -> Emitted:
        """Stage three: alerts (champion only, explained) and score records (every model)
        for the events of ``batch``, as records to produce; ``sources`` are the records
        behind those events."""
        models = scored.models
        champion, events, degraded = models.champion, batch.events, batch.degraded
        matrix = models.champion_matrix(scored.matrix)
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
        score_outputs: list[Output] = []
        if self.outputs.topics.scores:
            every = [(champion, scored.scores, matrix, False)] + [
                (model, shadow, scored.matrix[:, cols], True) for model, shadow, cols
                in zip(models.shadows, scored.shadow_scores, models.columns, strict=True)]
            for model, scores, features, shadow in every:
                score_outputs += self.outputs.scores(make_score_records(
                    events, scores, features, model, scored_at=now, degraded=degraded,
                    shadow=shadow))
        return Emitted(self.outputs.alerts(alerts), score_outputs,
                       [sources[i].timestamp()[1] for i in rows.tolist()])


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
    headers: Headers = [
        *((k, v) for k, v in header_pairs(record.headers()) if not k.startswith("dlq.")),
        ("dlq.reason", error.reason.encode()),
        ("dlq.error", str(error).encode()),
        ("dlq.source.topic", (record.topic() or "").encode()),
        ("dlq.source.partition", str(record.partition()).encode()),
        ("dlq.source.offset", str(record.offset()).encode()),
        ("dlq.source.timestamp", str(ts).encode()),
        ("dlq.service", SERVICE),
    ]
    return Output(topic, record.key(), record.value(), headers)
