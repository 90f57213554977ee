"""Live window features: the state in a shared store, the values computed by the engine.

The live service, backfill and replay compute window features with one piece of code,
:class:`~stream_infer.features.engine.GroupEngine`. Backfill keeps the state in memory
(:class:`~stream_infer.features.WindowEngine`); the live service keeps it in Redis, shared by
every worker, and per batch makes **one round trip** (one pipelined script call per window
group, ``adapters/redis_windows.py``) that, atomically for the group:

1. applies the batch's labels (to kept events, else to the pending labels);
2. reads the log of every entity the batch touches, back to its earliest event's window;
3. writes the batch's new events (time, values, the pending label waiting for them), in
   arrival order, with the too-late and duplicate decisions of the engine, and trims;
4. answers the watermark before the batch, a code per event and the logs of step 2.

Here the engine computes the batch's features on those logs, exactly as it would on its own
state: the events the script wrote are the ones the engine keeps. The order in which the
script ran the batches of all workers is the arrival order the semantics speak of.

Duplicates. A row in the store carries its entity's arrival sequence number (``seq``), and
each label that won carries one too. An event already in the store before its batch (a batch
re-processed after a crash or a rebalance) is recomputed *as of its arrival*: over the rows
that arrived before it, with the labels they had then. That is the row it was served, without
storing served rows: the write of a batch and the read of its features are the same call.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .. import failpoints
from ..records import LabelRecord, Transaction
from .calendar import Calendar
from .definition import Definition, Window
from .engine import GroupEngine, GroupStats, LabelStats, _Batch, field_values
from .labels import Label, PendingLabels
from .state import EntityLog, Layout

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
NO_WATERMARK = ""
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class GroupRequest:
    """One group's script call: its state prefix and the arguments (``adapters.redis_windows``
    documents their order)."""

    window: Window
    args: list[str]


class WindowStore(Protocol):
    """The window-state port: the Redis adapter implements it."""

    def exchange(self, requests: Sequence[GroupRequest]) -> Sequence[Any]:
        """One round trip: each group's script reply, in order. Raises ``FeatureStoreError``
        when the store is unreachable."""
        ...


@dataclass(slots=True)
class Snapshot:
    """A group's script reply, parsed: the watermark before the batch, each event's code
    (``n`` new, ``d`` kept before, ``t`` too late, ``k`` no key) and sequence number, the
    label a new event found waiting, the logs, and the label outcomes."""

    watermark: int | None
    codes: list[str]
    seqs: list[int]
    memos: dict[int, Floats]
    stamps: dict[int, tuple[float, float]]
    logs: dict[str, EntityLog]
    log_seqs: dict[str, Ints]
    histories: dict[str, list[str | None]]
    labels: tuple[int, int, int]


@dataclass
class LiveStats:
    """What the live windows did (cumulative): per group, and the labels."""

    groups: dict[str, GroupStats] = field(default_factory=dict)
    labels: LabelStats = field(default_factory=LabelStats)


def request(window: Window, events: Sequence[Transaction], labels: Sequence[Label],
            *, pending_labels: int, ttl_ms: int,
            memos: Sequence[tuple[str, str, str]] = ()) -> GroupRequest:
    """The script arguments of one group for a batch: the header, the features served to
    the previous batch's new events (entity, id, values), the labels (groups with a rate
    only), then per event its id, time, entity (empty: none) and values."""
    args = [window.prefix, str(window.lateness_ms), str(window.delay_ms + window.lengths_ms[-1]),
            "1" if window.uses_labels else "0", str(pending_labels), str(ttl_ms),
            str(len(memos))]
    for memo in memos:
        args += memo
    given = labels if window.uses_labels else ()
    args.append(str(len(given)))
    for label in given:
        args += [label.event_id, str(label.label_time), str(label.label)]
    args.append(str(len(events)))
    values = field_values(window, events).tolist()
    for event, row in zip(events, values, strict=True):
        entity = getattr(event, window.key)
        args += [event.event_id, str(event.event_time_ms), "" if entity is None else str(entity),
                 "|".join(map(repr, row))]
    return GroupRequest(window, args)


def pack_memo(row: Floats, dtype: np.dtype[np.floating]) -> str:
    """The features served to one event, as stored: the served precision's little-endian
    bits in base64 (exact; 16 characters per three float32 values, where ``repr`` text took
    up to 19 per value)."""
    return base64.b64encode(row.astype(dtype.newbyteorder("<")).tobytes()).decode("ascii")


def unpack_memo(text: str, width: int) -> Floats:
    """:func:`pack_memo`'s row back as float64; its precision from its length."""
    raw = base64.b64decode(text)
    return np.frombuffer(raw, "<f4" if len(raw) == 4 * width else "<f8").astype(np.float64)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse(window: Window, reply: Sequence[Any]) -> Snapshot:
    """A group's script reply -> :class:`Snapshot`. The reply: the watermark before the
    batch, the codes joined by newlines, the entities whose logs follow and their row
    counts, every row's id, then the rows' times, stored rows and label histories of every
    entity, one after the other, each joined into one string, and the label outcomes."""
    (watermark_text, codes_text, entities_raw, counts_text, ids_raw, times_text, rows_text,
     labs_text, labels) = reply
    watermark_text = _text(watermark_text)
    codes_text = _text(codes_text)
    codes, seqs, stamps, memos = [], [], {}, {}
    for i, raw in enumerate(codes_text.split("\n") if codes_text else ()):
        code, _, memo = raw.partition("#")
        codes.append(code[0])
        if memo:
            memos[i] = unpack_memo(memo, len(window.names))
        head, _, stamp = code[1:].partition(",")
        seqs.append(int(head) if head else 0)
        if stamp:
            label_time, label = stamp.split(",")
            stamps[i] = (float(label_time), float(label))
    snapshot = Snapshot(None if watermark_text == NO_WATERMARK else int(watermark_text),
                        codes, seqs, memos, stamps, {}, {}, {},
                        (int(labels[0]), int(labels[1]), int(labels[2])))
    if not entities_raw:
        return snapshot
    layout = Layout(window)
    width = 1 + max(len(window.fields), 1)  # a stored row: seq|value|... (no values: seq|)
    ids = np.array(_texts(ids_raw), object)
    body = _numbers(rows_text, "\n", width).reshape(len(ids), width)
    rows = np.full((len(ids), layout.width), np.nan)
    rows[:, Layout.TIME] = _numbers(times_text, ",", 1)
    rows[:, layout.values] = body[:, 1:1 + len(window.fields)]
    log_seqs = body[:, 0].astype(np.int64)
    histories: list[str | None] = (
        [h or None for h in _text(labs_text).split("\n")] if window.uses_labels else [])
    if window.uses_labels:
        rows[:, layout.label_time] = -np.inf
        rows[:, layout.fraud] = 0.0
        for at, history in enumerate(histories):
            if history is not None:
                rows[at, layout.label_time], rows[at, layout.fraud] = _stamp(history, None)
    start = 0
    for entity, count in zip(_texts(entities_raw), map(int, _text(counts_text).split(",")),
                             strict=True):
        stop = start + count
        snapshot.logs[entity] = EntityLog(rows[start:stop], ids[start:stop])
        snapshot.log_seqs[entity] = log_seqs[start:stop]
        snapshot.histories[entity] = histories[start:stop]
        start = stop
    return snapshot


def _texts(items: Sequence[Any]) -> list[str]:
    if items and isinstance(items[0], bytes):
        return [item.decode() for item in items]
    return [_text(item) for item in items]


def _numbers(text: bytes | str, between: str, width: int) -> Floats:
    """The numbers of ``text``, rows joined by ``between``, each ``width`` numbers joined by
    ``|``, as one flat float64 array; an empty token (the value slot of a group without
    values) is NaN."""
    tokens = _text(text).replace(between, "|").split("|")
    if width > 1 and not all(tokens[width - 1::width]):
        tokens = [token or "nan" for token in tokens]
    return np.array(list(map(float, tokens)), np.float64)


def _stamp(history: str | None, before: int | None) -> tuple[float, float]:
    """The label of a row from its history ``seq,label_time,label;...``: the last one, or the
    last one with a sequence number below ``before``; no label: ``(-inf, 0)``."""
    found = (-np.inf, 0.0)
    for entry in (history or "").split(";") if history else ():
        seq, label_time, label = entry.split(",")
        if before is not None and int(seq) >= before:
            break
        found = (float(label_time), float(label))
    return found


class LiveWindows:
    """Window and calendar features of each batch, the state in a :class:`WindowStore`.

    ``__call__(events, labels)`` has :meth:`WindowEngine.apply`'s contract (one row per event
    in ``definition.names`` order) with the state shared by every process using the store.
    """

    def __init__(self, definition: Definition, store: WindowStore, *,
                 dtype: type[np.floating[Any]] = np.float32, pending_labels: int = 100_000,
                 idle_ttl_ms: int = DAY_MS) -> None:
        self.definition = definition
        self.names = definition.names
        self.store = store
        self.calendar = Calendar(definition.time_zone, definition.night_hours)
        self.stats = LiveStats({w.name: GroupStats() for w in definition.windows})
        self._dtype: np.dtype[np.floating] = np.dtype(dtype)
        self._pending = pending_labels
        self._margin = idle_ttl_ms
        self._unsaved: dict[str, list[tuple[str, str, str]]] = {}
        """Per group, the features served to the last batch's new events: saved by the next
        call (a duplicate whose features were not saved is recomputed as of its arrival)."""

    def __call__(self, events: Sequence[Transaction],
                 labels: Iterable[Label | LabelRecord] = ()) -> npt.NDArray[np.floating]:
        given = [label if isinstance(label, Label) else Label.of(label) for label in labels]
        requests = [request(w, events, given, pending_labels=self._pending,
                            ttl_ms=w.horizon_ms + self._margin,
                            memos=self._unsaved.pop(w.name, ()))
                    for w in self.definition.windows]
        replies = self.store.exchange(requests) if requests else []
        failpoints.hit("after_window_state")
        out = np.empty((len(events), len(self.names)), self._dtype)
        times = np.fromiter((e.event_time_ms for e in events), np.int64, len(events))
        column = 0
        for window, reply in zip(self.definition.windows, replies, strict=True):
            width = len(window.names)
            snapshot = parse(window, reply)
            self._count_labels(snapshot)
            if len(events):
                out[:, column:column + width] = self._group(window, events, times, snapshot)
            column += width
        if len(events):
            out[:, column:] = self.calendar(times)
        return out

    def _count_labels(self, snapshot: Snapshot) -> None:
        applied, ignored, pending = snapshot.labels
        self.stats.labels.applied += applied
        self.stats.labels.ignored += ignored
        self.stats.labels.pending += pending

    def _group(self, window: Window, events: Sequence[Transaction], times: Ints,
               snapshot: Snapshot) -> Floats:
        marks: Ints = np.maximum.accumulate(times)
        if snapshot.watermark is not None:
            np.maximum(marks, snapshot.watermark, out=marks)
        ids = [e.event_id for e in events]
        arrived = PendingLabels(len(events) + 1)
        for i, (label_time, label) in snapshot.stamps.items():
            arrived.add(Label(ids[i], int(label), int(label_time)))
        new_here = {ids[i] for i, code in enumerate(snapshot.codes) if code == "n"}
        before = [i for i, code in enumerate(snapshot.codes)
                  if code == "d" and ids[i] not in new_here]
        engine = GroupEngine(window)
        engine.state.logs = dict(snapshot.logs)
        batch = _Batch(events, times, marks, ids, arrived, self._dtype)
        out = engine.apply(batch, skip=before)
        for i in before:
            memo = snapshot.memos.get(i)
            out[i] = memo if memo is not None else self._as_of(
                window, events[i], times[i:i + 1], snapshot, snapshot.seqs[i])
        self._unsaved[window.name] = [
            (str(getattr(events[i], window.key)), ids[i], pack_memo(out[i], self._dtype))
            for i, code in enumerate(snapshot.codes) if code == "n"]
        stats = self.stats.groups[window.name]
        for name in ("computed", "late", "too_late", "duplicates", "missing_key"):
            setattr(stats, name, getattr(stats, name) + getattr(engine.stats, name))
        stats.duplicates += len(before)
        return out

    def _as_of(self, window: Window, event: Transaction, time: Ints, snapshot: Snapshot,
               seq: int) -> Floats:
        """The features an event already kept was served: over the rows that arrived before
        it, with the labels they had then (it was not too late then: it was kept)."""
        entity = str(getattr(event, window.key))
        engine = GroupEngine(window)
        log, seqs = snapshot.logs.get(entity), snapshot.log_seqs.get(entity)
        if log is not None and seqs is not None:
            keep = seqs < seq
            rows = log.rows[keep].copy()
            if window.uses_labels:
                layout = engine.state.layout
                history = snapshot.histories[entity]
                stamps = [_stamp(h, seq) for h, k in zip(history, keep, strict=True) if k]
                rows[:, layout.label_time] = [s[0] for s in stamps]
                rows[:, layout.fraud] = [s[1] for s in stamps]
            if len(rows):
                engine.state.logs[entity] = EntityLog(rows, log.ids[keep].copy())
        batch = _Batch([event], time, time, [event.event_id], PendingLabels(1), self._dtype)
        row: Floats = engine.apply(batch)[0]
        return row
