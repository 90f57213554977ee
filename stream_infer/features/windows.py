"""Window aggregates of a run of new events over their entities' logs, vectorized.

The new events of a run are sorted by entity and, within an entity, by arrival, which the
caller guarantees is also their ``(event_time, event_id)`` order (:func:`runs`). They are
merged into the concatenation of their entities' logs, and an entity's events and window
edges become keys ``entity * span + (time - low)``, increasing along the merged rows, so one
``searchsorted`` finds every window. Every event of the merged rows that sorts before a new
event arrived before it (the logs before the run, the run in its order), so each window is
one contiguous range of rows, summed in place in ``(event_time, event_id)`` order: the
values do not depend on how the stream was cut into batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from .definition import Aggregate, Window
from .ranges import differences, prefix, reduce_ranges
from .state import EntityLog, Layout, id_ends, joined_rows, stored_ids

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Indices = npt.NDArray[np.intp]
MAX_KEY = 2**62


def runs(keys: Sequence[str | None], times: Ints, ids: Sequence[str]) -> list[list[int]]:
    """The keyed events (indices, arrival order) cut into consecutive runs in which each
    entity's events arrive in ``(time, id)`` order and no event id repeats; processing the
    runs one after the other is processing the events one at a time."""
    keyed = [i for i, key in enumerate(keys) if key is not None]
    if len(keyed) < 2 or (len(set(ids)) == len(ids) and _in_order(keys, times, ids, keyed)):
        return [keyed] if keyed else []
    found: list[list[int]] = []
    current: list[int] = []
    last: dict[str, tuple[int, str]] = {}
    seen: set[str] = set()
    for i in keyed:
        key, mark = keys[i] or "", (int(times[i]), ids[i])
        previous = last.get(key)
        if ids[i] in seen or (previous is not None and mark <= previous):
            found.append(current)
            current, last, seen = [], {}, set()
        current.append(i)
        last[key] = mark
        seen.add(ids[i])
    return [*found, current]


def _in_order(keys: Sequence[str | None], times: Ints, ids: Sequence[str],
              keyed: list[int]) -> bool:
    """Whether each entity's events of ``keyed`` arrive in strictly increasing
    ``(time, id)`` order: the entities' events side by side (stable), time compared at once,
    ids only where times tie."""
    index: dict[str | None, int] = {}
    codes = np.fromiter((index.setdefault(keys[i], len(index)) for i in keyed), np.int64,
                        len(keyed))
    by_entity = np.argsort(codes, kind="stable")
    order = np.asarray(keyed, np.intp)[by_entity]
    same = np.diff(codes[by_entity]) == 0
    before, after = times[order[:-1]], times[order[1:]]
    if bool(np.any(same & (after < before))):
        return False
    ties = np.flatnonzero(same & (after == before)).tolist()
    return all(ids[order[j]] < ids[order[j + 1]] for j in ties)


@dataclass(frozen=True)
class SearchKeys:
    """The keys ``entity * span + (time - low)`` of the rows of consecutive entities' logs
    (entity: their index), increasing along them, so that one ``searchsorted`` finds any
    entity's time among all of them; every time searched lies in ``[low, low + span)``."""

    low: int
    span: int

    @classmethod
    def spanning(cls, stored: Ints | Floats, new: Ints, earliest: int) -> SearchKeys:
        """Keys for the times of ``stored`` rows, of ``new`` events and down to
        ``earliest``."""
        low = min(earliest, int(stored.min())) if len(stored) else earliest
        latest = int(new.max())
        return cls(low, (max(latest, int(stored.max())) if len(stored) else latest) - low + 1)

    def fits(self, entities: int) -> bool:
        """Whether the keys of ``entities`` entities fit in int64."""
        return entities * self.span <= MAX_KEY

    def of(self, codes: Ints, times: Ints | int) -> Ints:
        """The keys of events (their entity, their time, or one time for all)."""
        keys: Ints = codes * self.span + (times - self.low)
        return keys

    def rows(self, counts: Ints, times: Ints | Floats) -> Ints:
        """The keys of the logs' rows, ``counts`` of them per entity, their ``times``."""
        firsts = np.arange(len(counts), dtype=np.int64) * self.span - self.low
        keys: Ints = np.repeat(firsts, counts) + times.astype(np.int64)
        return keys


@dataclass(frozen=True)
class Flip:
    """A label that arrives among a run's events, for an event its entity keeps: the events
    of the run at ``arrival`` (their index in the batch) or later count it, those before do
    not. Its event is the run's event at batch index ``event``, else row ``row`` of the log
    of entity ``code``. ``label`` numbers it for its outcome."""

    label: int
    arrival: int
    stamp: tuple[float, float]
    code: int
    event: int = -1
    row: int = -1


@dataclass
class Settled:
    """A run's flips checked: the label each flipped row ends with, the fraud flags they
    change (``(flip, merged row, change)``) and which flips won."""

    held: dict[int, tuple[float, float]] = field(default_factory=dict)
    changes: list[tuple[int, int, float]] = field(default_factory=list)
    won: list[tuple[int, bool]] = field(default_factory=list)


@dataclass
class Run:
    """New events of some entities, sorted by (entity code, arrival): ``codes`` index
    ``logs``; ``values`` are the window's fields; ``fraud`` and ``label_times`` the labels
    that arrived before them; ``arrivals`` their indices in the batch; ``flips`` the labels
    that arrive among them for events their entities keep, in arrival order."""

    logs: list[EntityLog]
    codes: Ints
    times: Ints
    ids: npt.NDArray[np.object_]
    values: Floats
    fraud: Floats
    label_times: Floats
    arrivals: Indices
    flips: Sequence[Flip] = ()


class Placed:
    """A run merged into its logs: where each event goes, and the aggregates over any window
    of its events. ``fits`` is False when the keys of all its entities would not fit in
    int64: the caller then places fewer entities at a time."""

    def __init__(self, window: Window, layout: Layout, run: Run) -> None:
        self.window, self.layout, self.run = window, layout, run
        self.counts = np.fromiter((len(log.rows) for log in run.logs), np.int64, len(run.logs))
        self.starts = np.concatenate(([0], np.cumsum(self.counts)))
        self.stored = joined_rows(run.logs, layout.width)
        earliest = int(run.times.min()) - window.delay_ms - window.lengths_ms[-1]
        self.search = SearchKeys.spanning(self.stored[:, Layout.TIME], run.times, earliest)
        self.fits = self.search.fits(len(run.logs))
        self._fields: dict[str, tuple[Floats, Floats, Floats]] = {}

    @cached_property
    def _stored_keys(self) -> Ints:
        """The keys of the logs' rows."""
        return self.search.rows(self.counts, self.stored[:, Layout.TIME])

    @cached_property
    def _new_keys(self) -> Ints:
        """The keys of the new events."""
        return self.search.of(self.run.codes, self.run.times)

    @cached_property
    def positions(self) -> Indices:
        """Each new event's index among the logs' rows: the rows before it, ties in time
        broken by event id."""
        stored, new = self._stored_keys, self._new_keys
        left = np.searchsorted(stored, new, "left")
        right = np.searchsorted(stored, new, "right")
        for j in np.flatnonzero(right > left):
            start = self.starts[self.run.codes[j]]
            log = self.run.logs[self.run.codes[j]]
            left[j] += log.count_before(left[j] - start, right[j] - start, self.run.ids[j])
        return left

    @cached_property
    def _inside(self) -> npt.NDArray[np.bool_]:
        """Whether each new event sorts before an event its entity already had."""
        inside: npt.NDArray[np.bool_] = self.positions < self.starts[self.run.codes + 1]
        return inside

    @property
    def late(self) -> int:
        """How many new events sort before an event their entity already had."""
        return int(np.count_nonzero(self._inside))

    @cached_property
    def at(self) -> Indices:
        """Each new event's index among the merged rows."""
        at: Indices = self.positions + np.arange(len(self.run.times))
        return at

    @cached_property
    def merged(self) -> Floats:
        """The logs' rows with the new events' merged in (their served features NaN)."""
        layout, run = self.layout, self.run
        new = np.full((len(run.times), layout.width), np.nan)
        new[:, Layout.TIME] = run.times
        if self.window.uses_labels:
            new[:, layout.fraud], new[:, layout.label_time] = run.fraud, run.label_times
        new[:, layout.values] = run.values
        rows = np.empty((len(self.stored) + len(new), layout.width))
        rows[self.at] = new
        rows[self._old] = self.stored
        return rows

    @cached_property
    def _old(self) -> npt.NDArray[np.bool_]:
        old = np.ones(len(self.stored) + len(self.run.times), bool)
        old[self.at] = False
        return old

    def merged_logs(self, *, copy: bool) -> list[EntityLog]:
        """Each entity's log after the run: its rows of :attr:`merged` (copies with
        ``copy``, else views) and its ids as stored, none decoded: the run's appended to
        those of an entity whose new events all sort after its rows, else inserted by
        position."""
        run, merged = self.run, self.merged
        bounds = self.bounds.tolist()
        firsts = np.concatenate(([0], np.cumsum(self._added))).tolist()
        added = _Stored(run.ids)
        stored = [log.stored() + added.between(first, last)
                  for log, first, last in zip(run.logs, firsts, firsts[1:], strict=False)]
        for code in np.unique(run.codes[self._inside]).tolist():
            first, last, start = firsts[code], firsts[code + 1], self.starts[code]
            stored[code] = run.logs[code].stored_with(
                (self.positions[first:last] - start).tolist(), added.pieces(first, last))
        if copy:
            return [EntityLog(merged[start:stop].copy(), stored=ids)
                    for start, stop, ids in zip(bounds, bounds[1:], stored, strict=False)]
        return [EntityLog(merged[start:stop], stored=ids, at=start)
                for start, stop, ids in zip(bounds, bounds[1:], stored, strict=False)]

    @cached_property
    def _added(self) -> Ints:
        """Each entity's new events."""
        added: Ints = np.bincount(self.run.codes, minlength=len(self.run.logs))
        return added

    @cached_property
    def bounds(self) -> Ints:
        """Where each entity's merged rows begin, then their number."""
        bounds: Ints = np.concatenate(([0], np.cumsum(self.counts + self._added)))
        return bounds

    def cuts(self, horizon: int) -> list[int]:
        """Per entity, how many of its merged rows are at or before ``horizon``: one search
        of the keys per entity (every row's time lies in ``[low, low + span)``)."""
        low, span = self.search.low, self.search.span
        edge = min(max(horizon, low - 1), low + span - 1)
        codes = np.arange(len(self.run.logs), dtype=np.int64)
        ends = np.searchsorted(self._keys, self.search.of(codes, edge), "right")
        cuts: list[int] = (ends - self.bounds[:-1]).tolist()
        return cuts

    @cached_property
    def _keys(self) -> Ints:
        """The keys of the merged rows: the logs' and the new events', placed as
        :attr:`merged` places their rows."""
        keys = np.empty(len(self._old), np.int64)
        keys[self.at] = self._new_keys
        keys[self._old] = self._stored_keys
        return keys

    def ranges(self, length: int) -> tuple[Indices, Indices]:
        """The window of ``length`` of every new event, ``[lo, hi)`` in the merged rows:
        ``(t - length, t]`` up to the event itself, or ``(t - delay - length, t - delay]``."""
        times, delay, codes = self.run.times, self.window.delay_ms, self.run.codes
        key = self.search.of
        lo = np.searchsorted(self._keys, key(codes, times - delay - length), "right")
        if delay == 0:
            return lo, self.at + 1
        return lo, np.searchsorted(self._keys, key(codes, times - delay), "right")

    def aggregate(self, aggregate: Aggregate, lo: Indices, hi: Indices) -> Floats:
        """One aggregate over every new event's window."""
        count = (hi - lo).astype(np.float64)
        if aggregate.kind == "count":
            return count
        if aggregate.kind == "rate":
            frauds = differences(self._frauds, lo, hi) + self._flipped(lo, hi)
            rate: Floats = np.divide(frauds, count, out=np.zeros_like(count), where=count > 0)
            return rate
        assert aggregate.field is not None
        values, zeroed, present = self._field(aggregate.field)
        if aggregate.kind in ("min", "max"):
            return reduce_ranges(np.fmin if aggregate.kind == "min" else np.fmax, values,
                                 lo, hi, np.nan)
        sums = reduce_ranges(np.add, zeroed, lo, hi, 0.0)
        if aggregate.kind == "sum":
            return sums
        number = differences(present, lo, hi)
        mean: Floats = np.divide(sums, number, out=np.full_like(sums, np.nan), where=number > 0)
        return mean

    @cached_property
    def _frauds(self) -> Floats:
        return prefix(self.merged[:, self.layout.fraud])

    @cached_property
    def _settled(self) -> Settled:
        """The run's flips checked in order against the label their event holds at that
        point, as a label is (:meth:`GroupState.label`)."""
        fraud, when = self.layout.fraud, self.layout.label_time
        settled = Settled()
        for at, (flip, row) in enumerate(zip(self.run.flips, self._rows(), strict=True)):
            held = settled.held.get(row, (float(self.merged[row, when]),
                                          float(self.merged[row, fraud])))
            won = flip.stamp > held
            settled.won.append((flip.label, won))
            if won:
                settled.held[row] = flip.stamp
                if flip.stamp[1] != held[1]:
                    settled.changes.append((at, row, flip.stamp[1] - held[1]))
        return settled

    def _rows(self) -> list[int]:
        """The merged row of each flip's event."""
        flips, run = self.run.flips, self.run
        events = np.array([flip.event for flip in flips], np.intp)
        rows = np.empty(len(flips), np.intp)
        new = events >= 0
        if new.any():
            order = np.argsort(run.arrivals, kind="stable")
            rows[new] = self.at[order[np.searchsorted(run.arrivals[order], events[new])]]
        if not new.all():
            kept = np.array([self.starts[f.code] + f.row for f in flips if f.event < 0], np.intp)
            rows[~new] = np.flatnonzero(self._old)[kept]
        found: list[int] = rows.tolist()
        return found

    def _flipped(self, lo: Indices, hi: Indices) -> Floats:
        """How the flips change the frauds counted in each new event's ``[lo, hi)``: only
        an event of the flip's entity, at or after its arrival, whose window holds its
        row."""
        change = np.zeros(len(lo))
        codes, arrivals = self.run.codes, self.run.arrivals
        for at, row, delta in self._settled.changes:
            flip = self.run.flips[at]
            first, last = np.searchsorted(codes, [flip.code, flip.code + 1]).tolist()
            sees = ((arrivals[first:last] >= flip.arrival) & (lo[first:last] <= row)
                    & (row < hi[first:last]))
            change[first:last] += delta * sees
        return change

    def settle(self) -> list[tuple[int, bool]]:
        """Leave on the merged rows the labels the flips leave on their events (after
        :meth:`rows`); which flips won (by their ``label``)."""
        settled = self._settled
        for row, (label_time, fraud) in settled.held.items():
            self.merged[row, self.layout.label_time] = label_time
            self.merged[row, self.layout.fraud] = fraud
        return settled.won

    def _field(self, field: str) -> tuple[Floats, Floats, Floats]:
        """A field's values, the same with NaN as 0, and the running count of values."""
        if field not in self._fields:
            at = self.layout.values.start + self.window.fields.index(field)
            values = self.merged[:, at]
            missing = np.isnan(values)
            self._fields[field] = values, np.where(missing, 0.0, values), prefix(~missing)
        return self._fields[field]

    def rows(self) -> Floats:
        """Every window feature of every new event (run order), in the window's name order."""
        columns = [self.aggregate(aggregate, *window)
                   for window in map(self.ranges, self.window.lengths_ms)
                   for aggregate in self.window.aggregates]
        return np.column_stack(columns) if columns else np.empty((len(self.run.times), 0))


class _Stored:
    """A run's ids as stored, one piece per event."""

    def __init__(self, ids: npt.NDArray[np.object_]) -> None:
        self.stored = memoryview(stored_ids(ids))
        self.at: list[int] = [0, *id_ends(self.stored).tolist()]

    def between(self, first: int, last: int) -> memoryview:
        return self.stored[self.at[first]:self.at[last]]

    def pieces(self, first: int, last: int) -> list[memoryview]:
        at, stored = self.at, self.stored
        return [stored[at[i]:at[i + 1]] for i in range(first, last)]
