"""History into a topic for backtests: each record keyed by its card and stamped with its
event time (``stream-infer topics publish``).

The input is a replay event file (:mod:`.tables`): JSON lines, or Parquet rows as JSON. A
record's value is published as read; its Kafka timestamp is its ``event_time`` (RFC 3339 with
an offset, or epoch milliseconds, as the decoder reads it) and its key its ``card_id``. The
file is checked before anything is produced: a record whose event time cannot be read (not
JSON, no ``event_time``, no offset, before 1970) stops the publish with the line it is on,
unless the caller asks to skip such records, which are then counted.

Old timestamps meet the broker's time retention: Apache Kafka deletes a segment once its
newest record is older than the topic's ``retention.ms`` (7 days by default), so a history
older than that would vanish soon after it is written and a backtest would silently read
less. Topics created here keep their records forever (``retention.ms=-1``); a topic that
exists is described first, and a history its retention would delete is refused (unless
forced). Records stamped more than an hour ahead of now are refused before anything is
written: Kafka 4 rejects them by default (``message.timestamp.after.max.ms``), part-way
through a publish. See :func:`prepare_topics`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..config import KafkaSettings
from ..errors import BrokerError, ConfigError, redact
from ..records import epoch_ms
from .tables import PARQUET_SUFFIXES, parquet_json_rows, read_lines

FLUSH_TIMEOUT_S = 120.0
KEEP_FOREVER = {"retention.ms": "-1"}
"""The configuration of the topics a publish creates: no time retention."""
AHEAD_LIMIT_MS = 3_600_000
"""How far ahead of now a record may be stamped: Kafka 4's default
``log.message.timestamp.after.max.ms`` (1 h)."""


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
    created: bool = False
    warnings: list[str] = field(default_factory=list)

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
        if self.created:
            out.append(f"  created {self.topic} with retention.ms=-1: its records are kept "
                       "forever, not deleted by time retention however old their timestamps")
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
    scan(path)


def scan(path: Path, *, skip_unreadable: bool = False) -> Span:
    """The oldest and newest event times of ``path`` and where they are; raises
    :class:`~stream_infer.errors.ConfigError`, naming the line, at the first record whose
    event time cannot be read, unless ``skip_unreadable``."""
    span = Span()
    for record in history(path):
        if record.timestamp_ms is not None:
            span.add(record.timestamp_ms, where(path, record.position))
        elif not skip_unreadable:
            raise ConfigError(
                f"{where(path, record.position)}: event_time cannot be read ({record.why}); "
                "it must be RFC 3339 with an offset or epoch milliseconds after 1970. "
                "Fix the file, or pass --skip-unreadable to publish the rest and count these")
    return span


@dataclass(slots=True)
class Span:
    """The timestamps bound for one topic: the oldest and the newest, and where each is
    (``history.jsonl line 3``, ``the first label_time``): what :func:`prepare_topics` checks."""

    oldest_ms: int | None = None
    newest_ms: int | None = None
    oldest_at: str = ""
    newest_at: str = ""

    def add(self, ms: int, at: str) -> None:
        if self.oldest_ms is None or ms < self.oldest_ms:
            self.oldest_ms, self.oldest_at = ms, at
        if self.newest_ms is None or ms > self.newest_ms:
            self.newest_ms, self.newest_at = ms, at


def ahead_problem(span: Span, now_ms: int, limit_ms: int = AHEAD_LIMIT_MS) -> str | None:
    """Why the broker would refuse the newest record (stamped over ``limit_ms`` after
    ``now_ms``), or None."""
    if span.newest_ms is None or span.newest_ms <= now_ms + limit_ms:
        return None
    return (f"{span.newest_at}: timestamp {_iso(span.newest_ms)} is "
            f"{_duration(span.newest_ms - now_ms)} ahead of now ({_iso(now_ms)}); Kafka 4 "
            f"refuses records stamped more than {_duration(limit_ms)} ahead "
            "(log.message.timestamp.after.max.ms) and would fail the publish part-way. "
            "Nothing was written: fix the timestamps")


def parse_retention(value: str | None) -> int | None:
    """``retention.ms`` as the broker describes it: milliseconds, -1 for forever (any negative
    value), None when missing or not a number."""
    try:
        ms = int(value) if value is not None else None
    except ValueError:
        return None
    return None if ms is None else max(ms, -1)


def retention_problem(topic: str, retention_ms: int | None, span: Span, now_ms: int, *,
                      bootstrap: str = "HOST:9092") -> str | None:
    """Why ``topic``'s time retention would delete the oldest record soon after it is
    written (it is older than ``now_ms - retention_ms``), with the command that fixes it;
    None when it would not, or when the retention is forever (-1) or unknown (None)."""
    if retention_ms is None or retention_ms < 0 or span.oldest_ms is None:
        return None
    if span.oldest_ms >= now_ms - retention_ms:
        return None
    return (f"topic {topic!r} deletes records older than {_duration(retention_ms)} "
            f"(retention.ms={retention_ms}), and the oldest to publish ({span.oldest_at}, "
            f"{_iso(span.oldest_ms)}) is {_duration(now_ms - span.oldest_ms)} old: Kafka would "
            "delete it soon after it is written and a backtest would silently read less. "
            "Keep the topic's records forever: kafka-configs --bootstrap-server "
            f"{bootstrap} --alter --entity-type topics --entity-name {topic} "
            "--add-config retention.ms=-1")


@dataclass(slots=True)
class Prepared:
    """What :func:`prepare_topics` did: the topics it created (``retention.ms=-1``) and the
    warnings of a forced publish or of a broker that would not describe a topic."""

    created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare_topics(kafka: KafkaSettings, spans: Mapping[str, Span], *, force: bool = False,
                   force_flag: str | None = "--force", now_ms: int | None = None) -> Prepared:
    """Make sure the records of ``spans`` (topic to the timestamps bound for it) can be
    written and will stay: refuse a record stamped over :data:`AHEAD_LIMIT_MS` ahead of now
    before any topic is created; create the missing topics (as ``kafka.create_topics``
    allows) with :data:`KEEP_FOREVER`; read ``retention.ms`` of those that exist and refuse
    when it would delete the oldest record. Refusing raises
    :class:`~stream_infer.errors.ConfigError` (naming ``force_flag``, if the caller has one);
    with ``force`` each refusal is a warning instead. A broker that cannot describe a topic
    (or does not report its ``retention.ms``) is a warning, not a refusal. The warnings are
    returned, for the caller to show."""
    from ..adapters.kafka import ensure_topics, topic_configs

    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = Prepared()
    _refuse_or_warn([p for span in spans.values() if (p := ahead_problem(span, now))],
                    out, force=force, force_flag=force_flag)
    client = kafka.common_config()
    out.created = ensure_topics(client, list(spans), create=kafka.create_topics,
                                partitions=kafka.topic_partitions,
                                replication_factor=kafka.replication_factor,
                                topic_config=KEEP_FOREVER)
    problems = []
    for topic, span in spans.items():
        if topic in out.created or span.oldest_ms is None:
            continue
        try:
            retention = parse_retention(topic_configs(client, topic).get("retention.ms"))
        except BrokerError as exc:
            out.warnings.append(f"{exc}: cannot tell whether its time retention would delete "
                                f"records as old as {_iso(span.oldest_ms)}; publishing anyway")
            continue
        if retention is None:
            out.warnings.append(f"the broker does not report retention.ms of topic {topic!r}: "
                                "cannot tell whether its time retention would delete records "
                                f"as old as {_iso(span.oldest_ms)}; publishing anyway")
        elif problem := retention_problem(topic, retention, span, now,
                                          bootstrap=kafka.bootstrap_servers):
            problems.append(problem)
    _refuse_or_warn(problems, out, force=force, force_flag=force_flag)
    return out


def _refuse_or_warn(problems: list[str], out: Prepared, *, force: bool,
                    force_flag: str | None) -> None:
    if problems and not force:
        hint = f"; or pass {force_flag} to publish anyway" if force_flag else ""
        raise ConfigError("\n".join(problems) + hint)
    out.warnings.extend(f"{p} (publishing anyway, as forced)" for p in problems)


def publish(path: Path, topic: str, kafka: KafkaSettings, *, skip_unreadable: bool = False,
            force: bool = False, now_ms: int | None = None) -> PublishReport:
    """Produce every record of ``path`` to ``topic`` (created if missing, as
    ``kafka.create_topics`` allows, with ``retention.ms=-1``) with its event time as
    timestamp and its card id as key, in file order; return once all are acknowledged
    (raises :class:`~stream_infer.errors.DeliveryError` otherwise).

    The whole file is checked first: if a record's event time cannot be read (unless
    ``skip_unreadable``), if one is stamped over an hour ahead of ``now_ms`` (default: now),
    or if the existing topic's retention would delete the oldest, nothing is created or
    produced (see :func:`prepare_topics`; ``force`` publishes anyway, with warnings)."""
    from ..adapters.kafka_publish import TimestampedSink

    path = Path(path)
    span = scan(path, skip_unreadable=skip_unreadable)
    prepared = prepare_topics(kafka, {topic: span}, force=force, now_ms=now_ms)
    report = PublishReport(source=path.name, topic=topic, created=topic in prepared.created,
                           warnings=prepared.warnings)
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


def _duration(ms: int) -> str:
    """``30.0 days``, ``2.0 h``, ``5 min``, ``12 s``."""
    if ms >= 86_400_000:
        return f"{ms / 86_400_000:.1f} days"
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f} h"
    if ms >= 60_000:
        return f"{ms // 60_000} min"
    return f"{ms // 1000} s"


def _iso(ms: int) -> str:
    try:
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms} ms"
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
