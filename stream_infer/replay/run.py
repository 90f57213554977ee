"""``stream-infer replay``: history through the live pipeline code, into a results file.

Input is a topic over a fixed offset range (resolved from times before reading, so the job
always ends) or a JSON-lines / Parquet file of events, read in chunks. Every record goes
through the live service's stages: its decoder and validation (a record it refuses is
dead-lettered with the same reason), its enricher and store, the champion and the
challengers. Every input offset is accounted for: scored, dead-lettered (with its reason), or
outside the time range (a record inside the offsets whose timestamp is not).

Replay never joins a consumer group and never commits. It writes no record anywhere unless
given an output topic, which may not be one of the live service's topics.

The results file (Parquet) holds one row per scored event in input order (topic, partition,
offset): ids, event time, label, each model's score and the feature vector used. The same
inputs and models give a byte-identical file; its sha256 is the run's digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from ..adapters.memory import Record
from ..config import Settings
from ..decode import Decoder
from ..enrich import Enricher, FeatureStore, Matrix
from ..errors import ConfigError
from ..offline import backtest
from ..offline.tables import PARQUET_SUFFIXES, parquet_json_rows, read_lines
from ..pipeline import BatchCounts, BatchOutcome, Pipeline, Scored
from ..records import Output, ScoreRecord, SourceRecord, Transaction, epoch_ms
from ..score import Scores

if TYPE_CHECKING:
    from .parallel import DecodePool

NO_LABEL = -1
UNKNOWN_TIME = -(2**63)
FeatureSource = Literal["event", "snapshot", "redis", "scores"]
BATCH = 5000
"""Records per chunk: what the models score in one call."""
DECODE_BATCH = 256
"""Records decoded and enriched together: few enough that their events die young, in cache
(decoding 5,000 before dropping any costs about a third more per event)."""
_EVENT_ID = operator.attrgetter("event_id")
_CARD_ID = operator.attrgetter("card_id")
_REPEATING = ["topic", "partition", "card_id", "label"]
"""Results columns worth a Parquet dictionary (encoding one for unique scores, features and
ids costs several times the rest of the write and makes the file larger)."""


@dataclass(slots=True)
class ReplayCounts:
    """What happened to every input offset."""

    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    out_of_range: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def accounted(self) -> int:
        return self.scored + self.dead_lettered + self.out_of_range


@dataclass(slots=True)
class Chunk:
    """Consecutive input records of one topic (or file): their values and coordinates.

    ``timestamps`` (epoch ms, :data:`UNKNOWN_TIME` when unreadable) select by time;
    ``records`` are the Kafka messages themselves, when there are any.
    """

    topic: str
    values: list[bytes | None]
    partitions: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64] | None = None
    records: list[SourceRecord] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: npt.NDArray[np.intp]) -> Chunk:
        """The records at ``rows``, in that order."""
        listed = rows.tolist()
        return Chunk(self.topic, [self.values[i] for i in listed], self.partitions[rows],
                     self.offsets[rows], None if self.timestamps is None else self.timestamps[rows],
                     None if self.records is None else [self.records[i] for i in listed])

    def sources(self) -> list[SourceRecord]:
        """The records as :class:`SourceRecord` (Kafka messages, or file rows)."""
        if self.records is not None:
            return self.records
        times = [0] * len(self) if self.timestamps is None else self.timestamps.tolist()
        return [Record(value, _topic=self.topic, _partition=p, _offset=o, _timestamp=t)
                for value, p, o, t in zip(self.values, self.partitions.tolist(),
                                          self.offsets.tolist(), times, strict=True)]


@dataclass(slots=True)
class Decoded:
    """The valid events of a chunk as the columns replay keeps, with their feature matrix
    and coordinates (``sources`` and ``events`` are kept only to build alerts)."""

    topic: str
    partitions: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))
    offsets: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    event_ids: list[str] = field(default_factory=list)
    card_ids: list[str] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    matrices: list[Matrix] = field(default_factory=list)
    events: list[Transaction] | None = None
    sources: list[SourceRecord] | None = None
    rejected: list[int] = field(default_factory=list)
    """The chunk's rows the decoder refused, and why (``reasons``, in the same order)."""
    reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)

    def add(self, events: list[Transaction], matrix: Matrix) -> None:
        self.event_ids.extend(map(_EVENT_ID, events))
        self.card_ids.extend(map(_CARD_ID, events))
        self.event_times.extend([e.event_time_ms for e in events])
        self.labels.extend([NO_LABEL if e.label is None else e.label for e in events])
        self.matrices.append(matrix)
        if self.events is not None:
            self.events.extend(events)

    @property
    def matrix(self) -> Matrix:
        return self.matrices[0] if len(self.matrices) == 1 else np.concatenate(self.matrices)


@dataclass(frozen=True, slots=True)
class Stages:
    """What turns a chunk into :class:`Decoded`: the live decoder, enricher and store."""

    decode: Decoder
    enricher: Enricher
    store: FeatureStore

    @classmethod
    def of(cls, pipeline: Pipeline) -> Stages:
        return cls(pipeline.decoder, pipeline.scoring.enricher, pipeline.store)

    def enrich(self, events: list[Transaction]) -> Matrix:
        return self.enricher.enrich(events, self.store.fetch).matrix


@dataclass(slots=True)
class Results:
    """Columns of the scored events, gathered chunk by chunk."""

    models: list[str]
    thresholds: list[float]
    features: list[str]
    topics: list[str] = field(default_factory=list)
    partitions: list[npt.NDArray[np.int32]] = field(default_factory=list)
    offsets: list[npt.NDArray[np.int64]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    card_ids: list[str] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[list[npt.NDArray[np.float32]]] = field(default_factory=list)
    matrices: list[npt.NDArray[np.float32]] = field(default_factory=list)

    def add(self, decoded: Decoded, matrix: Matrix, scores: list[Scores]) -> None:
        """One chunk's events, their features and every model's scores (champion first)."""
        self.topics.append(decoded.topic)
        self.partitions.append(decoded.partitions)
        self.offsets.append(decoded.offsets)
        self.event_ids.extend(decoded.event_ids)
        self.card_ids.extend(decoded.card_ids)
        self.event_times.extend(decoded.event_times)
        self.labels.extend(decoded.labels)
        self.scores.append(scores)
        self.matrices.append(matrix)

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """Every column, rows in input order (topic, partition, offset)."""
        sizes = [len(o) for o in self.offsets]
        names = sorted(set(self.topics))
        topic_ranks = np.repeat(np.array([names.index(t) for t in self.topics], dtype=np.intp),
                                sizes)
        partitions, offsets = _joined(self.partitions, np.int32), _joined(self.offsets, np.int64)
        order = np.lexsort((offsets, partitions, topic_ranks))
        matrix = (np.concatenate(self.matrices) if self.matrices
                  else np.empty((0, len(self.features)), dtype=np.float32))
        columns: dict[str, npt.NDArray[Any]] = {
            "topic": np.array(names, dtype=object)[topic_ranks],
            "partition": partitions,
            "offset": offsets,
            "event_id": np.array(self.event_ids, dtype=object),
            "event_time": np.array(self.event_times, dtype=np.int64),
            "card_id": np.array(self.card_ids, dtype=object),
            "label": np.array(self.labels, dtype=np.int8),
        }
        for i, model in enumerate(self.models):
            columns[f"score:{model}"] = _joined([batch[i] for batch in self.scores], np.float32)
        for j, feature in enumerate(self.features):
            columns[f"feature:{feature}"] = matrix[:, j]
        if np.array_equal(order, np.arange(len(order))):  # already in order: no copies
            return columns
        return {name: column[order] for name, column in columns.items()}


def replay(chunks: Iterable[Chunk], pipeline: Pipeline, *, counts: ReplayCounts | None = None,
           send: Callable[[list[Output]], None] | None = None) -> tuple[Results, ReplayCounts]:
    """Score every chunk with the live stages; ``send`` (if given) receives the champion's
    alerts per chunk.

    Each record is decoded by the pipeline's decoder (a :class:`RecordError` dead-letters it
    with its reason, as live), enriched by its enricher (a store error fails the replay) and
    scored by every model. The models run on one worker thread, so a chunk's scoring
    overlaps the decoding of the next one; results are gathered in input order.
    """
    counts = counts or ReplayCounts()
    parts = decoded_chunks(chunks, Stages.of(pipeline), counts, keep_events=send is not None)
    return score(parts, pipeline, counts=counts, send=send)


def decoded_chunks(chunks: Iterable[Chunk], stages: Stages, counts: ReplayCounts, *,
                   keep_events: bool = False) -> Iterator[Decoded]:
    """Each chunk decoded and enriched in this process, counted as consumed and
    dead-lettered."""
    for chunk in chunks:
        counts.consumed += len(chunk)
        decoded = decode_chunk(chunk, stages, keep_events=keep_events)
        count_rejected(counts, decoded.reasons)
        yield decoded


def count_rejected(counts: ReplayCounts, reasons: list[str]) -> None:
    counts.dead_lettered += len(reasons)
    counts.dlq_reasons.update(reasons)


def score(parts: Iterable[Decoded], pipeline: Pipeline, *, counts: ReplayCounts,
          send: Callable[[list[Output]], None] | None = None) -> tuple[Results, ReplayCounts]:
    """Score decoded chunks with every model of ``pipeline`` on one worker thread, so a
    chunk's scoring overlaps the decoding of the next; gather them in the order given (chunks
    without a valid event are skipped).
    ``counts.seconds`` is the time this took, decoding (pulling ``parts``) included."""
    scoring = pipeline.scoring
    models = [f"{m.name}:{m.version}" for m in (scoring.champion, *scoring.shadows)]
    results = Results(models, [m.threshold for m in (scoring.champion, *scoring.shadows)],
                      list(scoring.enricher.features))
    started = time.perf_counter()
    waiting: deque[tuple[Decoded, Matrix, Future[list[Scores]]]] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="replay-score") as models_thread:
        try:
            for decoded in parts:
                if not len(decoded):
                    continue
                matrix = decoded.matrix
                waiting.append((decoded, matrix, models_thread.submit(
                    _score, pipeline, decoded, matrix, send)))
                if len(waiting) > 1:
                    _gather(results, counts, *waiting.popleft())
            while waiting:
                _gather(results, counts, *waiting.popleft())
        finally:
            for *_, future in waiting:
                future.cancel()
    counts.seconds = time.perf_counter() - started
    return results, counts


def decode_chunk(chunk: Chunk, stages: Stages, *, keep_events: bool = False) -> Decoded:
    """The valid events of ``chunk`` and their features; the rows refused, with reasons.

    Without store lookups (features from the events) the chunk is decoded and enriched
    :data:`DECODE_BATCH` records at a time, so the events die young, in cache; with them,
    whole, for one store round trip per chunk.
    """
    many = stages.decode.many
    decoded = Decoded(chunk.topic, events=[] if keep_events else None)
    failed, reasons = decoded.rejected, decoded.reasons
    step = max(len(chunk), 1) if stages.enricher.views else DECODE_BATCH
    for start in range(0, len(chunk), step):
        events, failures = many(chunk.values[start:start + step])
        for position, error in failures:
            failed.append(start + position)
            reasons.append(error.reason)
        if events:
            decoded.add(events, stages.enrich(events))
    if failed:
        chunk = chunk.take(np.delete(np.arange(len(chunk)), failed))
    decoded.partitions, decoded.offsets = chunk.partitions, chunk.offsets
    if keep_events:
        decoded.sources = chunk.sources()
    return decoded


def _score(pipeline: Pipeline, decoded: Decoded, matrix: Matrix,
           send: Callable[[list[Output]], None] | None) -> list[Scores]:
    """Every model's scores (champion first); with ``send``, the champion's alerts to it."""
    scoring = pipeline.scoring
    scores = scoring.champion.predict(scoring.champion_matrix(matrix))
    shadows = scoring.shadow_scores(matrix)
    if send is not None and decoded.events is not None and decoded.sources is not None:
        outcome = BatchOutcome([], {}, {}, BatchCounts(), [], defaultdict(float))
        pipeline.complete(outcome, Scored(scoring, decoded.events, decoded.sources, matrix,
                                          scores, shadows, False))
        send([o for o in outcome.outputs if o.topic == pipeline.topics.alerts])
    return [scores, *shadows]


def _gather(results: Results, counts: ReplayCounts, decoded: Decoded, matrix: Matrix,
            scored: Future[list[Scores]]) -> None:
    results.add(decoded, matrix, scored.result())
    counts.scored += len(decoded)


def in_time_range(chunks: Iterable[Chunk], counts: ReplayCounts, from_ms: int | None,
                  to_ms: int | None) -> Iterator[Chunk]:
    """Only records whose timestamp is in ``[from_ms, to_ms)`` or unknown; the others are
    counted (consumed and out of range)."""
    for chunk in chunks:
        if chunk.timestamps is None:
            raise ValueError("in_time_range needs chunks with timestamps")
        times = chunk.timestamps
        inside = np.ones(len(times), dtype=bool) if from_ms is None else times >= from_ms
        if to_ms is not None:
            inside &= times < to_ms
        inside |= times == UNKNOWN_TIME
        kept = chunk if inside.all() else chunk.take(np.flatnonzero(inside))
        counts.out_of_range += len(chunk) - len(kept)
        counts.consumed += len(chunk) - len(kept)
        if len(kept):
            yield kept


def file_chunks(path: Path, batch: int = BATCH, *, timed: bool = True) -> Iterator[Chunk]:
    """Chunks of a JSON-lines or Parquet file of events; offset = row number from 0.

    With ``timed``, a record's timestamp is its event's ``event_time`` (so ``--from/--to``
    select by event time), or :data:`UNKNOWN_TIME` when that cannot be read: such records are
    always kept, and decoding dead-letters them with the reason. Without it (no time range)
    the file is parsed once, by the pipeline's decoder.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"events file not found: {path}")
    blocks = (parquet_json_rows(path) if path.suffix.lower() in PARQUET_SUFFIXES
              else read_lines(path))
    pending: list[bytes] = []
    start = 0
    for block in blocks:
        pending.extend(block)
        while len(pending) >= batch:
            yield file_chunk(path.name, pending[:batch], start, timed)
            del pending[:batch]
            start += batch
    if pending:
        yield file_chunk(path.name, pending, start, timed)


def topic_chunks(topic: str, batches: Iterable[Sequence[SourceRecord]]) -> Iterator[Chunk]:
    """Chunks of Kafka messages (of ``topic``), timestamped by each message's timestamp."""
    for batch in batches:
        count = len(batch)
        yield Chunk(topic, [r.value() for r in batch],
                    np.fromiter((r.partition() or 0 for r in batch), np.int32, count),
                    np.fromiter((r.offset() or 0 for r in batch), np.int64, count),
                    np.fromiter((r.timestamp()[1] for r in batch), np.int64, count),
                    list(batch))


def file_chunk(name: str, values: list[bytes], start: int, timed: bool) -> Chunk:
    """Lines ``values`` of file ``name``, the first at offset ``start``; with ``timed``,
    timestamped by event time (see :func:`file_chunks`)."""
    count = len(values)
    return Chunk(name, list(values), np.zeros(count, dtype=np.int32),
                 np.arange(start, start + count, dtype=np.int64),
                 np.fromiter(map(_when, values), np.int64, count) if timed else None)


def _joined(parts: list[npt.NDArray[Any]], dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def write_results(columns: Mapping[str, npt.NDArray[Any]], path: Path) -> str:
    """Write the Parquet results file (from :meth:`Results.columns`); return its sha256 (the
    run's digest)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("writing results needs pyarrow: pip install 'stream-infer[parquet]'"
                          ) from None
    labels = columns["label"]
    table = pa.table({name: (pa.array(labels, mask=labels == NO_LABEL, type=pa.int8())
                             if name == "label" else pa.array(column))
                      for name, column in columns.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", write_statistics=True,
                   use_dictionary=_REPEATING)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _EventTime(msgspec.Struct):
    event_time: dt.datetime | int


_read_time = msgspec.json.Decoder(_EventTime).decode


def _when(value: bytes) -> int:
    try:
        when = _read_time(value).event_time
    except (msgspec.DecodeError, msgspec.ValidationError):
        return UNKNOWN_TIME
    if isinstance(when, int):
        return when
    return epoch_ms(when) if when.tzinfo else UNKNOWN_TIME


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay, through which models, with which features, into which file.

    ``offsets`` gives ``[start, end)`` per partition explicitly instead of a time range.
    ``jobs``: processes decoding a JSON-lines input with event features (1: this one; None:
    one per core for large files), see :mod:`stream_infer.replay.parallel`.
    """

    out: Path
    topic: str | None = None
    input: Path | None = None
    features: FeatureSource = "event"
    models: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[str, Path] = field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None
    output_topic: str | None = None
    scores_topic: str | None = None
    offsets: dict[int, tuple[int, int]] | None = None
    k: int = 100
    jobs: int | None = None


@dataclass
class ReplayRun:
    """A finished replay: counts, the results file's digest, and each model's report."""

    origin: str
    counts: ReplayCounts
    results: Results
    columns: dict[str, npt.NDArray[Any]]
    digest: str
    reports: list[backtest.ModelReport]
    context: dict[str, Any]
    offsets_in_range: int | None

    def html(self) -> str:
        labels = self.columns["label"]
        scores = {m: self.columns[f"score:{m}"] for m in self.results.models}
        return backtest.html_page(
            self.reports, {m: backtest.pr_curve(s, labels) for m, s in scores.items()},
            {m: backtest.histogram(s, labels) for m, s in scores.items()}, self.context)


def run_replay(settings: Settings, options: ReplayOptions) -> ReplayRun:
    """Resolve the input, score it with the live pipeline code, write and evaluate results.

    Refuses to write to a live topic of ``settings``; a store or broker failure fails the run.
    """
    from ..service.app import replay_pipeline
    from .parallel import DecodePool, parallel_jobs

    kafka = settings.kafka
    live = {kafka.alert_topic, kafka.dlq_topic, kafka.scores_topic, *kafka.input_topics}
    if options.output_topic and options.output_topic in live:
        raise ConfigError(f"replay: output topic {options.output_topic!r} is a live topic of "
                          "this configuration; replays write to their own topic")
    logged = _logged_vectors(settings, options) if options.features == "scores" else None
    jobs = parallel_jobs(settings, options)
    with ExitStack() as stack:  # the children start first: they import while models load
        pool = stack.enter_context(DecodePool(jobs)) if jobs > 1 else None
        pipeline = replay_pipeline(settings, options.models or settings.model.refs(),
                                   features=options.features, snapshots=options.snapshots,
                                   logged=logged, alert_topic=options.output_topic)
        results, counts, origin, expected = _score_input(settings, options, pipeline, pool)
    columns = results.columns()
    digest = write_results(columns, options.out)
    reports = [backtest.evaluate(model, threshold, columns[f"score:{model}"], columns["label"],
                                 columns["card_id"], columns["event_time"], k=options.k)
               for model, threshold in zip(results.models, results.thresholds, strict=True)]
    features = options.features + (" (live Redis: NOT point-in-time)"
                                    if options.features == "redis" else "")
    context: dict[str, Any] = {
        "input": origin, "features": features, "decoding_processes": jobs,
        "records": counts.consumed, "scored": counts.scored, "dead_lettered": counts.dead_lettered,
        "dlq_reasons": dict(counts.dlq_reasons), "out_of_range": counts.out_of_range,
        "offsets_in_range": expected, "results": str(options.out), "sha256": digest}
    return ReplayRun(origin, counts, results, columns, digest, reports, context, expected)


def _score_input(settings: Settings, options: ReplayOptions, pipeline: Pipeline,
                 pool: DecodePool | None
                 ) -> tuple[Results, ReplayCounts, str, int | None]:
    """The input scored (decoded by ``pool`` if given), with its name and, for a topic, the
    number of offsets in range; the champion's alerts go to ``options.output_topic``."""
    from .parallel import Spec

    counts = ReplayCounts()
    if pool is not None and options.input is not None:
        spec = Spec.of(settings, pipeline.scoring.enricher.features, options)
        parts: Iterable[Decoded] = pool.parts(options.input, spec, counts)
        origin, expected = str(options.input), None
    else:
        chunks, origin, expected = _open_input(settings, options, counts)
        parts = decoded_chunks(chunks, Stages.of(pipeline), counts,
                               keep_events=options.output_topic is not None)
    sink = _alert_sink(settings, options.output_topic)
    try:
        results, counts = score(parts, pipeline, counts=counts, send=sink.send if sink else None)
        if sink:
            sink.flush(60.0)
    finally:
        if sink:
            sink.close()
    return results, counts, origin, expected


def _logged_vectors(settings: Settings, options: ReplayOptions
                    ) -> dict[str, dict[str, float | None]]:
    """Event id -> the feature vector the live champion scored, from the scores topic."""
    topic = options.scores_topic or settings.kafka.scores_topic
    if not topic:
        raise ConfigError("replay --features scores: give --scores-topic (or kafka.scores_topic)")
    from ..adapters.kafka import read_to_end

    decode = msgspec.json.Decoder(ScoreRecord).decode
    vectors: dict[str, dict[str, float | None]] = {}
    for batch in read_to_end(settings.kafka.common_config(), topic):
        for message in batch:
            try:
                record = decode(message.value() or b"")
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if not record.shadow:
                vectors[record.event_id] = record.features
    if not vectors:
        raise ConfigError(f"replay --features scores: no score records on {topic!r}")
    return vectors


def _open_input(settings: Settings, options: ReplayOptions, counts: ReplayCounts
                ) -> tuple[Iterable[Chunk], str, int | None]:
    if options.input is not None:
        timed = options.from_ms is not None or options.to_ms is not None
        chunks = file_chunks(options.input, timed=timed)
        if timed:
            chunks = in_time_range(chunks, counts, options.from_ms, options.to_ms)
        return chunks, str(options.input), None
    if not options.topic:
        raise ConfigError("replay: give a topic or an input file")
    from ..adapters.kafka import read_range, resolve_range

    config = settings.kafka.common_config()
    ranges = options.offsets or resolve_range(config, options.topic, from_ms=options.from_ms,
                                              to_ms=options.to_ms)
    chunks = in_time_range(topic_chunks(options.topic, read_range(config, options.topic, ranges)),
                           counts, options.from_ms, options.to_ms)
    origin = f"{options.topic} offsets " + (", ".join(
        f"[{p}]:{start}-{end - 1}" for p, (start, end) in ranges.items() if end > start)
        or "(none)")
    return chunks, origin, sum(end - start for start, end in ranges.values())


def _alert_sink(settings: Settings, topic: str | None) -> Any:
    if not topic:
        return None
    from ..adapters.kafka import KafkaSink, ensure_topics

    kafka = settings.kafka
    ensure_topics(kafka.common_config(), [topic], create=kafka.create_topics,
                  partitions=kafka.topic_partitions, replication_factor=kafka.replication_factor)
    return KafkaSink(kafka.producer_config())
