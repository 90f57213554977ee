"""Window features of a history as the service would have served them (``stream-infer
features backfill``), and the feature names a configuration defines (``features list``).

A history file (JSON lines, or Parquet rows as JSON, as replay reads them) and an optional
labels file (``schemas/label.schema.json``, same formats) go through one
:class:`~stream_infer.features.WindowEngine` of the configured definition, the one the live
service will run, in memory: no Redis, no live state, nothing shared between runs.

Arrival order. Files carry no arrival times, so an event arrives at its ``event_time`` and a
label at its ``label_time``; at equal times labels come first (what is known at ``t`` is
known to an event at ``t``), and records of one kind keep their file order. So no event of a
file is late, and each event's rates count exactly the frauds labelled by its own time. The
events' own ``label`` field is not a label arrival: without a labels file no fraud is known
and every rate is 0.

Batches. The engine's rows do not depend on how arrivals are cut into batches, so events
go in batches of up to :data:`BATCH`, and the labels that arrive within a batch apply at its
start, unless one could change a value already served in it: a fraud label, or a genuine
one for an event that some label calls fraud, whose event is in the rate window of an
event of the batch before it (one of its entity at least ``delay`` newer). Such a label
arrives among the batch's events (``WindowEngine.apply(..., during=...)``), and counts for
the events after it only. A label due within the delay, the usual case, applies at the
start; any other label changes no fraud flag whenever it applies, and goes with the next
batch. The engine keeps every label waiting for its event (the live service keeps at most
100,000), so this is exact: tests/unit/offline/test_backfill.py checks it against one
arrival at a time.

Output. Parquet, one row per decoded event in input order: ``event_id``, ``event_time``
(epoch ms), ``card_id``, ``merchant_id``, ``customer_id``, ``terminal_id``, ``label`` (the
event's own; else the winning label of the labels file, the latest ``label_time``, fraud on
a tie; else null), ``amount``, then one float32 column per feature name in the definition's
order, NaN where the service would serve NaN. ``model train`` takes every column after
``label`` as a feature. The same inputs and settings give the same bytes. A record that does
not decode goes to ``<out stem>.dead-letters.jsonl`` beside the output with its reason and
error, as a live dead letter would; nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from ..config import Settings
from ..decode import JsonDecoder, JsonLabelDecoder, make_decoder, make_label_decoder
from ..errors import ConfigError, RecordError, redact
from ..features import Definition, Label, WindowEngine, from_settings
from ..features.engine import GroupStats, LabelStats
from ..records import LabelRecord, Transaction
from .tables import PARQUET_SUFFIXES, parquet_json_rows, read_lines

BATCH = 100_000
"""Most events per call of the engine. A call merges the whole log of every entity it
touches, so larger calls copy fewer rows per event, for a little more memory
(docs/BENCHMARKS.md, "Backfill")."""
KEYS = ("card_id", "merchant_id", "customer_id", "terminal_id")
T = TypeVar("T")


def defined_names(settings: Settings) -> list[str]:
    """Every feature name the settings define: the window features in the definition's
    order, the calendar's, then each view's ``<view>.<field>`` (views in name order)."""
    views = [f"{view}.{name}" for view in sorted(settings.features)
             for name in settings.features[view].fields]
    return [*definition_of(settings).names, *views]


def definition_of(settings: Settings) -> Definition:
    try:
        return from_settings(settings)
    except ValueError as exc:
        raise ConfigError(f"windows: {exc}") from None


def state_prefixes(definition: Definition) -> list[tuple[str, str]]:
    """Each window group and where its state lives (``win3:customer:1a2b3c4d``)."""
    return [(w.name, w.prefix) for w in definition.windows]


class DeadLetters:
    """Refused records as JSON lines: ``input`` (``events`` or ``labels``), ``file``,
    ``position`` (line, or Parquet row, from 1), ``reason``, ``error`` and the ``value``
    (UTF-8 text, long digit runs masked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._encode = msgspec.json.Encoder().encode
        self.reasons: dict[str, Counter[str]] = {"events": Counter(), "labels": Counter()}

    def write(self, kind: str, source: str, position: int | str, value: bytes,
              error: RecordError) -> None:
        self._file.write(self._encode({
            "input": kind, "file": source, "position": position, "reason": error.reason,
            "error": str(error), "value": redact(value.decode("utf-8", "replace"))}) + b"\n")
        self.reasons[kind][error.reason] += 1

    def close(self) -> None:
        self._file.close()


def dead_letters_path(out: Path) -> Path:
    """Where a backfill writes its dead letters: beside the output."""
    return out.with_name(f"{out.stem}.dead-letters.jsonl")


def records(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(position, value)`` of each line (or Parquet row, as JSON) of ``path``, from 1."""
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    blocks = (parquet_json_rows(path) if path.suffix.lower() in PARQUET_SUFFIXES
              else read_lines(path))
    position = 0
    for block in blocks:
        for value in block:
            position += 1
            yield position, value


def topic_records(config: Mapping[str, Any], topic: str
                  ) -> Iterator[tuple[str, bytes | None]]:
    """``("partition:offset", value)`` of every record of ``topic``, partition by partition,
    from the beginning to each partition's end of log (found by reading to it, not from
    the high watermark a broker reports)."""
    from ..adapters.kafka import read_to_end

    by_partition: dict[int, list[tuple[int, bytes | None]]] = {}
    for batch in read_to_end(config, topic):
        for message in batch:
            by_partition.setdefault(message.partition() or 0, []).append(
                (message.offset() or 0, message.value()))
    for partition in sorted(by_partition):
        for offset, value in sorted(by_partition[partition], key=lambda r: r[0]):
            yield f"{partition}:{offset}", value


Records = Iterator[tuple[int, bytes]] | Iterator[tuple[str, bytes | None]]


def decode_file(path: Path, kind: str, decode: Callable[[bytes], T],
                dead: DeadLetters) -> tuple[list[T], int]:
    """The records of ``path`` that decode, in order, the others dead-lettered; and how
    many were read."""
    return decode_records(records(path), path.name, kind, decode, dead)


def decode_records(found: Records, source: str, kind: str, decode: Callable[[bytes], T],
                   dead: DeadLetters) -> tuple[list[T], int]:
    """The records of ``found`` (from ``source``: a file's name, ``topic T``) that decode,
    in order, the others dead-lettered; and how many were read."""
    decoded: list[T] = []
    read = 0
    for position, value in found:
        read += 1
        try:
            decoded.append(decode(value or b""))
        except RecordError as error:
            dead.write(kind, source, position, value or b"", error)
    return decoded, read


@dataclass
class BackfillReport:
    """What a backfill read, refused and computed, and what it wrote."""

    out: Path
    dead_letters: Path
    names: list[str]
    events_read: int = 0
    labels_read: int = 0
    events: int = 0
    labels: int = 0
    refused: dict[str, Counter[str]] = field(default_factory=dict)
    groups: dict[str, GroupStats] = field(default_factory=dict)
    label_stats: LabelStats = field(default_factory=LabelStats)
    waiting: int = 0
    calls: int = 0
    seconds: float = 0.0
    sha256: str = ""
    uses_labels: bool = False
    written: int | None = None
    """Events written, when a time range left some out."""

    def lines(self) -> list[str]:
        """The summary the command prints."""
        rate = self.events / self.seconds if self.seconds else 0.0
        out = [f"backfilled {self.events:,} events with {self.labels:,} labels in "
               f"{self.seconds:.2f}s ({rate:,.0f} events/s, {self.calls:,} engine batches): "
               f"{len(self.names)} window and calendar features"]
        for kind, read in (("events", self.events_read), ("labels", self.labels_read)):
            refused = self.refused.get(kind, Counter())
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(refused.items()))
            out.append(f"  {kind:<7} read {read:,}, dead-lettered {sum(refused.values()):,}"
                       + (f" ({reasons})" if reasons else ""))
        for name, g in self.groups.items():
            out.append(f"  {name:<8} computed {g.computed:,}, duplicates {g.duplicates:,}, "
                       f"without {name} key {g.missing_key:,}, too late {g.too_late:,}")
        if self.uses_labels:
            out.append(f"  labels  ignored {self.label_stats.ignored:,} (repeated, or older "
                       f"than the one their event had), never met their event "
                       f"{self.waiting:,} (not in the history, or without a rate's key)")
            if not self.labels_read:
                out.append("  no labels file: no fraud is known, every rate is 0")
        if self.written is not None:
            out.append(f"  wrote the {self.written:,} events of the range (the "
                       f"{self.events - self.written:,} others filled windows only)")
        out.append(f"results {self.out}  sha256 {self.sha256}")
        out.append(f"dead letters {self.dead_letters}")
        return out


@dataclass(frozen=True)
class History:
    """Where a backfill reads events or labels: a file (JSON lines or Parquet) or a whole
    topic (read to each partition's end of log, decoded as the service decodes it)."""

    path: Path | None = None
    topic: str | None = None

    def read(self, settings: Settings, kind: str, decode: Callable[[bytes], T],
             dead: DeadLetters) -> tuple[list[T], int]:
        if self.topic is not None:
            return decode_records(topic_records(settings.kafka.common_config(), self.topic),
                                  f"topic {self.topic}", kind, decode, dead)
        assert self.path is not None
        return decode_file(self.path, kind, decode, dead)


def backfill(history: Path | History, out: Path, settings: Settings,
             labels: Path | History | None = None, *, batch: int = BATCH,
             since_ms: int | None = None, until_ms: int | None = None) -> BackfillReport:
    """Compute every event's window features as of its arrival (see the module's
    docstring), write them to ``out`` (Parquet) and the refused records beside it.
    ``history`` and ``labels`` are files, or topics (:class:`History`). With ``since_ms``
    or ``until_ms`` only the events of ``[since_ms, until_ms)`` (event time) are written;
    the events before still fill their windows."""
    started = time.monotonic()
    definition = definition_of(settings)
    pyarrow = _pyarrow()
    events_from = history if isinstance(history, History) else History(Path(history))
    labels_from = (labels if isinstance(labels, History) or labels is None
                   else History(Path(labels)))
    out = Path(out)
    for given in (events_from, labels_from):
        if given is not None and given.path is not None and not given.path.is_file():
            raise ConfigError(f"file not found: {given.path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = BackfillReport(out, dead_letters_path(out), list(definition.names))
    dead = DeadLetters(report.dead_letters)
    try:
        limit = settings.decode.max_payload_bytes
        resolver = None
        if settings.decode.format != "json":
            from ..adapters.schema_registry import schema_resolver

            resolver = schema_resolver(settings.decode)
        event_decoder: Callable[[bytes], Transaction] = (
            JsonDecoder(limit) if events_from.path is not None
            else make_decoder(settings.decode, resolver))
        events, report.events_read = events_from.read(settings, "events", event_decoder, dead)
        found: list[LabelRecord] = []
        if labels_from is not None:
            label_decoder: Callable[[bytes], LabelRecord] = (
                JsonLabelDecoder(limit) if labels_from.path is not None
                else make_label_decoder(settings.decode, resolver))
            found, report.labels_read = labels_from.read(settings, "labels", label_decoder,
                                                         dead)
    finally:
        dead.close()
    report.events, report.labels, report.refused = len(events), len(found), dead.reasons
    engine = WindowEngine(definition, pending_labels=max(len(found), 1))
    rows, report.calls = features(engine, events, found, batch)
    report.groups = {g.window.name: g.stats for g in engine.groups}
    report.label_stats, report.waiting = engine.label_stats, len(engine.pending)
    report.uses_labels = any(w.uses_labels for w in definition.windows)
    if since_ms is not None or until_ms is not None:
        times = np.array([e.event_time_ms for e in events], np.int64)
        kept = ((times >= (since_ms if since_ms is not None else -2**63))
                & (times < (until_ms if until_ms is not None else 2**63 - 1)))
        events, rows = [e for e, k in zip(events, kept, strict=True) if k], rows[kept]
        report.written = len(events)
    write_parquet(pyarrow, out, _columns(events, found, rows, list(definition.names)))
    report.sha256 = hashlib.sha256(out.read_bytes()).hexdigest()
    report.seconds = time.monotonic() - started
    return report


def features(engine: WindowEngine, events: Sequence[Transaction],
             labels: Sequence[LabelRecord], batch: int = BATCH, *,
             frauds: Container[str] | None = None) -> tuple[npt.NDArray[np.float32], int]:
    """Every event's row (input order), the events and labels applied in arrival order;
    and how many engine calls it took. ``frauds``: see :func:`segments`."""
    rows = np.empty((len(events), len(engine.names)), np.float32)
    calls = 0
    for call in segments(events, labels, engine, batch, frauds=frauds):
        rows[call.events] = engine.apply(
            [events[i] for i in call.events], [Label.of(labels[i]) for i in call.labels],
            during=[(arrival, Label.of(labels[i])) for arrival, i in call.during])
        calls += 1
    return rows, calls


@dataclass
class Call:
    """One engine call's arrivals, as positions in the inputs: ``labels`` apply first,
    then ``events`` in order, each of ``during``'s labels ``(arrival, label)`` just before
    the call's event at ``arrival``."""

    events: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    during: list[tuple[int, int]] = field(default_factory=list)


def segments(events: Sequence[Transaction], labels: Sequence[LabelRecord],
             engine: WindowEngine, batch: int = BATCH, *,
             frauds: Container[str] | None = None) -> Iterator[Call]:
    """The engine calls that make the arrivals in order (see the module's docstring).

    ``frauds`` are the event ids some label calls fraud (default: of ``labels``); a caller
    that gives the labels a part at a time (replay) gives those of every part, else a
    genuine label correcting an earlier part's fraud would wait for the next batch."""
    uses = any(g.window.uses_labels for g in engine.groups)
    if not uses:
        labels = []
    times = np.array([e.event_time_ms for e in events]
                     + [label.label_time_ms for label in labels], np.int64)
    kinds = np.repeat(np.array([1, 0], np.int8), [len(events), len(labels)])
    positions = np.concatenate([np.arange(len(events)), np.arange(len(labels))])
    order = np.lexsort((positions, kinds, times))
    relevant = _relevant(labels, frauds)
    unseen = _Unseen(engine, labels, relevant)
    call = Call()
    after: list[int] = []
    """Labels that arrived during the call and change no value: they go with the next."""
    for kind, at in zip(kinds[order].tolist(), positions[order].tolist(), strict=True):
        if kind == 1:
            call.events.append(at)
            unseen.arrived(events[at])
        elif not call.events or (relevant[at] and unseen(labels[at])):
            call.labels.append(at)
        elif not relevant[at]:
            after.append(at)
        else:
            call.during.append((len(call.events), at))
        if len(call.events) >= batch:
            yield call
            call, after = Call(labels=after), []
            unseen.cut()
    if call.events or call.labels or call.during:
        yield call
    if after:
        yield Call(labels=after)


class _Unseen:
    """Whether a label, applied at its batch's start, stays unseen by the batch's events
    that arrived before it: none of them can hold the labelled event in a rate window.

    A rate window ends ``delay`` before its event, so an event at ``t`` sees the labelled
    event (time ``s``, the same entity) only if ``t >= s + delay``: each rate group
    compares the newest time so far of the batch's events of that entity. A label whose
    event has not arrived waits for it in the engine, which gives it to the event on
    arrival, after the label. So a label due within the delay of its event (the usual
    case) never cuts a batch."""

    def __init__(self, engine: WindowEngine, labels: Sequence[LabelRecord],
                 relevant: Sequence[bool]) -> None:
        self.rates = [g for g in engine.groups if g.window.uses_labels]
        self.labelled = {label.event_id for label, counts in zip(labels, relevant, strict=True)
                         if counts}
        self.found: dict[str, list[tuple[int, str, int]]] = {}
        """Where each labelled event that has arrived is: ``(rate group, entity, time)``,
        as the engine kept it before the call, and as it arrived in the call (every
        arrival of an id: the engine keeps one of them)."""
        for group, rate in enumerate(self.rates):
            for event_id in self.labelled:
                kept = rate.state.directory.get(event_id)
                if kept is not None:
                    self.found.setdefault(event_id, []).append((group, *kept))
        self.newest: list[dict[str, int]] = [{} for _ in self.rates]
        """Per rate group, the newest time of the batch's events of each entity so far."""

    def arrived(self, event: Transaction) -> None:
        time = event.event_time_ms
        for group, rate in enumerate(self.rates):
            key = getattr(event, rate.window.key)
            if key is None:
                continue
            newest = self.newest[group]
            newest[key] = max(newest.get(key, time), time)
            if event.event_id in self.labelled:
                self.found.setdefault(event.event_id, []).append((group, key, time))

    def cut(self) -> None:
        for newest in self.newest:
            newest.clear()

    def __call__(self, label: LabelRecord) -> bool:
        return not any(
            self.newest[group].get(key, -2**63) >= time + self.rates[group].window.delay_ms
            for group, key, time in self.found.get(label.event_id, ()))


def _relevant(labels: Sequence[LabelRecord], frauds: Container[str] | None = None
              ) -> list[bool]:
    """Whether each label can change a fraud flag: a fraud label, or a genuine one for an
    event that some label (of ``frauds``, by default of ``labels``) calls fraud."""
    if frauds is None:
        frauds = {label.event_id for label in labels if label.label == 1}
    return [label.label == 1 or label.event_id in frauds for label in labels]


def final_labels(events: Sequence[Transaction], labels: Sequence[LabelRecord]
                 ) -> list[int | None]:
    """Each event's label: its own, else the winning one of ``labels`` (the latest
    ``label_time``, fraud on a tie), else None."""
    best: dict[str, tuple[int, int]] = {}
    for label in labels:
        stamp = (label.label_time_ms, label.label)
        if stamp > best.get(label.event_id, (-(2**63), -1)):
            best[label.event_id] = stamp
    return [e.label if e.label is not None
            else (best[e.event_id][1] if e.event_id in best else None) for e in events]


def _columns(events: Sequence[Transaction], labels: Sequence[LabelRecord],
             rows: npt.NDArray[np.float32], names: list[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "event_id": [e.event_id for e in events],
        "event_time": np.array([e.event_time_ms for e in events], np.int64),
        **{key: [getattr(e, key) for e in events] for key in KEYS},
        "label": final_labels(events, labels),
        "amount": np.array([e.amount for e in events], np.float64),
    }
    columns.update((name, rows[:, i]) for i, name in enumerate(names))
    return columns


def write_parquet(pyarrow: Any, path: Path, columns: dict[str, Any]) -> None:
    """``columns`` as one Parquet file: the same columns give the same bytes."""
    pa, pq = pyarrow
    types = {"label": pa.int8(), "event_id": pa.string(),
             **{key: pa.string() for key in KEYS}}
    table = pa.table({name: pa.array(values, type=types.get(name))
                      for name, values in columns.items()})
    pq.write_table(table, path, compression="zstd")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("writing Parquet needs pyarrow: pip install 'stream-infer[parquet]'"
                          ) from None
    return pa, pq
