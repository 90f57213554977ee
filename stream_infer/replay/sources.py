"""Bounded sources for replay: a topic read to the end of each partition, or a file of
events, as :class:`Chunk` s of values with their coordinates and timestamps.

What ``--from A --to B`` selects on a topic: the records whose timestamp ``t`` has
``A <= t < B`` (a missing bound: no limit), exactly. Every record read is filtered by its
timestamp and counted: selected, or outside the time range. Offsets only decide where
reading starts, and nothing the broker says is taken as an end:

- Each partition is read to its end of log, found by reading to it (the partition EOF),
  never to a high watermark (which a broker may under-report) nor to an offset for ``--to``:
  in Kafka records are ordered by offset, not by timestamp, so a record after the first one
  at or after ``B`` may still be earlier than ``B``. ``--to`` filters; it never stops a read.
- Without ``--from`` a partition is read from its beginning. With it, the broker's offset
  for ``A`` (``offsets_for_times``: the first record at or after ``A``) is a hint, checked
  by reading the :data:`CHECKED_BEFORE` records before it: reading starts there only if they
  are all earlier than ``A``; otherwise (a broker answering by append time, as Tansu does),
  or if it cannot be checked, it starts at the beginning. Beyond those records replay relies
  on the offset being the first at or after ``A`` whatever the order of timestamps, which is
  what Apache Kafka's time index answers. Out-of-order timestamps alone thus never make
  replay read a partition from its beginning; a wrong offset from the broker does.
- Explicit ``--offsets`` are read exactly, and must exist: a log that ends before the last
  one asked fails the replay.

Whatever cannot be proved fails loudly (:class:`AccountingError`, or BrokerError from the
reader), naming the partition and both figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

from ..adapters.memory import Record
from ..config import Settings
from ..errors import AccountingError, ConfigError
from ..offline.tables import PARQUET_SUFFIXES, parquet_json_rows, read_lines
from ..records import SourceRecord, epoch_ms
from .collect import ReplayCounts
from .options import ReplayOptions

if TYPE_CHECKING:
    from ..adapters.kafka import PartitionRead

UNKNOWN_TIME = -(2**63)
BATCH = 5000
"""Records per chunk: what the models score in one call."""
WINDOWED_BATCH = 50_000
"""Records per chunk when ``[windows.*]`` are configured: each chunk is one call
of the window engine, which merges the whole log of every entity the call touches, so
larger chunks copy fewer rows per event."""
CHECKED_BEFORE = 1000
"""Records read before the broker's offset for ``--from`` to check it: all must be earlier."""


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


@dataclass
class ReplayInput:
    """An opened input: its chunks and name, and for a topic what is read of each partition
    (filled in as the chunks are read)."""

    chunks: Iterable[Chunk]
    name: str
    partitions: dict[int, PartitionRead] | None = None

    @property
    def origin(self) -> str:
        """The name; for a topic, with the offsets read of each partition (once read)."""
        if self.partitions is None:
            return self.name
        spans = ", ".join(f"[{p}]:{r.first}-{r.last}"
                          for p, r in sorted(self.partitions.items()) if r.records)
        return f"{self.name} offsets {spans or '(none)'}"

    @property
    def records_read(self) -> int | None:
        """Records read from the topic (None for a file)."""
        return None if self.partitions is None else sum(
            r.records for r in self.partitions.values())

    def check(self, counts: ReplayCounts) -> None:
        """Raise :class:`AccountingError` unless every record read is accounted for: scored,
        dead-lettered or outside the time range."""
        read, accounted = self.records_read, counts.accounted()
        if counts.consumed != accounted or read not in (None, counts.consumed):
            raise AccountingError(
                f"replay: {read if read is not None else counts.consumed:,} records read but "
                f"{accounted:,} accounted for (scored {counts.scored:,}, dead-lettered "
                f"{counts.dead_lettered:,}, outside the time range {counts.out_of_range:,})")


def open_input(settings: Settings, options: ReplayOptions, counts: ReplayCounts
               ) -> ReplayInput:
    """``options``' input, opened: a file, or a topic (see :func:`topic_input`)."""
    batch = WINDOWED_BATCH if settings.windows else BATCH
    if options.input is not None:
        timed = options.from_ms is not None or options.to_ms is not None
        chunks = file_chunks(options.input, batch, timed=timed)
        if timed:
            chunks = in_time_range(chunks, counts, options.from_ms, options.to_ms)
        return ReplayInput(chunks, str(options.input))
    if not options.topic:
        raise ConfigError("replay: give a topic or an input file")
    return topic_input(settings.kafka.common_config(), options.topic, counts,
                       from_ms=options.from_ms, to_ms=options.to_ms, offsets=options.offsets,
                       batch=batch)


def topic_input(config: Mapping[str, Any], topic: str, counts: ReplayCounts, *,
                from_ms: int | None = None, to_ms: int | None = None,
                offsets: Mapping[int, tuple[int, int]] | None = None,
                batch: int = BATCH) -> ReplayInput:
    """The records of ``topic`` with a timestamp in ``[from_ms, to_ms)``, the others counted
    out of range: each partition read from its :func:`start_points` to its end of log, or
    over explicit ``offsets`` (``[start, end)`` per partition; see the module's docstring);
    chunks of at most ``batch`` records."""
    from ..adapters.kafka import PartitionRead, read_range

    parts = ({p: PartitionRead(p, start, end, why="--offsets")
              for p, (start, end) in offsets.items()} if offsets is not None
             else start_points(config, topic, from_ms))
    batches = _proved(topic, read_range(config, topic, parts, batch=batch), parts)
    return ReplayInput(in_time_range(topic_chunks(topic, batches), counts, from_ms, to_ms),
                       topic, parts)


def start_points(config: Mapping[str, Any], topic: str, from_ms: int | None, *,
                 checked: int = CHECKED_BEFORE) -> dict[int, PartitionRead]:
    """Where to start reading each partition of ``topic`` so as to see every record at or
    after ``from_ms``: the broker's offset for it when the ``checked`` records before that
    offset prove earlier, else the beginning (see the module's docstring)."""
    from ..adapters.kafka import PartitionRead, broker_offsets, read_range

    claims = broker_offsets(config, topic, from_ms)
    if from_ms is None:
        return {p: PartitionRead(p, why="") for p in claims}
    hints = {p: c.high if c.at_time is None else min(c.at_time, c.high)
             for p, c in claims.items()}
    probes = {p: PartitionRead(p, hint - checked, hint)
              for p, hint in hints.items() if hint - checked > claims[p].low}
    later: dict[int, tuple[int, int]] = {}
    for batch in read_range(config, topic, probes):
        for record in batch:
            stamp, partition = record.timestamp()[1], record.partition() or 0
            if stamp >= from_ms and partition not in later:
                later[partition] = (record.offset() or 0, stamp)
    return {p: _start(p, hints[p], claims[p].at_time is None, probes.get(p), later.get(p))
            for p in claims}


def _start(partition: int, hint: int, none: bool, probe: PartitionRead | None,
           later: tuple[int, int] | None) -> PartitionRead:
    """Where ``partition`` is read from, given the broker's offset ``hint`` for ``--from``
    (with ``none``, it had none: ``hint`` is its high watermark) and what reading the records
    before it found."""
    from ..adapters.kafka import PartitionRead

    said = (f"the broker's offset for --from, {hint:,}," if not none else
            f"the broker's answer for --from, none, so its end at {hint:,},")
    if probe is None:
        return PartitionRead(partition, why=f"{said} is close to the beginning")
    if later is not None:
        return PartitionRead(partition, why=f"{said} is wrong: offset {later[0]:,} before it "
                                            f"has timestamp {later[1]}, not before --from")
    if probe.records == 0 or (probe.reached or 0) < hint:
        return PartitionRead(partition, why=f"{said} cannot be checked: reading up to it "
                                            f"found {probe.records:,} records, to {probe.reached}")
    return PartitionRead(partition, hint, why=f"the broker's for --from; the {probe.records:,} "
                                              "records before it are all earlier")


def _proved(topic: str, batches: Iterable[Sequence[SourceRecord]],
            parts: Mapping[int, PartitionRead]) -> Iterator[Sequence[SourceRecord]]:
    """``batches``, then AccountingError unless each partition was read to its end: the end
    asked, or an end of log no lower than the high watermark the broker reported."""
    yield from batches
    for part in parts.values():
        where, ended = f"replay: {topic}[{part.partition}]", part.end_of_log
        if ended is None:  # read to the end asked, or not at all (an empty range)
            continue
        if part.end is not None and ended < part.end:
            raise AccountingError(f"{where} ends at offset {ended:,} (read to its end of log), "
                                  f"but the offsets asked run to {part.end - 1:,}")
        if part.end is None and part.reported_end is not None and ended < part.reported_end:
            raise AccountingError(
                f"{where}: reading ended at offset {ended:,}, below the end the broker "
                f"reported, {part.reported_end:,}; the records between cannot be accounted for "
                "(held back by an open transaction?)")
