"""History into a topic for backtests: each record keyed by its card and stamped with its
event time (``stream-infer topics publish``).

The input is a replay event file (:mod:`.tables`): JSON lines, or Parquet rows as JSON. A
record's value is published as read; its Kafka timestamp is its ``event_time`` (RFC 3339 with
an offset, or epoch milliseconds, as the decoder reads it) and its key its ``card_id``. The
file is checked before anything is produced: a record whose event time cannot be read (not
JSON, no ``event_time``, no offset, before 1970) stops the publish with the line it is on,
unless the caller asks to skip such records, which are then counted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..config import KafkaSettings
from ..errors import ConfigError, redact
from ..records import epoch_ms
from .tables import PARQUET_SUFFIXES, parquet_json_rows, read_lines

FLUSH_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Stamped:
    """One record of a history file: where it is, its key and value, and its timestamp
    (``None`` when it cannot be read; ``why`` says what was wrong)."""

    position: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None
    why: str = ""


@dataclass(slots=True)
class PublishReport:
    """What a publish did: records produced and skipped, and the event times it spanned."""

    source: str
    topic: str
    published: int = 0
    skipped: int = 0
    first_skipped: str = ""
    unkeyed: int = 0
    backwards: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    seconds: float = 0.0

    def skip(self, where: str) -> None:
        self.skipped += 1
        self.first_skipped = self.first_skipped or where

    def count(self, record: Stamped, ts: int, previous_ms: int | None) -> None:
        self.published += 1
        self.unkeyed += record.key is None
        self.backwards += previous_ms is not None and ts < previous_ms
        self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
        self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)

    def lines(self) -> list[str]:
        """The summary the command prints."""
        rate = self.published / self.seconds if self.seconds else 0.0
        out = [f"published {self.published:,} records from {self.source} to {self.topic} in "
               f"{self.seconds:.2f}s ({rate:,.0f} records/s), keyed by card_id, each "
               "timestamped with its event_time"]
        if self.first_ms is not None and self.last_ms is not None:
            out.append(f"  event times {_iso(self.first_ms)} to {_iso(self.last_ms)}")
        if self.skipped:
            out.append(f"  skipped {self.skipped:,} whose event_time could not be read "
                       f"(the first at {self.first_skipped})")
        if self.unkeyed:
            out.append(f"  {self.unkeyed:,} without a card_id, published without a key")
        if self.backwards:
            out.append(f"  {self.backwards:,} earlier than the record before them: a replay "
                       "--from/--to on this topic finds its start by timestamp, which assumes "
                       "time order; sort the file by event_time for exact ranges")
        return out


class _Stamp(msgspec.Struct):
    event_time: dt.datetime | int
    card_id: Any = None


_read_stamp = msgspec.json.Decoder(_Stamp).decode


def stamp(position: int, value: bytes) -> Stamped:
    """The key (``card_id``) and timestamp (``event_time``) of one record's JSON value."""
    if not value:
        return Stamped(position, None, value, None, "an empty line")
    try:
        found = _read_stamp(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Stamped(position, None, value, None, redact(str(exc)))
    card = found.card_id
    key = card.encode() if isinstance(card, str) and card else None
    when = found.event_time
    if isinstance(when, dt.datetime) and when.tzinfo is None:
        return Stamped(position, key, value, None, "event_time has no UTC offset")
    ms = when if isinstance(when, int) else epoch_ms(when)
    if ms < 1:
        return Stamped(position, key, value, None,
                       f"event_time {ms} is not after 1970-01-01T00:00:00Z: no Kafka timestamp")
    return Stamped(position, key, value, ms)


def history(path: Path) -> Iterator[Stamped]:
    """Every record of a JSON-lines or Parquet event file, stamped; ``position`` is the line
    (from 1) or the Parquet row (from 1)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"events file not found: {path}")
    blocks = (parquet_json_rows(path) if is_parquet(path) else read_lines(path))
    position = 0
    for block in blocks:
        for value in block:
            position += 1
            yield stamp(position, value)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def where(path: Path, position: int) -> str:
    """``history.jsonl line 12`` / ``history.parquet row 12``."""
    return f"{path.name} {'row' if is_parquet(path) else 'line'} {position}"


def check(path: Path) -> None:
    """Raise :class:`~stream_infer.errors.ConfigError`, naming the line, at the first record
    whose event time cannot be read."""
    for record in history(path):
        if record.timestamp_ms is None:
            raise ConfigError(
                f"{where(path, record.position)}: event_time cannot be read ({record.why}); "
                "it must be RFC 3339 with an offset or epoch milliseconds after 1970. "
                "Fix the file, or pass --skip-unreadable to publish the rest and count these")


def publish(path: Path, topic: str, kafka: KafkaSettings, *, skip_unreadable: bool = False
            ) -> PublishReport:
    """Produce every record of ``path`` to ``topic`` (created if missing, as
    ``kafka.create_topics`` allows) with its event time as timestamp and its card id as key,
    in file order; return once all are acknowledged (raises
    :class:`~stream_infer.errors.DeliveryError` otherwise).

    Without ``skip_unreadable`` the whole file is checked first: if a record's event time
    cannot be read, nothing is created or produced."""
    from ..adapters.kafka import ensure_topics
    from ..adapters.kafka_publish import TimestampedSink

    path = Path(path)
    if not skip_unreadable:
        check(path)
    ensure_topics(kafka.common_config(), [topic], create=kafka.create_topics,
                  partitions=kafka.topic_partitions, replication_factor=kafka.replication_factor)
    report = PublishReport(source=path.name, topic=topic)
    started = time.monotonic()
    sink = TimestampedSink(kafka.producer_config())
    try:
        previous: int | None = None
        for record in history(path):
            ts = record.timestamp_ms
            if ts is None:
                report.skip(where(path, record.position))
                continue
            sink.send_at(topic, record.key, record.value, ts)
            report.count(record, ts, previous)
            previous = ts
        sink.flush(FLUSH_TIMEOUT_S)
    finally:
        sink.close()
    report.seconds = time.monotonic() - started
    return report


def _iso(ms: int) -> str:
    try:
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms} ms"
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
