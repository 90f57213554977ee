"""``stream-infer replay``: history through the live pipeline code, into a results file.

Input is a topic over a fixed offset range (resolved from times before reading, so the job
always ends) or a JSON-lines / Parquet file of events. Every record goes through the same
:meth:`Pipeline.score` as the live service: decode and validation, enrichment, the champion
and the challengers. Every input offset is accounted for: scored, dead-lettered (with its
reason), or outside the time range (a record inside the offsets whose timestamp is not).

Replay never joins a consumer group and never commits. It writes no record anywhere unless
given an output topic, which may not be one of the live service's topics.

The results file (Parquet) holds one row per scored event in input order (topic, partition,
offset): ids, event time, label, each model's score and the feature vector used. The same
inputs and models give a byte-identical file; its sha256 is the run's digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from . import backtest
from .adapters.memory import Record
from .config import Settings
from .errors import ConfigError
from .pipeline import Pipeline, Scored
from .records import Output, ScoreRecord, SourceRecord, epoch_ms
from .tables import PARQUET_SUFFIXES

NO_LABEL = -1
UNKNOWN_TIME = -(2**63)
FeatureSource = Literal["event", "snapshot", "redis", "scores"]


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
class Results:
    """Columns of the scored events, gathered batch by batch."""

    models: list[str]
    thresholds: list[float]
    features: list[str]
    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    card_ids: list[str] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[list[npt.NDArray[np.float32]]] = field(default_factory=list)
    matrices: list[npt.NDArray[np.float32]] = field(default_factory=list)

    def add(self, scored: Scored) -> None:
        sources, events = scored.sources, scored.events
        self.topics.extend([s.topic() or "" for s in sources])
        self.partitions.extend([s.partition() or 0 for s in sources])
        self.offsets.extend([s.offset() or 0 for s in sources])
        self.event_ids.extend([e.event_id for e in events])
        self.card_ids.extend([e.card_id for e in events])
        self.event_times.extend([e.event_time_ms for e in events])
        self.labels.extend([NO_LABEL if e.label is None else e.label for e in events])
        self.scores.append([scored.scores, *scored.shadow_scores])
        self.matrices.append(scored.matrix)

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """Every column, rows in input order (topic, partition, offset)."""
        order = np.lexsort((np.asarray(self.offsets), np.asarray(self.partitions),
                            np.asarray(self.topics)))
        matrix = (np.concatenate(self.matrices) if self.matrices
                  else np.empty((0, len(self.features)), dtype=np.float32))
        columns: dict[str, npt.NDArray[Any]] = {
            "topic": np.asarray(self.topics, dtype=object),
            "partition": np.asarray(self.partitions, dtype=np.int32),
            "offset": np.asarray(self.offsets, dtype=np.int64),
            "event_id": np.asarray(self.event_ids, dtype=object),
            "event_time": np.asarray(self.event_times, dtype=np.int64),
            "card_id": np.asarray(self.card_ids, dtype=object),
            "label": np.asarray(self.labels, dtype=np.int8),
        }
        for i, model in enumerate(self.models):
            parts = [batch[i] for batch in self.scores]
            columns[f"score:{model}"] = (np.concatenate(parts) if parts
                                         else np.empty(0, dtype=np.float32))
        for j, feature in enumerate(self.features):
            columns[f"feature:{feature}"] = matrix[:, j]
        return {name: column[order] for name, column in columns.items()}


def replay(batches: Iterable[Sequence[SourceRecord]], pipeline: Pipeline, *,
           counts: ReplayCounts | None = None,
           send: Callable[[list[Output]], None] | None = None) -> tuple[Results, ReplayCounts]:
    """Score every batch; ``send`` (if given) receives the champion's alerts per batch."""
    scoring = pipeline.scoring
    models = [f"{m.name}:{m.version}" for m in (scoring.champion, *scoring.shadows)]
    results = Results(models, [m.threshold for m in (scoring.champion, *scoring.shadows)],
                      list(scoring.enricher.features))
    counts = counts or ReplayCounts()
    started = time.perf_counter()
    for batch in batches:
        counts.consumed += len(batch)
        outcome, scored = pipeline.score(batch)
        counts.dead_lettered += outcome.counts.dead_lettered
        counts.dlq_reasons.update(outcome.counts.dlq_reasons)
        if scored is None:
            continue
        counts.scored += len(scored.events)
        results.add(scored)
        if send is not None:
            pipeline.complete(outcome, scored)
            send([o for o in outcome.outputs if o.topic == pipeline.topics.alerts])
    counts.seconds = time.perf_counter() - started
    return results, counts


def in_time_range(batches: Iterable[Sequence[SourceRecord]], counts: ReplayCounts,
                  from_ms: int | None, to_ms: int | None) -> Iterator[list[SourceRecord]]:
    """Only records whose timestamp is in ``[from_ms, to_ms)``; the others are counted."""
    low = -(2**63) if from_ms is None else from_ms
    high = 2**63 if to_ms is None else to_ms
    for batch in batches:
        kept = [r for r in batch
                if low <= (ts := r.timestamp()[1]) < high or ts == UNKNOWN_TIME]
        counts.out_of_range += len(batch) - len(kept)
        counts.consumed += len(batch) - len(kept)
        if kept:
            yield kept


def file_batches(path: Path, batch: int = 5000, *, timed: bool = True
                 ) -> Iterator[list[Record]]:
    """Records of a JSON-lines or Parquet file of events; offset = row number from 0.

    With ``timed``, a record's timestamp is its event's ``event_time`` (so ``--from/--to``
    select by event time), or :data:`UNKNOWN_TIME` when that cannot be read: such records are
    always kept, and decoding dead-letters them with the reason. Without it (no time range)
    the timestamps are 0 and the file is parsed once, by the pipeline.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"events file not found: {path}")
    values = _parquet_values(path) if path.suffix.lower() in PARQUET_SUFFIXES else _lines(path)
    chunk: list[Record] = []
    for offset, value in enumerate(values):
        chunk.append(Record(value, _topic=path.name, _offset=offset,
                            _timestamp=_when(value) if timed else 0))
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_results(results: Results, path: Path) -> str:
    """Write the Parquet results file; return its sha256 (the run's digest)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("writing results needs pyarrow: pip install 'stream-infer[parquet]'"
                          ) from None
    columns = results.columns()
    table = pa.table({name: pa.array(column) for name, column in columns.items()})
    table = table.set_column(
        table.schema.get_field_index("label"), "label",
        pa.array([None if v == NO_LABEL else int(v) for v in columns["label"].tolist()],
                 type=pa.int8()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", write_statistics=True)
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


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        for line in fh:
            yield line.rstrip(b"\r\n")


def _parquet_values(path: Path) -> Iterator[bytes]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Parquet needs pyarrow: pip install 'stream-infer[parquet]'"
                          ) from None
    encode = msgspec.json.Encoder().encode
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            yield encode({k: v for k, v in row.items() if v is not None})


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay, through which models, with which features, into which file.

    ``offsets`` gives ``[start, end)`` per partition explicitly instead of a time range.
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
    from .service import replay_pipeline

    kafka = settings.kafka
    live = {kafka.alert_topic, kafka.dlq_topic, kafka.scores_topic, *kafka.input_topics}
    if options.output_topic and options.output_topic in live:
        raise ConfigError(f"replay: output topic {options.output_topic!r} is a live topic of "
                          "this configuration; replays write to their own topic")
    logged = _logged_vectors(settings, options) if options.features == "scores" else None
    pipeline = replay_pipeline(settings, options.models or settings.model.refs(),
                               features=options.features, snapshots=options.snapshots,
                               logged=logged, alert_topic=options.output_topic)
    counts = ReplayCounts()
    batches, origin, expected = _open_input(settings, options, counts)
    sink = _alert_sink(settings, options.output_topic)
    try:
        results, counts = replay(batches, pipeline, counts=counts,
                                 send=sink.send if sink else None)
        if sink:
            sink.flush(60.0)
    finally:
        if sink:
            sink.close()
    digest = write_results(results, options.out)
    columns = results.columns()
    reports = [backtest.evaluate(model, threshold, columns[f"score:{model}"], columns["label"],
                                 columns["card_id"], columns["event_time"], k=options.k)
               for model, threshold in zip(results.models, results.thresholds, strict=True)]
    features = options.features + (" (live Redis: NOT point-in-time)"
                                    if options.features == "redis" else "")
    context: dict[str, Any] = {
        "input": origin, "features": features, "records": counts.consumed,
        "scored": counts.scored, "dead_lettered": counts.dead_lettered,
        "dlq_reasons": dict(counts.dlq_reasons), "out_of_range": counts.out_of_range,
        "offsets_in_range": expected, "results": str(options.out), "sha256": digest}
    return ReplayRun(origin, counts, results, columns, digest, reports, context, expected)


def _logged_vectors(settings: Settings, options: ReplayOptions
                    ) -> dict[str, dict[str, float | None]]:
    """Event id -> the feature vector the live champion scored, from the scores topic."""
    topic = options.scores_topic or settings.kafka.scores_topic
    if not topic:
        raise ConfigError("replay --features scores: give --scores-topic (or kafka.scores_topic)")
    from .adapters.kafka import read_to_end

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
                ) -> tuple[Iterable[Sequence[SourceRecord]], str, int | None]:
    if options.input is not None:
        timed = options.from_ms is not None or options.to_ms is not None
        batches: Iterable[Sequence[SourceRecord]] = file_batches(options.input, timed=timed)
        if timed:
            batches = in_time_range(batches, counts, options.from_ms, options.to_ms)
        return batches, str(options.input), None
    if not options.topic:
        raise ConfigError("replay: give a topic or an input file")
    from .adapters.kafka import read_range, resolve_range

    config = settings.kafka.common_config()
    ranges = options.offsets or resolve_range(config, options.topic, from_ms=options.from_ms,
                                              to_ms=options.to_ms)
    batches = in_time_range(read_range(config, options.topic, ranges), counts,
                            options.from_ms, options.to_ms)
    origin = f"{options.topic} offsets " + (", ".join(
        f"[{p}]:{start}-{end - 1}" for p, (start, end) in ranges.items() if end > start)
        or "(none)")
    return batches, origin, sum(end - start for start, end in ranges.values())


def _alert_sink(settings: Settings, topic: str | None) -> Any:
    if not topic:
        return None
    from .adapters.kafka import KafkaSink, ensure_topics

    kafka = settings.kafka
    ensure_topics(kafka.common_config(), [topic], create=kafka.create_topics,
                  partitions=kafka.topic_partitions, replication_factor=kafka.replication_factor)
    return KafkaSink(kafka.producer_config())
