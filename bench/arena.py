"""What the window engine could gain from columnar state: a probe, not the engine.

Issue 23's target needs the window engine at about 2-3 us of CPU per event for both groups
(docs/BENCHMARKS.md, "How far from the target"); :class:`WindowEngine` takes 12-17 on
short logs and more on long ones, most of it Python per entity: each touched entity's log
is merged into the batch and stored back as an object of its own. This probe keeps a
group's state as one set of arrays instead (an arena): each entity owns a segment of it
with room to grow, a batch's events are appended in place (a segment that would overflow
moves to the arena's end, twice its size), and every window of every event of the batch is
found by one ``searchsorted`` per length over keys ``segment * SPAN + time``, as
``features.windows`` does over merged logs. Sums run in row order (``reduceat``), so the
values are the engine's bit for bit; fraud counts come from a running count of each
segment's labelled rows, kept as labels arrive.

It handles what the reference streams need, and refuses the rest: each entity's events
arrive in time order with distinct times and ids, labels arrive for kept events before a
batch's events, and the aggregates are ``count``, ``mean`` and ``rate``. Late events,
ties, duplicates, pending labels, labels among a batch's events, idle expiry, compaction
and Redis are not there. So its figures are a floor for a columnar engine, not a design
ready to ship.

Measured on the same batches, in alternating turns, under the service's garbage
collection, each pass on fresh state (CPU per event, this process):

- ``engine``: :class:`WindowEngine` (float64), the window columns of its rows;
- ``arena``: the probe, with entity codes looked up in a dict and a directory of kept
  events per group (what the engine keeps to find a label's or a duplicate's event);
- ``floor``: the probe's numpy part alone: the events' fields and entity codes taken out
  before the timer, no directory but the rate group's;
- ``compiled``: the same probe in C (``arena_probe.c``, built with the system's C
  compiler into ``bench/.cache``): the events taken one at a time, each window found by
  binary search in its entity's segment, sums added in the order numpy's ``reduceat``
  adds them, entity codes and a directory per group in the C code's hash tables over the
  keys and ids as UTF-8 bytes (no Python object kept per entity or row);
- ``compiled_core``: ``compiled`` with the events' fields taken out before the timer.

Every pass must give the engine's values bit for bit, or the probe exits non-zero. The
workload is ``bench/windows.py``'s (the issue's windows, Handbook-like streams):

    python bench/arena.py --json
    python bench/arena.py --terminals 997 --customers 50000 --events 600000 \\
        --days 7 --batch 2000 --json       # long logs: ~600 kept rows per terminal
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import platform
import subprocess
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
from windows import GROUPS, Batch, report, workload, workload_arguments

from stream_infer.features import WindowEngine, define
from stream_infer.features.definition import Definition, Window
from stream_infer.features.labels import Label
from stream_infer.service.gc_tuning import steady_state_gc

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
SPAN = 1 << 34
"""Milliseconds one segment's keys span (about 198 days): times minus ``low`` stay below."""
FREE = np.iinfo(np.int64).max // 2
"""The key of a slot no segment was ever given."""


class ArenaGroup:
    """One group's state: per entity code ``alloc`` (its segment's first slot), ``start``
    (its first kept row), ``length`` and ``cap``; per slot the key, time, values, label
    stamp, running fraud count (``frauds``: the segment's labelled rows up to this slot)
    and the features served. A slot past a segment's rows holds its segment's largest key,
    so keys never decrease along the arena; the slots a segment moved from keep theirs,
    which no search reaches again."""

    def __init__(self, window: Window, slots: int = 1 << 16, entities: int = 1024) -> None:
        self.window = window
        self.alloc, self.start, self.length, self.cap = (np.zeros(entities, np.int64)
                                                         for _ in range(4))
        self.keys = np.full(slots, FREE, np.int64)
        self.times = np.zeros(slots, np.int64)
        self.values = np.zeros((slots, len(window.fields)))
        self.fraud, self.frauds = np.zeros(slots), np.zeros(slots)
        self.label_time = np.full(slots, -np.inf)
        self.served = np.full((slots, len(window.names)), np.nan)
        self.ids = np.empty(slots, object)
        self.top = 0
        self.low: int | None = None

    def label(self, code: int, time: int, event_id: str, stamp: tuple[float, float]) -> bool:
        """Apply a label to its event's row; whether it won."""
        s, n = int(self.start[code]), int(self.length[code])
        j = s + int(np.searchsorted(self.times[s:s + n], time, "left"))
        if j >= s + n or self.ids[j] != event_id:
            raise SystemExit(f"probe: a label for {event_id!r}, not kept: unsupported")
        if stamp <= (self.label_time[j], self.fraud[j]):
            return False
        change = stamp[1] - self.fraud[j]
        self.label_time[j], self.fraud[j] = stamp
        self.frauds[j:s + n] += change
        return True

    def apply(self, codes: Ints, times: Ints, ids: list[str], values: Floats,
              mark: int) -> Floats:
        """Keep the batch's events and compute their window features (the window's names)."""
        window = self.window
        if self.low is None:
            self.low = int(times.min()) - window.horizon_ms - 1
        if int(times.max()) - self.low >= SPAN - 1:
            raise SystemExit("probe: a stream longer than its key span: unsupported")
        self._entities(int(codes.max()) + 1)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        firsts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        touched, added = sorted_codes[firsts], np.diff(np.r_[firsts, len(codes)])
        self._check_order(sorted_codes, times[order], firsts, touched)
        self._trim(touched, mark - window.horizon_ms)
        self._make_room(touched, added)
        rank = np.arange(len(codes)) - np.repeat(firsts, added)
        last = self.start[sorted_codes] + self.length[sorted_codes] - 1
        into = np.empty_like(codes)
        into[order] = last + 1 + rank
        self.frauds[into[order]] = np.where(last >= self.alloc[sorted_codes],
                                            self.frauds[np.maximum(last, 0)], 0.0)
        self.times[into], self.values[into], self.ids[into] = times, values, ids
        self.keys[into] = self.alloc[codes] * SPAN + (times - self.low)
        self.fraud[into], self.label_time[into] = 0.0, -np.inf
        self.length[touched] += added
        out = self._features(codes, times, into)
        self.served[into] = out
        return out

    def _features(self, codes: Ints, times: Ints, into: Ints) -> Floats:
        window = self.window
        assert self.low is not None
        at = self.alloc[codes] * SPAN + (times - self.low)
        by_key = np.argsort(at, kind="stable")
        queries = at[by_key]

        def after(shift: int) -> Ints:  # sorted queries: each search starts at the last
            found = np.empty(len(queries), np.int64)
            found[by_key] = np.searchsorted(self.keys, queries - shift, "right")
            return found

        columns: list[Floats] = []
        for length in window.lengths_ms:
            lo = after(window.delay_ms + length)
            hi = into + 1 if window.delay_ms == 0 else after(window.delay_ms)
            count = (hi - lo).astype(np.float64)
            for aggregate in window.aggregates:
                if aggregate.kind == "count":
                    columns.append(count)
                elif aggregate.kind == "rate":
                    before = np.where(lo > self.alloc[codes], self.frauds[lo - 1], 0.0)
                    frauds = np.where(hi > lo, self.frauds[hi - 1] - before, 0.0)
                    columns.append(np.divide(frauds, count, out=np.zeros_like(count),
                                             where=count > 0))
                elif aggregate.kind == "mean":
                    assert aggregate.field is not None
                    sums = self._sums(window.fields.index(aggregate.field), lo, hi)
                    columns.append(np.divide(sums, count, out=np.full_like(sums, np.nan),
                                             where=count > 0))
                else:
                    raise SystemExit(f"probe: aggregate {aggregate.kind}: unsupported")
        return np.column_stack(columns)

    def _sums(self, column: int, lo: Ints, hi: Ints) -> Floats:
        """Each ``[lo, hi)``'s values added in row order, the ranges taken by ``lo`` so that
        the gaps ``reduceat`` also adds stay within the arena once."""
        by_lo = np.argsort(lo, kind="stable")
        bounds = np.empty(2 * len(lo), np.intp)
        bounds[0::2], bounds[1::2] = lo[by_lo], hi[by_lo]
        sums = np.empty(len(lo))
        sums[by_lo] = np.add.reduceat(self.values[:self.top + 1, column], bounds)[0::2]
        sums[hi <= lo] = 0.0
        return sums

    def _check_order(self, sorted_codes: Ints, sorted_times: Ints, firsts: Ints,
                     touched: Ints) -> None:
        same = sorted_codes[1:] == sorted_codes[:-1]
        kept = self.length[touched] > 0
        newest = self.times[np.maximum(self.start[touched] + self.length[touched] - 1, 0)]
        if (np.any(same & (sorted_times[1:] <= sorted_times[:-1]))
                or np.any(kept & (sorted_times[firsts] <= newest))):
            raise SystemExit("probe: an entity's events out of time order, or tied: "
                             "unsupported")

    def _trim(self, touched: Ints, horizon: int) -> None:
        """Rows at or before ``horizon`` leave the touched segments (their slots stay)."""
        assert self.low is not None
        start, length = self.start[touched], self.length[touched]
        ends = np.searchsorted(self.keys, self.alloc[touched] * SPAN + max(horizon - self.low,
                                                                            -1), "right")
        kept_from = np.clip(ends, start, start + length)
        self.start[touched], self.length[touched] = kept_from, start + length - kept_from

    def _make_room(self, touched: Ints, added: Ints) -> None:
        """Move each segment that ``added`` rows would overflow to the arena's end, with
        room for twice its rows."""
        full = self.start[touched] + self.length[touched] + added > (self.alloc[touched]
                                                                     + self.cap[touched])
        moving, more = touched[full], added[full]
        if not len(moving):
            return
        rows, caps = self.length[moving], np.maximum(2 * (self.length[moving] + more), 4)
        self._slots(int(caps.sum()))
        alloc = self.top + np.r_[0, np.cumsum(caps)[:-1]]
        self.top += int(caps.sum())
        segment, within = spread(rows)
        source, target = self.start[moving][segment] + within, alloc[segment] + within
        for column in (self.times, self.values, self.fraud, self.label_time, self.served,
                       self.ids):
            column[target] = column[source]
        running = np.cumsum(self.fraud[target])
        self.frauds[target] = running - np.repeat(np.r_[0.0, running][np.cumsum(rows) - rows],
                                                  rows)
        assert self.low is not None
        self.keys[target] = alloc[segment] * SPAN + (self.times[target] - self.low)
        spare, offset = spread(caps - rows)
        self.keys[alloc[spare] + rows[spare] + offset] = alloc[spare] * SPAN + SPAN - 1
        self.alloc[moving], self.start[moving], self.cap[moving] = alloc, alloc, caps

    def _slots(self, needed: int) -> None:
        """Room for ``needed`` more slots past ``top``, and one spare (``reduceat``'s end)."""
        size = len(self.keys)
        if self.top + needed < size:
            return
        grown = max(2 * size, self.top + needed + 1)
        for name, fill in (("keys", FREE), ("times", 0), ("values", 0.0), ("fraud", 0.0),
                           ("frauds", 0.0), ("label_time", -np.inf), ("served", np.nan),
                           ("ids", None)):
            old = getattr(self, name)
            new = np.full((grown, *old.shape[1:]), fill, old.dtype)
            new[:size] = old
            setattr(self, name, new)

    def _entities(self, count: int) -> None:
        while count > len(self.alloc):
            for name in ("alloc", "start", "length", "cap"):
                old = getattr(self, name)
                setattr(self, name, np.r_[old, np.zeros_like(old)])


def spread(counts: Ints) -> tuple[Ints, Ints]:
    """For ``counts[k]`` items of each segment ``k``: each item's segment and its index in
    it."""
    segment = np.repeat(np.arange(len(counts)), counts)
    return segment, np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts,
                                                             counts)


class ArenaWindows:
    """The probe over a definition's groups: entity codes and a directory of kept events
    per group (``directories``: every group, as the engine keeps; else the rate groups
    only), labels applied before each batch's events."""

    def __init__(self, definition: Definition, *, directories: bool = True) -> None:
        self.groups = [ArenaGroup(window) for window in definition.windows]
        self.codes: list[dict[str, int]] = [{} for _ in self.groups]
        self.directory: list[dict[str, tuple[int, int]] | None] = [
            {} if directories or g.window.uses_labels else None for g in self.groups]
        self.mark: int | None = None

    def label(self, labels: Sequence[Label]) -> None:
        if labels and self.mark is None:
            raise SystemExit("probe: labels before any event: unsupported")
        for group, directory in zip(self.groups, self.directory, strict=True):
            if not group.window.uses_labels:
                continue
            assert directory is not None
            for label in labels:
                if label.event_id not in directory:
                    raise SystemExit("probe: a label before its event: unsupported")
                code, time = directory[label.event_id]
                if time > self.mark - group.window.horizon_ms:  # type: ignore[operator]
                    group.label(code, time, label.event_id, label.stamp)

    def apply(self, events: Sequence[Any], labels: Sequence[Label]) -> Floats:
        return self.run(self.fields(events), labels)

    def fields(self, events: Sequence[Any]) -> tuple[Any, ...]:
        """What the probe reads of a batch: times, ids, and per group the values its
        aggregates read and the events' entity codes (new entities numbered here)."""
        return (np.fromiter((e.event_time_ms for e in events), np.int64, len(events)),
                [e.event_id for e in events],
                [(np.array([[e.amount] for e in events]) if g.window.fields
                  else np.empty((len(events), 0))) for g in self.groups],
                [np.fromiter((index.setdefault(getattr(e, g.window.key), len(index))
                              for e in events), np.int64, len(events))
                 for g, index in zip(self.groups, self.codes, strict=True)])

    def run(self, batch: tuple[Any, ...], labels: Sequence[Label]) -> Floats:
        """:meth:`apply` of a batch's :meth:`fields`."""
        times, ids, fields, codes = batch
        self.label(labels)
        self.mark = max(self.mark or 0, int(times.max()))
        out = []
        for group, values, code, directory in zip(self.groups, fields, codes, self.directory,
                                                  strict=True):
            out.append(group.apply(code, times, ids, values, self.mark))
            if directory is not None:
                directory.update(zip(ids, zip(code.tolist(), times.tolist(), strict=True),
                                     strict=True))
        return np.hstack(out)


def stamped(labels: Sequence[Label]) -> tuple[list[str], bytes]:
    """Labels as ``arena_probe.c`` reads them: their event ids, and their stamps
    ``(label_time, label)`` as float64 pairs."""
    return ([label.event_id for label in labels],
            np.array([label.stamp for label in labels], np.float64).tobytes())


KINDS = {"count": 0, "mean": 1, "rate": 2}
"""The aggregates ``arena_probe.c`` computes, by its codes."""


def compiled_probe() -> ModuleType:
    """``arena_probe.c`` built with the system's C compiler into ``bench/.cache`` (once per
    version of the source), and imported."""
    source = Path(__file__).with_name("arena_probe.c")
    cache = Path(__file__).parent / ".cache"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    built = cache / f"arena_probe-{digest}{suffix}"
    if not built.exists():
        cache.mkdir(exist_ok=True)
        subprocess.run([sysconfig.get_config_var("CC").split()[0], "-O2", "-shared", "-fPIC",
                        f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(built)],
                       check=True)
    spec = importlib.util.spec_from_file_location("arena_probe", built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CompiledWindows:
    """The probe in C (``arena_probe.c``): each batch's events one at a time; entity codes
    and the directory of kept events (every group) in hash tables of the C code, over the
    keys and ids as UTF-8 bytes, with no Python object kept per entity or row."""

    def __init__(self, definition: Definition, probe: ModuleType) -> None:
        self.windows = definition.windows
        for window in self.windows:
            if len(window.fields) > 1 or any(a.kind not in KINDS for a in window.aggregates):
                raise SystemExit("probe: more than one field, or an aggregate it lacks")
        self.groups = [probe.Group(w.delay_ms, w.horizon_ms, tuple(w.lengths_ms),
                                   tuple(KINDS[a.kind] for a in w.aggregates), w.uses_labels)
                       for w in self.windows]

    def apply(self, events: Sequence[Any], labels: Sequence[Label]) -> Floats:
        return self.run(self.fields(events), labels)

    def fields(self, events: Sequence[Any]) -> tuple[Any, ...]:
        """What the C code reads of a batch: times, ids, and per group keys and values."""
        amounts = np.fromiter((e.amount for e in events), np.float64, len(events))
        return (np.fromiter((e.event_time_ms for e in events), np.int64, len(events)),
                [e.event_id for e in events],
                [([getattr(e, w.key) for e in events],
                  amounts if w.fields else np.zeros(len(events))) for w in self.windows])

    def run(self, fields: tuple[Any, ...], labels: Sequence[Label],
            entries: list[bytes] | None = None) -> Floats:
        """:meth:`apply` of a batch's :meth:`fields`; with ``entries``, each group's entry
        of the batch is appended to it (``arena_probe.c`` describes an entry)."""
        times, ids, groups = fields
        label_ids, stamps = stamped(labels)
        parts = []
        for group, window, (keys, values) in zip(self.groups, self.windows, groups,
                                                 strict=True):
            part = np.empty((len(ids), len(window.names)))
            try:
                entry = group.apply(label_ids, stamps, keys, times, ids, values, part,
                                    entries is not None)
            except ValueError as error:
                raise SystemExit(f"probe: {error}") from None
            if entries is not None:
                entries.append(entry)
            parts.append(part)
        return np.hstack(parts)

    def replay(self, g: int, entry: bytes, out: Floats | None = None) -> None:
        """Keep in group ``g`` a batch of its log: its labels, then its rows, with the
        features they were served (an entry of results, as :meth:`run` writes) or with
        their features computed (an entry of inputs); those features into ``out``, if
        given."""
        try:
            self.groups[g].replay(entry, *([] if out is None else [out]))
        except ValueError as error:
            raise SystemExit(f"probe: {error}") from None


def timed(run: Callable[[], list[Floats]]) -> tuple[Floats, float]:
    cpu = time.process_time()
    rows = run()
    return np.vstack(rows), time.process_time() - cpu


def setup(args: argparse.Namespace) -> tuple[Definition, int, list[Batch], dict[str, Any]]:
    """The issue's windows, how many window features they give, the workload's batches,
    and what a result reports of the workload and the machine (its load as this starts)."""
    definition = define(GROUPS)
    described = {
        "events": args.events, "days": args.days, "batch": args.batch,
        "customers": args.customers, "terminals": args.terminals,
        "machine": f"{os.cpu_count()} cores {platform.machine()} python "
                   f"{platform.python_version()}",
        "load_average_before": round(os.getloadavg()[0], 2)}
    return (definition, sum(len(w.names) for w in definition.windows),
            workload(args.events, args.days, args.customers, args.terminals, args.batch,
                     args.fraud), described)


def main() -> None:
    parser = argparse.ArgumentParser()
    workload_arguments(parser)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    definition, width, batches, result = setup(args)
    figures: dict[str, list[float]] = {name: [] for name in (
        "engine", "arena", "floor", "compiled", "compiled_core")}
    probe = compiled_probe()
    with steady_state_gc():
        for _ in range(args.turns):
            engine = WindowEngine(definition, dtype=np.float64)
            want, cpu = timed(lambda: [engine.apply(*b)[:, :width] for b in batches])  # noqa: B023
            figures["engine"].append(cpu)
            arena = ArenaWindows(definition)
            got, cpu = timed(lambda: [arena.apply(*b) for b in batches])  # noqa: B023
            figures["arena"].append(cpu)
            floor = ArenaWindows(definition, directories=False)
            prepared = [(floor.fields(events), labels) for events, labels in batches]
            bare, cpu = timed(lambda: [floor.run(*b) for b in prepared])  # noqa: B023
            figures["floor"].append(cpu)
            compiled = CompiledWindows(definition, probe)
            built, cpu = timed(lambda: [compiled.apply(*b) for b in batches])  # noqa: B023
            figures["compiled"].append(cpu)
            core = CompiledWindows(definition, probe)
            fields = [(core.fields(events), labels) for events, labels in batches]
            inner, cpu = timed(lambda: [core.run(*b) for b in fields])  # noqa: B023
            figures["compiled_core"].append(cpu)
            for name, rows in (("arena", got), ("floor", bare), ("compiled", built),
                               ("compiled_core", inner)):
                if not np.array_equal(rows, want, equal_nan=True):
                    raise SystemExit(f"probe: the {name} pass differs from the engine")
    us = {name: [round(c / args.events * 1e6, 1) for c in cpus]
          for name, cpus in figures.items()}
    rates = [i for i, name in enumerate(n for w in definition.windows for n in w.names)
             if ".rate_" in name]
    result |= {
        "cpu_us_per_event": us,
        "engine_over_arena": [round(e / a, 2) for e, a in zip(us["engine"], us["arena"],
                                                               strict=True)],
        "bit_identical": True,
        "events_with_a_fraud_rate": int(np.count_nonzero(want[:, rates] > 0)),
        "arena_slots_per_kept_row": {g.window.name: round(g.top / int(g.length.sum()), 2)
                                     for g in arena.groups},
        "compiled_slots_per_kept_row": {w.name: round(g.slots[0] / g.slots[1], 2)
                                        for w, g in zip(compiled.windows, compiled.groups,
                                                        strict=True)}}
    report(result, args.json)


if __name__ == "__main__":
    main()
