"""The state transitions: a batch of events and labels in, their feature rows out.

:meth:`WindowEngine.apply` is the whole contract. It first applies the batch's labels,
then takes the events in arrival order; each event gets, for each window group:

* NaN, if it lacks the group's key, or is too late (older than the watermark minus the
  group's allowed lateness; not kept, so it never enters another event's window);
* the features it was served before, if its ``event_id`` is kept (a duplicate: a no-op);
* else its window features as of its own time over the events that had arrived: the plain
  window of length ``w`` holds its entity's events with time in ``(t - w, t]`` that sort
  before it by ``(event_time, event_id)``, and itself; the delayed one ``(t - d - w, t - d]``;
  rates count the frauds whose label had arrived.

and the calendar features of its time. Labels may also arrive among the events
(``during``: backfill's late labels), and count for the events after them only. A label
reaches its event's row if the event is kept and newer than the group's horizon as the
label arrives, else it waits for the event's next arrival; a waiting label goes to that
first arrival only. An event's row therefore depends only on the events and labels that
arrived before it, never on how they were cut into batches: a duplicate, a replay or a
re-run of the same arrivals yields the same values.
``stream_infer.features.state`` describes the state and how Redis should keep it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ..records import Transaction
from .calendar import Calendar
from .definition import Definition, Window
from .labels import NO_LABEL, Label, LabelsDuring, PendingLabels
from .state import EntityLog, GroupState, Memory
from .windows import Flip, Placed, Run, runs

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Indices = npt.NDArray[np.intp]


@dataclass
class GroupStats:
    """What happened to one group's events (cumulative)."""

    computed: int = 0
    late: int = 0
    """Computed, though older than an event their entity already had."""
    too_late: int = 0
    duplicates: int = 0
    missing_key: int = 0
    ahead: int = 0
    """The live path only: stamped too far ahead of the worker's clock to enter the state
    (:class:`~stream_infer.features.live.LiveWindows`)."""
    trimmed: int = 0
    expired: int = 0


@dataclass
class LabelStats:
    """What happened to the labels (cumulative)."""

    applied: int = 0
    ignored: int = 0
    """Duplicates and labels older than the one the event has."""
    pending: int = 0
    evicted: int = 0


@dataclass
class _Batch:
    """A batch as the groups read it; ``arrived`` collects the events that took their
    pending labels; ``during``, the labels that arrive among its events."""

    events: Sequence[Transaction]
    times: Ints
    marks: Ints
    ids: list[str]
    pending: PendingLabels
    dtype: np.dtype[np.floating]
    arrived: list[str] = field(default_factory=list)
    during: LabelsDuring | None = None


def field_values(window: Window, events: Sequence[Transaction]) -> Floats:
    """The values ``window``'s aggregates read, one row per event (NaN: absent)."""
    columns = [[e.amount for e in events] if f == "amount"
               else [e.attributes.get(f.removeprefix("attributes."), np.nan) for e in events]
               for f in window.fields]
    return np.array(columns, np.float64).T.reshape(len(events), len(columns))


class GroupEngine:
    """The state and transitions of one window group.

    With ``compact`` (the default) every entity's log keeps arrays of its own; without, its
    rows and ids are views into the batch's merged arrays, which saves a copy per entity
    and batch but keeps the batch's arrays alive while any entity's log does: for a state
    dropped after each batch (the live path)."""

    def __init__(self, window: Window, *, compact: bool = True) -> None:
        self.window = window
        self.state = GroupState(window)
        self.stats = GroupStats()
        self._compact = compact

    def apply(self, batch: _Batch) -> Floats:
        """The group's features of every event of ``batch`` (float64, the window's names)."""
        out = np.full((len(batch.events), len(self.window.names)), np.nan)
        keys: list[str | None] = [getattr(e, self.window.key) for e in batch.events]
        self.stats.missing_key += keys.count(None)
        copies = self._copies(keys, batch)
        for i in copies:
            keys[i] = None
        values = field_values(self.window, batch.events)
        refused = np.zeros(len(keys), bool)
        computed = False
        for run in runs(keys, batch.times, batch.ids):
            todo = self._triage(np.array(run, np.intp), batch, out, refused)
            if len(todo):
                self._compute(todo, keys, values, batch, out)
                computed = True
        if not computed:  # the labels arriving among the events reach their rows now
            self._flips(np.empty(0, np.intp), np.empty(0, np.int64), {}, batch)
        if copies:
            self._serve_copies(copies, batch, out, refused)
        return out

    def _copies(self, keys: list[str | None], batch: _Batch) -> dict[int, int]:
        """The events that repeat an earlier event of the batch exactly (id, key and time),
        each to the first's index: those whose id the batch holds only in such copies, and
        the state keeps, if at all, as that same event. One at a time, such a copy is
        served the first's features while they are within the horizon, and is too late
        otherwise: it needs no run of its own (:meth:`_serve_copies`)."""
        ids = batch.ids
        if len(set(ids)) == len(ids):
            return {}
        times: list[int] = batch.times.tolist()
        first: dict[str, int] = {}
        copies: dict[int, int] = {}
        mixed: set[str] = set()
        for i, (event_id, key) in enumerate(zip(ids, keys, strict=True)):
            if key is None:
                continue
            j = first.setdefault(event_id, i)
            if j == i:
                continue
            if keys[j] == key and times[j] == times[i]:
                copies[i] = j
            else:
                mixed.add(event_id)
        directory = self.state.directory
        return {i: j for i, j in copies.items() if ids[j] not in mixed
                and directory.get(ids[j], (keys[j], times[j])) == (keys[j], times[j])}

    def _serve_copies(self, copies: dict[int, int], batch: _Batch, out: Floats,
                      refused: npt.NDArray[np.bool_]) -> None:
        """Each copy as one at a time: the first's features if the first was served or
        kept and is still newer than the horizon as the copy arrives, else too late."""
        served = 0
        for i, j in copies.items():
            if not refused[j] and batch.times[j] > batch.marks[i] - self.window.horizon_ms:
                out[i] = out[j]
                served += 1
        self.stats.duplicates += served
        self.stats.too_late += len(copies) - served

    def _triage(self, run: Indices, batch: _Batch, out: Floats,
                refused: npt.NDArray[np.bool_]) -> Indices:
        """Serve duplicates and refuse the too late (marked in ``refused``); the rest, to
        compute."""
        directory, served = self.state.directory, np.zeros(len(run), bool)
        for at, i in enumerate(run.tolist()):
            if batch.ids[i] in directory:
                memo = self.state.memo(batch.ids[i], batch.marks[i] - self.window.horizon_ms)
                if memo is not None:
                    out[i], served[at] = memo, True
        too_late = ~served & (batch.times[run] < batch.marks[run] - self.window.lateness_ms)
        refused[run[too_late]] = True
        self.stats.duplicates += int(served.sum())
        self.stats.too_late += int(too_late.sum())
        todo: Indices = run[~served & ~too_late]
        return todo

    def _compute(self, todo: Indices, keys: list[str | None], values: Floats,
                 batch: _Batch, out: Floats) -> None:
        """Compute and keep a run's events."""
        index: dict[str, int] = {}
        codes = np.array([index.setdefault(keys[i] or "", len(index)) for i in todo], np.int64)
        order = np.argsort(codes, kind="stable")
        empty = self.state.empty
        logs = [self.state.logs.get(e, empty) for e in index]
        horizon = int(batch.marks[todo].max()) - self.window.horizon_ms
        flips = self._flips(todo, codes, index, batch)
        self._place(todo[order], codes[order], logs, list(index), values, batch, out, horizon,
                    flips)
        if self.window.uses_labels:
            batch.arrived.extend(batch.ids[i] for i in todo)

    def _flips(self, todo: Indices, codes: Ints, index: dict[str, int], batch: _Batch
               ) -> list[Flip]:
        """The labels arriving among the run's events (the batch's only run), as flips of
        the rows of their kept events. A label for a kept event whose entity the run does
        not touch applies now; one whose event arrives after it is taken on arrival
        (:meth:`_run`)."""
        during = batch.during
        if during is None or not self.window.uses_labels:
            return []
        arrived = {batch.ids[i]: (i, code) for i, code in zip(todo.tolist(), codes.tolist(),
                                                               strict=True)}
        flips: list[Flip] = []
        now: list[int] = []
        for m, (arrival, label) in enumerate(zip(during.arrivals, during.labels, strict=True)):
            event = arrived.get(label.event_id)
            edge = int(batch.marks[arrival - 1]) - self.window.horizon_ms
            if event is not None and event[0] >= arrival:
                during.taken[m] = True
            elif event is not None and batch.times[event[0]] > edge:
                flips.append(Flip(m, arrival, label.stamp, event[1], event=event[0]))
            elif (kept := self.state.directory.get(label.event_id)) is None or kept[1] <= edge:
                continue
            elif (code := index.get(kept[0])) is None:
                now.append(m)
            else:
                found = self.state.find(label.event_id)
                assert found is not None
                flips.append(Flip(m, arrival, label.stamp, code, row=found[1]))
        for m in now:  # no event of the run sees them: each as of its own arrival
            edge = int(batch.marks[during.arrivals[m] - 1]) - self.window.horizon_ms
            won = self.state.label([during.labels[m]], edge)[0]
            if won is not None:
                during.won[m].append(won)
        return flips

    def _place(self, todo: Indices, codes: Ints, logs: list[EntityLog], entities: list[str],
               values: Floats, batch: _Batch, out: Floats, horizon: int,
               flips: Sequence[Flip] = ()) -> None:
        """Place the run among its logs, half of the entities at a time if their keys
        would overflow; compute, serve and keep it."""
        placed = Placed(self.window, self.state.layout,
                        self._run(todo, codes, logs, values, batch, flips))
        if not placed.fits and len(logs) > 1:
            half, first = len(logs) // 2, codes < len(logs) // 2
            self._place(todo[first], codes[first], logs[:half], entities[:half], values,
                        batch, out, horizon, [f for f in flips if f.code < half])
            self._place(todo[~first], codes[~first] - half, logs[half:], entities[half:],
                        values, batch, out, horizon,
                        [replace(f, code=f.code - half) for f in flips if f.code >= half])
            return
        served = placed.rows().astype(batch.dtype).astype(np.float64)
        out[todo] = served
        if batch.during is not None:
            for m, won in placed.settle():
                batch.during.won[m].append(won)
        self.stats.computed += len(todo)
        self.stats.late += placed.late
        self._keep(placed, served, entities, horizon)

    def _run(self, todo: Indices, codes: Ints, logs: list[EntityLog], values: Floats,
             batch: _Batch, flips: Sequence[Flip]) -> Run:
        ids = np.array([batch.ids[i] for i in todo], object)
        stamps = [batch.pending.get(i) for i in ids] if self.window.uses_labels else []
        if stamps and batch.during is not None:
            stamps = [batch.during.stamp(event_id, arrival, held) for event_id, arrival, held
                      in zip(ids.tolist(), todo.tolist(), stamps, strict=True)]
        return Run(logs, codes, batch.times[todo], ids,
                   values[todo], np.array([s[1] if s else 0.0 for s in stamps]),
                   np.array([s[0] if s else -np.inf for s in stamps]), todo, flips)

    def _keep(self, placed: Placed, served: Floats, entities: list[str], horizon: int) -> None:
        """Keep the merged rows with the features served, trimmed to ``horizon``."""
        run, rows = placed.run, placed.merged
        rows[placed.at, self.state.layout.served] = served
        self.state.remember(run.ids.tolist(), zip([entities[c] for c in run.codes.tolist()],
                                                  run.times.tolist(), strict=True))
        logs = placed.merged_logs(copy=self._compact)
        self.state.logs.update(zip(entities, logs, strict=True))
        cuts = placed.cuts(horizon)
        for entity, log, cut in zip(entities, logs, cuts, strict=True):
            self.state.drop(entity, log, cut, copy=self._compact)
        self.stats.trimmed += sum(cuts)


class WindowEngine:
    """Window and calendar features of a stream, batch at a time, on in-memory state.

    ``apply(events, labels)`` returns one row per event in ``definition.names`` order as a
    ``dtype`` matrix (float32 by default, the model's input; the served values are kept as
    served, so a duplicate gets them bit for bit). Labels wait for their event up to
    ``pending_labels`` of them. Entities idle beyond every window's horizon are dropped
    whenever the watermark has moved ``sweep_every_ms`` since the last sweep.
    """

    def __init__(self, definition: Definition, *,
                 dtype: type[np.floating[Any]] = np.float32,
                 pending_labels: int = 100_000, sweep_every_ms: int = 86_400_000) -> None:
        self.definition = definition
        self.names = definition.names
        self.groups = tuple(GroupEngine(w) for w in definition.windows)
        self.calendar = Calendar(definition.time_zone, definition.night_hours)
        self.pending = PendingLabels(pending_labels)
        self.label_stats = LabelStats()
        self.watermark: int | None = None
        self._dtype: np.dtype[np.floating] = np.dtype(dtype)
        self._sweep_every = sweep_every_ms
        self._swept: int | None = None

    def apply(self, events: Sequence[Transaction], labels: Iterable[Label] = (), *,
              during: Sequence[tuple[int, Label]] = ()) -> npt.NDArray[np.floating]:
        """Apply ``labels``, then ``events`` in order, each of ``during``'s labels
        ``(arrival, label)`` arriving just before ``events[arrival]`` (arrivals ascending;
        ``len(events)``: after the last); the events' feature rows.

        The labels arriving among the events are placed in one pass when every rate
        group's events make one run and no labelled event arrives both after its label and
        before it (or is kept already); otherwise the events are cut at each label's
        arrival. Either way each event counts exactly the labels that arrived before it,
        as long as the pending labels' bound is not reached within the call."""
        if not any(g.window.uses_labels for g in self.groups):
            during = ()  # as :meth:`_label`: without a rate, labels change nothing
        first = next((m for m, (arrival, _) in enumerate(during) if arrival > 0), len(during))
        self._label([*labels, *(label for _, label in during[:first])])
        during = during[first:]
        out = np.empty((len(events), len(self.names)), self._dtype)
        start = 0
        while True:  # a waiting label goes to its event's first arrival only
            stop = self._repeat(events, start)
            out[start:stop] = self._apply(events[start:stop], [
                (arrival - start, label) for arrival, label in during
                if start < arrival < stop or arrival == stop == len(events)])
            if stop == len(events):
                return out
            self._label([label for arrival, label in during if arrival == stop])
            start = stop

    def _apply(self, events: Sequence[Transaction], during: Sequence[tuple[int, Label]]
               ) -> npt.NDArray[np.floating]:
        """:meth:`apply` of events in which no waiting label meets a second arrival."""
        times = np.fromiter((e.event_time_ms for e in events), np.int64, len(events))
        if during and not self._placeable(events, times, during):
            return self._cut(events, during)
        out = np.empty((len(events), len(self.names)), self._dtype)
        if not len(events):
            return out
        ids = [e.event_id for e in events]
        batch = _Batch(events, times, self._marks(times), ids, self.pending, self._dtype,
                       during=LabelsDuring(during, self.pending) if during else None)
        column = 0
        for group in self.groups:
            width = len(group.window.names)
            out[:, column:column + width] = group.apply(batch)
            column += width
        out[:, column:] = self.calendar(times)
        self.pending.discard(batch.arrived)
        if batch.during is not None:
            self._settle(batch.during)
        self._sweep()
        return out

    def _repeat(self, events: Sequence[Transaction], start: int) -> int:
        """Where, from ``start``, an event repeats the id of an earlier one that has a
        label waiting, and both may be computed (the first beyond the horizon, or the two
        copies under other keys): there a new batch begins, so that only the first takes
        the label. Else ``len(events)``. An exact copy within the horizon is a duplicate."""
        rates = [g.window for g in self.groups if g.window.uses_labels]
        rest = events[start:]
        if not rates or not len(self.pending) or len({e.event_id for e in rest}) == len(rest):
            return len(events)
        reach = min(window.horizon_ms for window in rates)
        mark = self.watermark
        first: dict[str, int] = {}
        for i, event in enumerate(rest, start):
            time = event.event_time_ms
            mark = time if mark is None else max(mark, time)
            copy = events[first.setdefault(event.event_id, i)]
            if first[event.event_id] != i and self.pending.get(event.event_id) is not None and (
                    copy.event_time_ms <= mark - reach
                    or any(getattr(copy, w.key) != getattr(event, w.key) for w in rates)):
                return i
        return len(events)

    def _placeable(self, events: Sequence[Transaction], times: Ints,
                   during: Sequence[tuple[int, Label]]) -> bool:
        """Whether the labels arriving among ``events`` can be placed in one pass."""
        rates = [g for g in self.groups if g.window.uses_labels]
        if not events:
            return False
        ids = [e.event_id for e in events]
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for i, event_id in enumerate(ids):
            first.setdefault(event_id, i)
            last[event_id] = i
        for arrival, label in during:
            x = label.event_id
            if last.get(x, -1) >= arrival and (
                    first[x] != last[x] or first[x] < arrival
                    or any(x in g.state.directory for g in rates)):
                return False
        return all(len(runs([getattr(e, g.window.key) for e in events], times, ids)) <= 1
                   for g in rates)

    def _cut(self, events: Sequence[Transaction], during: Sequence[tuple[int, Label]]
             ) -> npt.NDArray[np.floating]:
        """:meth:`apply` with the events cut at each label's arrival."""
        out = np.empty((len(events), len(self.names)), self._dtype)
        waiting: list[Label] = []
        start = 0
        for arrival, label in during:
            if arrival > start:
                out[start:arrival] = self.apply(events[start:arrival], waiting)
                start, waiting = arrival, []
            waiting.append(label)
        out[start:] = self.apply(events[start:], waiting)
        return out

    def _settle(self, during: LabelsDuring) -> None:
        """Count what became of the labels that arrived among the events; those that met
        no event wait for it."""
        stats, held = self.label_stats, dict(during.held)
        for label, won, taken in zip(during.labels, during.won, during.taken, strict=True):
            if True in won:
                stats.applied += 1
            elif False in won:
                stats.ignored += 1
            elif taken:
                before = held.get(label.event_id) or NO_LABEL
                if label.stamp > before:
                    held[label.event_id] = label.stamp
                    stats.pending += 1
                else:
                    stats.ignored += 1
            elif self.pending.add(label):
                stats.pending += 1
            else:
                stats.ignored += 1
        stats.evicted = self.pending.evicted

    def _marks(self, times: Ints) -> Ints:
        """The watermark as each event arrives: the newest time seen, itself included."""
        marks: Ints = np.maximum.accumulate(times)
        if self.watermark is not None:
            np.maximum(marks, self.watermark, out=marks)
        self.watermark = int(marks[-1])
        return marks

    def _label(self, labels: Sequence[Label]) -> None:
        """Apply ``labels`` in order: to their kept events, else to the pending ones."""
        outcomes = [g.state.label(labels, None if self.watermark is None
                                  else self.watermark - g.window.horizon_ms)
                    for g in self.groups if g.window.uses_labels]
        if not outcomes:
            return
        stats = self.label_stats
        for label, won in zip(labels, zip(*outcomes, strict=True), strict=True):
            if True in won:
                stats.applied += 1
            elif False in won or not self.pending.add(label):
                stats.ignored += 1
            else:
                stats.pending += 1
        stats.evicted = self.pending.evicted

    def _sweep(self) -> None:
        assert self.watermark is not None
        if self._swept is None:
            self._swept = self.watermark
        if self.watermark - self._swept < self._sweep_every:
            return
        self._swept = self.watermark
        for group in self.groups:
            trimmed, expired = group.state.expire(self.watermark - group.window.horizon_ms)
            group.stats.trimmed += trimmed
            group.stats.expired += expired

    def memory(self) -> dict[str, Memory]:
        """Each group's entities, events and bytes of state."""
        return {g.window.name: g.state.memory() for g in self.groups}
