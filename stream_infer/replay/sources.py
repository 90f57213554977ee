"""Bounded sources for replay: a topic over resolved offset ranges, or a file of events,
as :class:`Chunk` s of values with their coordinates and timestamps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from ..adapters.memory import Record
from ..config import Settings
from ..errors import ConfigError
from ..offline.tables import PARQUET_SUFFIXES, parquet_json_rows, read_lines
from ..records import SourceRecord, epoch_ms
from .collect import ReplayCounts
from .options import ReplayOptions

UNKNOWN_TIME = -(2**63)
BATCH = 5000
"""Records per chunk: what the models score in one call."""


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


def open_input(settings: Settings, options: ReplayOptions, counts: ReplayCounts
               ) -> tuple[Iterable[Chunk], str, int | None]:
    """The chunks of ``options``' input, its name, and for a topic the offsets in range."""
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
