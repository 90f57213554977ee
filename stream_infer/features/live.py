"""Live window features: the engine's own state, kept in a shared store, a batch at a time.

The live service, backfill and replay compute window features with one piece of code,
:class:`~stream_infer.features.engine.GroupEngine`. Backfill keeps its state in memory
(:class:`~stream_infer.features.WindowEngine`); the live service keeps the same state in
Redis, shared by every worker: each entity's log (its kept events' rows, the features served
to them included) as one blob, the label directory, the labels waiting for their event and
the watermark (``adapters/redis_windows.py`` lists the keys). Per group and batch:

1. **read** (one round trip for every group; under the group's lease once workers have
   collided in it, then one shard of its entities at a time, each under its own lease):
   the watermark, the blobs of the batch's entities and of the entities the label
   directory names for its labels and events, the labels waiting for the batch's events
   and for its labels' events;
2. the engine applies the labels, then the events, to that state, in this process;
3. **write** (one round trip, each group's sent as soon as it is computed, so the store
   runs it while the next group is computed): the blobs it changed, the new events'
   directory entries, the pending labels taken and added, the watermark; atomically, and
   only if nothing the batch read has changed meanwhile (each blob carries a version).
   Otherwise another worker's batch came between: the group is read and computed again.
   The order in which the writes land is the arrival order the semantics speak of.

Redis runs a few calls per entity and batch and none of the per-event decisions (duplicate,
too late, where a label goes): the engine makes them, as it does in memory. A batch
re-processed after a crash finds its events kept with the features served to them.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .. import failpoints
from ..errors import FeatureStoreError
from ..records import LabelRecord, Transaction, wall_clock_ms
from .calendar import Calendar
from .codec import decode_logs, encode_logs
from .definition import CALENDAR_NAMES, Definition, Window
from .engine import GroupEngine, GroupStats, LabelStats, _Batch
from .labels import Label, PendingLabels
from .state import GroupState, Layout

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Indices = npt.NDArray[np.intp]
DAY_MS = 86_400_000
BUSY = 0
"""A read's reply when another worker holds the group's lease."""
LEASED_BATCHES = 100
"""After a refused write, the batches a group reads under its lease before it tries
without again."""


@dataclass(frozen=True, slots=True)
class StoreCall:
    """One group's script call: the window and the arguments (``adapters.redis_windows``
    documents their order); for a read, ``logs``: the entities whose logs the reply holds
    first (the batch's), read beside the script; for a write, ``blobs``: one per entity it
    names, in that order, the arguments after ``args``."""

    window: Window
    args: list[Any]
    logs: Sequence[str] = ()
    blobs: Sequence[bytes] = ()

    @property
    def log_bytes(self) -> int:
        """For a write: the bytes of the logs it carries."""
        return sum(map(len, self.blobs))


class WindowStore(Protocol):
    """The window-state port: the Redis adapter implements it."""

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        """One round trip: each group's read reply, in order. Raises ``FeatureStoreError``
        when the store is unreachable."""
        ...

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        """One round trip: each group's write, True if it landed (False: something it read
        had changed). ``calls`` may be computed as they are taken: each is sent before the
        next is taken, so the store runs one while the worker computes the next. Raises
        ``FeatureStoreError`` when the store is unreachable."""
        ...

    def directory(self, window: Window, event_ids: Sequence[str]) -> Sequence[str | None]:
        """One round trip: the entity of each kept event (the label directory), or None.
        Raises ``FeatureStoreError`` when the store is unreachable."""
        ...


@dataclass
class LiveStats:
    """What the live windows did (cumulative): per group, and the labels."""

    groups: dict[str, GroupStats] = field(default_factory=dict)
    labels: LabelStats = field(default_factory=LabelStats)
    retries: dict[str, int] = field(default_factory=dict)
    """Per group, batches read and computed again: another worker's write of the state they
    read came first."""
    waits: dict[str, float] = field(default_factory=dict)
    """Per group, seconds batches waited for another worker's turn (from the read that
    found the group held to the one that won its lease)."""
    log_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    """Per group and direction (``read``, ``written``), the bytes of entity logs the batches
    computed took from the store and sent to it, refused writes included: a batch moves the
    whole log of every entity it touches, so this over the events computed is what a batch
    costs (``batch.max_records`` spreads it over more events)."""
    state_lost: dict[str, int] = field(default_factory=dict)
    """Per group, reads that found its watermark in the store older than one this worker
    had seen, or gone: the store lost or rolled back the group's state."""


def _stamp_text(stamp: tuple[float, float]) -> str:
    return f"{stamp[0]:.0f},{stamp[1]:.0f}"


def _stamp(text: str) -> tuple[float, float]:
    time, label = text.split(",")
    return float(time), float(label)


@dataclass
class _Attempt:
    """One read and computation of a group's batch: its rows, stats and write."""

    rows: Floats
    stats: GroupStats
    labels: LabelStats
    write: StoreCall
    read_bytes: int
    watermark: int | None
    """The group's watermark in the store once the write lands (at least)."""


@dataclass(frozen=True)
class _Unit:
    """What one read, computation and write covers: a group's batch, or, for a group read
    under its lease in shards, the part of it whose entities fall in one ``shard`` (its
    ``events``, at ``at`` in the batch; the labels routed to it), under that shard's
    lease."""

    window: Window
    events: Sequence[Transaction]
    shard: int | None = None
    at: Indices | None = None
    labels: Sequence[Label] = ()

    @property
    def name(self) -> str:
        return self.window.name if self.shard is None else f"{self.window.name}:{self.shard}"

    @property
    def lock(self) -> str:
        """The suffix of its lease's key: none for the whole group, ``:s`` for shard s."""
        return "" if self.shard is None else f":{self.shard}"

    @cached_property
    def entities(self) -> list[str]:
        """Its events' entities, once each, in order of first arrival."""
        return _keys(self.window, self.events)


def shard_of(entity: str, shards: int) -> int:
    """The lease shard of an entity: the same in every process."""
    return zlib.crc32(entity.encode("utf-8", "surrogateescape")) % shards


class LiveWindows:
    """Window and calendar features of each batch, the state in a :class:`WindowStore`.

    ``__call__(events, labels)`` has :meth:`WindowEngine.apply`'s contract (one row per event
    in ``definition.names`` order) with the state shared by every process using the store.

    A group is read without its lease until one of its writes is refused; then its reads
    take the lease (``lease_ms``; the write gives it back) for :data:`LEASED_BATCHES`
    batches (always, with ``always_lease``), so that workers sharing entities take turns
    instead of computing batches whose writes would be refused, while workers whose
    entities never meet (a group keyed by the input's partition key) never wait for each
    other. A group another worker holds is probed (the lease alone) after a short wait,
    for at most ``wait_ms`` (then ``FeatureStoreError``); a write while another worker
    holds it is refused. A write still lands only on the state it was computed from: a
    worker whose lease ran out (a pause longer than ``lease_ms``) computes again.

    With ``lease_shards`` > 1 a leased group's entities are cut into that many shards (by
    :func:`shard_of` their key), each with a lease, read, computation and write of its
    own, one shard at a time, each worker starting at a shard of its own (``first_shard``;
    by default one drawn from its lease's random token): two workers
    sharing every entity compute different shards side by side instead of the whole group
    by turns. A batch's labels go to the shard of their event's entity (the batch's own
    events', else the label directory's, looked up first), so that each shard applies its
    labels before its events, as the engine does; a label whose event is unknown goes to
    shard 0. Whatever the shards, a write lands only on the state it read.

    With ``max_ahead_ms`` > 0, an event stamped more than that ahead of ``clock`` (epoch
    ms) gets no window features (its calendar features still) and never reaches the state:
    it would move its groups' watermarks ahead, and every later event would be too late.
    It is counted ``ahead`` in each group that has its key. Backfill and replay have no
    such clock: they compute it.

    A read that finds a group's watermark older than one this worker had seen, or gone,
    is logged and counted in ``stats.state_lost``: the store lost or rolled back the
    group's state (:meth:`_check_watermark`).
    """

    def __init__(self, definition: Definition, store: WindowStore, *,
                 dtype: type[np.floating[Any]] = np.float32, pending_labels: int = 100_000,
                 idle_ttl_ms: int = DAY_MS, lease_ms: int = 5_000,
                 wait_ms: int = 60_000, always_lease: bool = False,
                 lease_shards: int = 1, first_shard: int | None = None,
                 max_ahead_ms: int = 0,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.definition = definition
        self.names = definition.names
        self.store = store
        self.calendar = Calendar(definition.time_zone, definition.night_hours)
        self.stats = LiveStats({w.name: GroupStats() for w in definition.windows})
        self._dtype: np.dtype[np.floating] = np.dtype(dtype)
        self._pending = pending_labels
        self._margin = idle_ttl_ms
        self._lease = (uuid.uuid4().hex, lease_ms)
        self._wait_s = wait_ms / 1000
        self._always_lease = always_lease
        self._shards = lease_shards
        self._first_shard = (shard_of(self._lease[0], lease_shards) if first_shard is None
                             else first_shard % lease_shards)
        self._leased = dict.fromkeys((w.name for w in definition.windows), 0)
        """Per group, the batches left to read under the lease (after a refused write)."""
        self._watermarks: dict[str, int] = {}
        """Per group, the newest watermark this worker read from the store or wrote to it
        (:meth:`_check_watermark`)."""
        self._max_ahead = max_ahead_ms
        self._clock = clock

    def __call__(self, events: Sequence[Transaction],
                 labels: Iterable[Label | LabelRecord] = ()) -> npt.NDArray[np.floating]:
        given = [label if isinstance(label, Label) else Label.of(label) for label in labels]
        times = np.fromiter((e.event_time_ms for e in events), np.int64, len(events))
        if self._max_ahead and len(times) and (
                ahead := times > self._clock() + self._max_ahead).any():
            return self._without(ahead, events, times, given)
        return self._features(events, times, given)

    def _without(self, ahead: npt.NDArray[np.bool_], events: Sequence[Transaction],
                 times: Ints, labels: list[Label]) -> npt.NDArray[np.floating]:
        """The rows of a batch some of whose events are stamped too far ahead: theirs
        without window features, counted; the others' as usual."""
        out = np.full((len(events), len(self.names)), np.nan, self._dtype)
        timely = np.flatnonzero(~ahead)
        out[timely] = self._features([events[i] for i in timely.tolist()], times[timely],
                                     labels)
        out[ahead, len(self.names) - len(CALENDAR_NAMES):] = self.calendar(times[ahead])
        early = [events[i] for i in np.flatnonzero(ahead).tolist()]
        for window in self.definition.windows:
            keyed = sum(getattr(e, window.key) is not None for e in early)
            stats = self.stats.groups[window.name]
            stats.ahead += keyed
            stats.missing_key += len(early) - keyed
        return out

    def _features(self, events: Sequence[Transaction], times: Ints,
                  given: list[Label]) -> npt.NDArray[np.floating]:
        """The rows of a batch none of whose events is stamped too far ahead."""
        units = [u for w in self.definition.windows for u in self._units(w, events, given)]
        done = self._land(units, events, times)
        self._leased = {name: max(left - 1, 0) for name, left in self._leased.items()}
        failpoints.hit("after_window_state")
        out = np.empty((len(events), len(self.names)), self._dtype)
        column = 0
        for window in self.definition.windows:
            width = len(window.names)
            for unit, attempt in done:
                if unit.window is window:
                    self._count(window, attempt)
                    at = slice(None) if unit.at is None else unit.at
                    out[at, column:column + width] = attempt.rows
            column += width
        if len(events):
            out[:, column:] = self.calendar(times)
        return out

    def _units(self, window: Window, events: Sequence[Transaction],
               labels: Sequence[Label]) -> list[_Unit]:
        """The group's batch as one unit, or, leased in shards, one per shard that has
        events or labels, in this worker's order (from its first shard on)."""
        if self._shards == 1 or not self._lease_for(window)[0]:
            return [_Unit(window, events, labels=labels)]
        keys = [getattr(e, window.key) for e in events]
        shards = np.fromiter((0 if k is None else shard_of(str(k), self._shards)
                              for k in keys), np.int64, len(events))
        routed: dict[int, list[Label]] = {}
        if window.uses_labels and labels:
            for label, shard in zip(labels, self._label_shards(window, events, keys, labels),
                                    strict=True):
                routed.setdefault(shard, []).append(label)
        order = [(self._first_shard + i) % self._shards for i in range(self._shards)]
        units = []
        for s in order:
            at = np.flatnonzero(shards == s)
            units.append(_Unit(window, [events[i] for i in at.tolist()], s, at,
                               routed.get(s, [])))
        return [u for u in units if u.labels or u.events]

    def _label_shards(self, window: Window, events: Sequence[Transaction],
                      keys: Sequence[Any], labels: Sequence[Label]) -> list[int]:
        """Each label's shard: its event's entity's, the batch's events first, then the
        label directory (one lookup); 0 for an event not kept."""
        in_batch = {e.event_id: k for e, k in zip(events, keys, strict=True) if k is not None}
        unknown = [label.event_id for label in labels if label.event_id not in in_batch]
        found = dict(zip(unknown, self.store.directory(window, unknown), strict=True)
                     ) if unknown else {}
        entities = [in_batch[i] if i in in_batch else found.get(i)
                    for i in (label.event_id for label in labels)]
        return [0 if e is None else shard_of(str(e), self._shards) for e in entities]

    def _land(self, units: list[_Unit], events: Sequence[Transaction],
              times: Ints) -> list[tuple[_Unit, _Attempt]]:
        """Every unit read, computed and written: units held by another worker are waited
        for, refused writes computed again at once. A unit held at the last read is read
        again after a wait with nothing but the lease (a probe: no entities, labels or
        events for Redis to take in), then, once the lease is this worker's, read whole at
        once, its logs beside the script. Of a group leased in shards, one shard is read
        whole per round trip: the first not held; while all are held, they are probed. A
        whole group whose write was refused is cut into its shards for the next read (it
        is leased from then on), so that its lease is the one other workers take."""
        marks = np.maximum.accumulate(times) if len(times) else times
        todo = list(units)
        done: dict[str, tuple[_Unit, _Attempt]] = {}
        held: set[str] = set()
        won: set[str] = set()
        waiting: dict[str, float] = {}
        deadline, pause = time.monotonic() + self._wait_s, 0.0005
        while todo:
            chosen = self._chosen(todo, held, won)
            probes = {u.name for u in chosen if u.name in held}
            reads = [read_call(u.window, () if u.name in probes else u.events,
                               () if u.name in probes else u.labels, self._lease_for(u.window),
                               held=u.name in won, lock=u.lock,
                               keys=[] if u.name in probes else u.entities)
                     for u in chosen]
            replies = self.store.read(reads)
            ready = []
            for unit, reply in zip(chosen, replies, strict=True):
                if reply == BUSY:
                    held.add(unit.name)
                elif unit.name in probes:
                    held.discard(unit.name)
                    won.add(unit.name)
                else:
                    won.discard(unit.name)
                    ready.append((unit, reply))
            self._waited(waiting, todo, held)
            computed = {u.name for u, _ in ready}
            last = {u.window.name for u, _ in ready} - {u.window.name for u in todo
                                                        if u.name not in computed}
            attempts: list[_Attempt] = []
            landed = self.store.write(self._computed(ready, last, times, marks, attempts)
                                      ) if ready else []
            refused: set[str] = set()
            for (unit, _), attempt, ok in zip(ready, attempts, landed, strict=True):
                window = unit.window
                self._moved(window, attempt)
                if ok:
                    done[unit.name] = (unit, attempt)
                    self._saw(window, attempt.watermark)
                else:
                    refused.add(unit.name)
                    self.stats.retries[window.name] = self.stats.retries.get(window.name, 0) + 1
                    self._leased[window.name] = LEASED_BATCHES
            todo = [shard for u in todo if u.name not in done
                    for shard in (self._units(u.window, events, u.labels)
                                  if u.shard is None and u.name in refused else [u])]
            if todo and time.monotonic() > deadline:
                self._waited(waiting, [], set())
                raise FeatureStoreError(
                    f"window state of {', '.join(sorted({u.window.name for u in todo}))}: "
                    f"not written in {self._wait_s:g} s (held by other workers, or every "
                    "write refused: what it read kept changing)")
            if todo and all(u.name in held for u in todo):
                time.sleep(pause)
                pause = min(pause * 2, 0.008)
        return list(done.values())

    def _computed(self, ready: list[tuple[_Unit, Any]], last: set[str], times: Ints,
                  marks: Ints, attempts: list[_Attempt]) -> Iterator[StoreCall]:
        """Each ready unit computed (its attempt added to ``attempts``) and its write, one
        at a time: the store sends one while the next is computed."""
        for unit, reply in ready:
            attempts.append(self._compute(unit, times, marks, reply,
                                          last=unit.window.name in last))
            yield attempts[-1].write

    @staticmethod
    def _chosen(todo: list[_Unit], held: set[str], won: set[str]) -> list[_Unit]:
        """A round trip's reads: every whole group; of a group in shards, the first shard
        whose lease this worker has just won, else the first not held, else (all held)
        every one, as probes."""
        chosen: list[_Unit] = []
        shards: dict[str, list[_Unit]] = {}
        for unit in todo:
            if unit.shard is None:
                chosen.append(unit)
            else:
                shards.setdefault(unit.window.name, []).append(unit)
        for units in shards.values():
            first = ([u for u in units if u.name in won]
                     or [u for u in units if u.name not in held])
            chosen += first[:1] or units
        return chosen

    def _waited(self, waiting: dict[str, float], todo: Sequence[_Unit],
                held: set[str]) -> None:
        """Note when each group was first found held whole (every unit it has left held
        by another worker: ``waiting``), and count the wait of those no longer held (this
        worker has just won a lease of theirs; at the deadline, ``todo`` empty: all)."""
        now = time.monotonic()
        stalled = {u.window.name for u in todo}
        stalled -= {u.window.name for u in todo if u.name not in held}
        for name in stalled:
            waiting.setdefault(name, now)
        for name in set(waiting) - stalled:
            self.stats.waits[name] = self.stats.waits.get(name, 0.0) + now - waiting.pop(name)

    def _lease_for(self, window: Window) -> tuple[str, int]:
        """The lease a read of ``window`` takes: the worker's, or none (no token)."""
        leased = self._always_lease or self._leased[window.name] > 0
        return self._lease if leased else ("", self._lease[1])

    def _moved(self, window: Window, attempt: _Attempt) -> None:
        moved = self.stats.log_bytes
        for direction, size in (("read", attempt.read_bytes),
                                ("written", attempt.write.log_bytes)):
            moved[window.name, direction] = moved.get((window.name, direction), 0) + size

    def _count(self, window: Window, attempt: _Attempt) -> None:
        stats = self.stats.groups[window.name]
        for name in ("computed", "late", "too_late", "duplicates", "missing_key"):
            setattr(stats, name, getattr(stats, name) + getattr(attempt.stats, name))
        labels = self.stats.labels
        labels.applied += attempt.labels.applied
        labels.ignored += attempt.labels.ignored
        labels.pending += attempt.labels.pending

    def _saw(self, window: Window, watermark: int | None) -> None:
        """Note that the group's watermark in the store is at least ``watermark``."""
        if watermark is not None:
            seen = self._watermarks.get(window.name, watermark)
            self._watermarks[window.name] = max(seen, watermark)

    def _check_watermark(self, window: Window, watermark: int | None) -> None:
        """Count, and log, a read of ``window`` whose watermark is older than one this worker
        had seen (read, or written by a write that landed), or gone. A group's watermark in
        the store only ever moves forward, so the store has lost or rolled back the group's
        state: a Redis restarted without persistence, flushed, or failed over to a replica
        behind its primary. Its windows then miss the events they held, until those age
        out; nothing here can bring them back."""
        name = window.name
        before = self._watermarks.pop(name, None)
        self._saw(window, watermark)
        if before is None or (watermark is not None and watermark >= before):
            return
        self.stats.state_lost[name] = self.stats.state_lost.get(name, 0) + 1
        log.error("window state of group %s went back: its watermark in Redis is %s, where "
                  "this worker had seen %d. Redis lost or rolled back the state (a "
                  "restart without persistence, a flush, a failover to a replica behind "
                  "its primary), so the group's windows miss the events before until they "
                  "age out. Restore Redis from its persistence if you can (README: window "
                  "features, Redis)", name, "absent" if watermark is None else watermark,
                  before)

    def _compute(self, unit: _Unit, all_times: Ints,
                 all_marks: Ints, reply: Sequence[Any], *, last: bool = True) -> _Attempt:
        """The unit's batch on the state read: its rows and the write that keeps it. An
        event's watermark is the one read, or the batch's newest time up to it
        (``all_marks``) if newer, whichever unit it is in; the batch moves the group's
        watermark with the group's ``last`` units' writes (those left), so that no shard
        of the batch reads a watermark its later events have moved."""
        window, labels = unit.window, unit.labels
        events = unit.events
        times = all_times if unit.at is None else all_times[unit.at]
        snapshot = _Snapshot.parse(window, reply, events)
        self._check_watermark(window, snapshot.watermark)
        state = snapshot.state
        engine = GroupEngine(window, compact=False)
        engine.state = state
        outcome = LabelStats()
        order = unit.entities
        touched = set(order)
        pending = PendingLabels(len(snapshot.pending) + len(labels) + 1)
        for event_id, stamp in snapshot.pending.items():
            pending.add(Label(event_id, int(stamp[1]), int(stamp[0])))
        added: dict[str, tuple[float, float]] = {}
        used = labels if window.uses_labels else ()
        horizon = (None if snapshot.watermark is None
                   else snapshot.watermark - window.horizon_ms)
        for label, won in zip(used, state.label(used, horizon), strict=True):
            if won:
                touched.add(state.directory[label.event_id][0])
                outcome.applied += 1
            elif won is None and pending.add(label):
                added[label.event_id] = label.stamp
                outcome.pending += 1
            else:
                outcome.ignored += 1
        marks: Ints = all_marks if unit.at is None else all_marks[unit.at]
        if snapshot.watermark is not None:
            marks = np.maximum(marks, snapshot.watermark)
        ids = [e.event_id for e in events]
        batch = _Batch(events, times, marks, ids, pending, self._dtype)
        rows = engine.apply(batch)
        taken = [i for i in batch.arrived if pending.get(i) is not None]
        for event_id in taken:
            added.pop(event_id, None)
        answered = ~np.all(np.isnan(rows), axis=1) if rows.shape[1] else np.zeros(len(ids), bool)
        moved = (int(all_marks[-1]) if len(all_marks) else snapshot.watermark) if last else None
        write = write_call(
            window, snapshot, order, touched, ids, added, taken, watermark=moved,
            guard=int(times[answered].min()) if answered.any() else None,
            pending_labels=self._pending, ttl_ms=window.horizon_ms + self._margin,
            token=self._lease[0], lock=unit.lock)
        newest = max((m for m in (snapshot.watermark, moved) if m is not None), default=None)
        return _Attempt(rows, engine.stats, outcome, write, snapshot.log_bytes, newest)


def read_call(window: Window, events: Sequence[Transaction], labels: Sequence[Label],
              lease: tuple[str, int], *, held: bool = False, lock: str = "",
              keys: Sequence[str] | None = None) -> StoreCall:
    """The read script's arguments: the group's prefix, the worker's lease (token, empty
    for none, and milliseconds), the suffix of the lease's key (``lock``: a shard's),
    whether the script reads the batch's logs, its entities of the batch (when the script
    reads their logs, or has labels whose entities it need not read again), the label ids
    (groups with a rate only) and the batch's event ids (groups with a rate: for their
    directory entries, whose logs it reads, and the labels waiting for them). The batch's
    logs are read beside the script (``logs``) without the lease, or when the worker
    already ``held`` it; a read that may find another worker's turn has the script read
    them, so that a worker told to wait moves no logs. ``keys``: the batch's entities
    (:func:`_keys`), if known."""
    keys = _keys(window, events) if keys is None else keys
    label_ids = [label.event_id for label in labels] if window.uses_labels else []
    event_ids = _event_ids(window, events)
    beside = held or not lease[0]
    named = keys if label_ids or not beside else []
    return StoreCall(window, [window.prefix, *lease, lock, "" if beside else "1", len(named),
                              *named, len(label_ids), *label_ids, len(event_ids), *event_ids],
                     keys if beside else ())


def write_call(window: Window, snapshot: _Snapshot, order: Sequence[str], touched: set[str],
               ids: list[str], added: dict[str, tuple[float, float]], taken: list[str], *,
               watermark: int | None, guard: int | None, pending_labels: int,
               ttl_ms: int, token: str, lock: str = "") -> StoreCall:
    """The write script's arguments: the header; every entity read or touched with the
    version it was read at (empty: absent); the new events (groups with a rate) with their
    directory entry, the pending label and the directory entry read for them; the pending
    labels taken; the labels added to the pending ones, each with the stored stamp and
    directory entry read for its event; then (``blobs``) each entity's new blob (empty:
    delete; ``-``: only checked). The logs are encoded in ``order`` (the batch's entities
    in arrival order, as the engine merged them) then the other ``touched``, so that their
    rows are read where the engine left them, side by side."""
    state = snapshot.state
    args: list[Any] = [window.prefix, ttl_ms, "" if watermark is None else watermark,
                       "" if guard is None else guard, window.lateness_ms,
                       window.horizon_ms, pending_labels,
                       "" if snapshot.watermark is None else snapshot.watermark, token, lock]
    entities = sorted(touched | set(snapshot.versions))
    logs, versions = state.logs, snapshot.versions
    written = [e for e in dict.fromkeys([*order, *sorted(touched)])
               if (log := logs.get(e)) is not None and len(log.rows)]
    blobs = dict(zip(written, encode_logs([logs[e] for e in written],
                                          [versions.get(e, 0) + 1 for e in written],
                                          len(window.names)),
                     strict=True))
    args.append(len(entities))
    for entity in entities:
        held = versions.get(entity)
        args += (entity, b"" if held is None else _VERSION.pack(held))
    new = [i for i in dict.fromkeys(ids) if i in state.directory and i not in snapshot.loaded]
    kept = ([(i, *state.directory[i], snapshot.seen.get(i, ""), snapshot.directory.get(i, ""))
             for i in new]
            if window.uses_labels else [])
    args.append(len(kept))
    for entry in kept:
        args += entry
    args.append(len(taken))
    args += taken
    args.append(len(added))
    for event_id, stamp in added.items():
        args += [event_id, _stamp_text(stamp), snapshot.seen.get(event_id, ""),
                 snapshot.directory.get(event_id, "")]
    return StoreCall(window, args, blobs=[blobs.get(e, b"") if e in touched else b"-"
                                          for e in entities])


_VERSION = struct.Struct("<Q")


def _event_ids(window: Window, events: Sequence[Transaction]) -> list[str]:
    """The batch's event ids a group's read looks up (with a rate: in the directory, and
    among the pending labels), in order; none for a group without."""
    return [e.event_id for e in events] if window.uses_labels else []


def _keys(window: Window, events: Sequence[Transaction]) -> list[str]:
    """The group's entities of a batch, once each, in order of first arrival."""
    return list(dict.fromkeys(str(k) for k in (getattr(e, window.key) for e in events)
                              if k is not None))


def _texts(items: Sequence[Any]) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else str(item) for item in items]


@dataclass
class _Snapshot:
    """A group's read reply: the state the engine runs on, each blob's version, the ids
    kept before the batch, the pending labels read (stamps, and the stored text), the
    directory entries read for the batch's labels and events, and the bytes of the logs
    read."""

    state: GroupState
    watermark: int | None
    versions: dict[str, int]
    loaded: set[str]
    pending: dict[str, tuple[float, float]]
    seen: dict[str, str]
    directory: dict[str, str]
    log_bytes: int

    @classmethod
    def parse(cls, window: Window, reply: Sequence[Any],
              events: Sequence[Transaction]) -> _Snapshot:
        """The reply: the watermark, the entities and their blobs (empty: none), the
        labels' ids and directory entries, the pending labels' ids and stored stamps, the
        batch's ids the directory holds, each followed by its entity. The state's
        directory holds the kept events the batch can meet: its own ids kept before (in its
        entities' logs read, at any time; with a rate, under any entity), and its
        labels'."""
        (watermark, entities, blobs, label_ids, label_dir, pending_ids, pending_stamps,
         event_dir) = reply
        state = GroupState(window)
        versions: dict[str, int] = {}
        width, narrow = state.layout.width, len(window.names)
        stored = [(e, blob) for e, blob in zip(_texts(entities), blobs, strict=True) if blob]
        for (entity, _), (decoded, version) in zip(
                stored, decode_logs([blob for _, blob in stored], width, narrow), strict=True):
            state.logs[entity], versions[entity] = decoded, version
        for event in events:
            if (key := getattr(event, window.key)) is not None:
                _place_kept(state, str(key), event.event_id)
        hits = _texts(event_dir)
        directory = {i: e for i, e in zip(_texts(label_ids), _texts(label_dir), strict=True)
                     if e}
        directory.update(zip(hits[::2], hits[1::2], strict=True))
        for event_id, entity in directory.items():
            if event_id not in state.directory:
                _place_kept(state, entity, event_id)
        seen: dict[str, str] = {}
        pending: dict[str, tuple[float, float]] = {}
        for event_id, text in zip(_texts(pending_ids), pending_stamps, strict=True):
            if text:
                seen[event_id] = text.decode() if isinstance(text, bytes) else str(text)
                pending[event_id] = _stamp(seen[event_id])
        mark = watermark.decode() if isinstance(watermark, bytes) else watermark
        return cls(state, int(mark) if mark else None, versions, set(state.directory),
                   pending, seen, directory, sum(len(blob) for _, blob in stored))


def _place_kept(state: GroupState, entity: str, event_id: str) -> None:
    """Name ``event_id``'s row in ``entity``'s log read, if it is there, in the
    directory: the engine then treats the event as kept, at that row's time."""
    log = state.logs.get(entity)
    row = log.last_index(event_id) if log is not None else -1
    if row >= 0:
        assert log is not None
        state.directory[event_id] = (entity, int(log.rows[row, Layout.TIME]))
