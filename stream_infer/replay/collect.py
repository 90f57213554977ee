"""The collector of a replay: each chunk through the live pipeline's stages, gathered as
columns of the results file (one row per scored event, in input order)."""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ..enrich import Matrix
from ..errors import ConfigError, redact
from ..pipeline import BatchCounts, FeatureBatch, Features
from ..records import SourceRecord, Transaction
from ..score import Scores

NO_LABEL = -1
DECODE_BATCH = 256
"""Records decoded and enriched together: few enough that their events die young, in cache
(decoding 5,000 before dropping any costs about a third more per event)."""
_EVENT_ID = operator.attrgetter("event_id")
_CARD_ID = operator.attrgetter("card_id")
_REPEATING = ["topic", "partition", "card_id", "label"]
"""Results columns worth a Parquet dictionary (encoding one for unique scores, features and
ids costs several times the rest of the write and makes the file larger)."""


@dataclass(slots=True)
class ReplayCounts(BatchCounts):
    """What happened to every input offset: the live counts, and the records outside the
    time range."""

    out_of_range: int = 0
    seconds: float = 0.0

    def accounted(self) -> int:
        return self.scored + self.dead_lettered + self.out_of_range

    def rejected(self, rows: Sequence[Rejected]) -> None:
        self.dead_lettered += len(rows)
        self.dlq_reasons.update(row.reason for row in rows)


class Rejected(msgspec.Struct, array_like=True, frozen=True):
    """A record the live decoder refused: where it was, why, and its bytes (the replay's
    dead letter, as the live service would have sent it to its dead-letter topic)."""

    partition: int
    offset: int
    reason: str
    error: str
    value: bytes | None


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
    rejected: list[Rejected] = field(default_factory=list)
    """The chunk's records the decoder refused, in input order."""

    def __len__(self) -> int:
        return len(self.event_ids)

    def add(self, batch: FeatureBatch) -> None:
        events = batch.events
        self.event_ids.extend(map(_EVENT_ID, events))
        self.card_ids.extend(map(_CARD_ID, events))
        self.event_times.extend([e.event_time_ms for e in events])
        self.labels.extend([NO_LABEL if e.label is None else e.label for e in events])
        self.matrices.append(batch.matrix)
        if self.events is not None:
            self.events.extend(events)

    def batch(self) -> FeatureBatch:
        """The chunk's kept events as one feature batch (for alerts)."""
        return FeatureBatch(self.events or [], [], self.matrix)

    @property
    def matrix(self) -> Matrix:
        return self.matrices[0] if len(self.matrices) == 1 else np.concatenate(self.matrices)


def decode_chunk(topic: str, values: Sequence[bytes | None], partitions: npt.NDArray[np.int32],
                 offsets: npt.NDArray[np.int64], features: Features, *,
                 sources: Sequence[SourceRecord] | None = None) -> Decoded:
    """The valid events of a chunk through the pipeline's first stage, as columns; the rows
    it refused, with reasons. With ``sources``, the events and their records are kept (to
    build alerts).

    Without store lookups or window features (features from the events) the chunk goes
    through the stage :data:`DECODE_BATCH` records at a time, so the events die young, in
    cache; with them, whole, for one store round trip and one window engine call per chunk.
    """
    decoded = Decoded(topic, events=[] if sources is not None else None)
    failed: list[int] = []
    whole = features.enricher.views or features.windows is not None
    step = max(len(values), 1) if whole else DECODE_BATCH
    for start in range(0, len(values), step):
        batch = features(values[start:start + step])
        for position, error in batch.failures:
            row = start + position
            failed.append(row)
            decoded.rejected.append(Rejected(int(partitions[row]), int(offsets[row]),
                                             error.reason, str(error), values[row]))
        if batch.events:
            decoded.add(batch)
    kept = np.delete(np.arange(len(values)), failed) if failed else None
    decoded.partitions = partitions if kept is None else partitions[kept]
    decoded.offsets = offsets if kept is None else offsets[kept]
    if sources is not None:
        decoded.sources = (list(sources) if kept is None
                           else [sources[i] for i in kept.tolist()])
    return decoded


@dataclass(slots=True)
class Results:
    """The scored chunks and every model's scores, gathered chunk by chunk."""

    models: list[str]
    thresholds: list[float]
    features: list[str]
    chunks: list[Decoded] = field(default_factory=list)
    scores: list[list[Scores]] = field(default_factory=list)

    def add(self, decoded: Decoded, scores: list[Scores]) -> None:
        """One chunk's events and every model's scores for them (champion first); the
        events themselves are dropped (their alerts are built by now)."""
        decoded.events = decoded.sources = None
        self.chunks.append(decoded)
        self.scores.append(scores)

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """Every column, rows in input order (topic, partition, offset)."""
        chunks = self.chunks
        names = sorted({c.topic for c in chunks})
        topic_ranks = np.repeat(np.array([names.index(c.topic) for c in chunks], dtype=np.intp),
                                [len(c.offsets) for c in chunks])
        partitions = _joined([c.partitions for c in chunks], np.int32)
        offsets = _joined([c.offsets for c in chunks], np.int64)
        order = np.lexsort((offsets, partitions, topic_ranks))
        matrix = (np.concatenate([c.matrix for c in chunks]) if chunks
                  else np.empty((0, len(self.features)), dtype=np.float32))
        columns: dict[str, npt.NDArray[Any]] = {
            "topic": np.array(names, dtype=object)[topic_ranks],
            "partition": partitions,
            "offset": offsets,
            "event_id": np.array(_chained(c.event_ids for c in chunks), dtype=object),
            "event_time": np.array(_chained(c.event_times for c in chunks), dtype=np.int64),
            "card_id": np.array(_chained(c.card_ids for c in chunks), dtype=object),
            "label": np.array(_chained(c.labels for c in chunks), dtype=np.int8),
        }
        for i, model in enumerate(self.models):
            columns[f"score:{model}"] = _joined([batch[i] for batch in self.scores], np.float32)
        for j, feature in enumerate(self.features):
            columns[f"feature:{feature}"] = matrix[:, j]
        if np.array_equal(order, np.arange(len(order))):  # already in order: no copies
            return columns
        return {name: column[order] for name, column in columns.items()}


def _chained(lists: Iterable[list[Any]]) -> list[Any]:
    return list(itertools.chain.from_iterable(lists))


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


class DeadLetterFile:
    """The replay's dead letters as JSON lines, one per refused record, in input order:
    ``topic``, ``partition``, ``offset``, ``reason``, ``error`` and the record's ``value``
    (UTF-8 text, long digit runs masked, as the live dead-letter headers never echo them)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._encode = msgspec.json.Encoder().encode
        self.written = 0

    def write(self, topic: str, rows: Sequence[Rejected]) -> None:
        for row in rows:
            value = None if row.value is None else redact(row.value.decode("utf-8", "replace"))
            self._file.write(self._encode({
                "topic": topic, "partition": row.partition, "offset": row.offset,
                "reason": row.reason, "error": row.error, "value": value}) + b"\n")
        self.written += len(rows)

    def close(self) -> None:
        self._file.close()
