"""An independent reference of the window semantics (issue 23): one arrival at a time,
every window found by scanning every kept event, no state trimmed.

It shares nothing with ``stream_infer.features`` but the settings it is given; the
calendar comes from pandas. Slow and obviously right, which is the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from stream_infer.config import CalendarSettings, WindowGroup, duration_ms
from stream_infer.records import Transaction

NAN = float("nan")


@dataclass
class Kept:
    entity: str
    time: int
    event_id: str
    event: Transaction
    served: list[float]
    stamp: tuple[float, int] = (-math.inf, 0)


@dataclass
class Group:
    name: str
    key: str
    lengths: list[int]
    delay: int
    lateness: int
    aggregates: list[str]
    kept: dict[str, Kept] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return self.lateness + self.delay + max(self.lengths)

    @property
    def labelled(self) -> bool:
        return "rate:label" in self.aggregates


def length_name(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def value(event: Transaction, name: str) -> float:
    if name == "amount":
        return event.amount
    return event.attributes.get(name.removeprefix("attributes."), NAN)


class Reference:
    def __init__(self, windows: dict[str, WindowGroup],
                 calendar: CalendarSettings | None = None) -> None:
        self.groups = [Group(n, w.key, [duration_ms(x) for x in w.lengths],
                             duration_ms(w.delay), duration_ms(w.allowed_lateness),
                             list(w.aggregates)) for n, w in sorted(windows.items())]
        self.calendar = calendar or CalendarSettings()
        self.watermark: int | None = None
        self.pending: dict[str, tuple[float, int]] = {}

    def names(self) -> list[str]:
        names = []
        for g in self.groups:
            for length in sorted(g.lengths):
                for a in g.aggregates:
                    kind, _, what = a.partition(":")
                    token = kind if not what else f"{kind}_{what.removeprefix('attributes.')}"
                    names.append(f"{g.name}.{token}_{length_name(length)}")
        return [*names, "event.hour", "event.weekday", "event.is_weekend", "event.is_night"]

    def apply(self, events: list[Transaction], labels: list[tuple[str, int, int]]
              ) -> list[list[float]]:
        for event_id, label, label_time in labels:
            self.label(event_id, (float(label_time), label))
        return [self.event(e) for e in events]

    def label(self, event_id: str, stamp: tuple[float, int]) -> None:
        """Applied to its kept event; one not kept, or kept at or before the horizon (no
        window reads it again), waits for its event as one not yet seen (README)."""
        holders = [g.kept[event_id] for g in self.groups if g.labelled and event_id in g.kept
                   and self.watermark is not None
                   and g.kept[event_id].time > self.watermark - g.horizon]
        for kept in holders:
            kept.stamp = max(kept.stamp, stamp)
        if not holders and any(g.labelled for g in self.groups):
            self.pending[event_id] = max(self.pending.get(event_id, (-math.inf, 0)), stamp)

    def event(self, event: Transaction) -> list[float]:
        t = event.event_time_ms
        self.watermark = t if self.watermark is None else max(self.watermark, t)
        row: list[float] = []
        taken = False
        for g in self.groups:
            before = g.kept.get(event.event_id)
            row += self.group_features(g, event, t)
            taken |= g.labelled and g.kept.get(event.event_id) is not before
        if taken:  # kept now, with the waiting label
            self.pending.pop(event.event_id, None)
        return row + self.calendar_features(t)

    def group_features(self, g: Group, event: Transaction, t: int) -> list[float]:
        width = len(g.lengths) * len(g.aggregates)
        entity = getattr(event, g.key)
        assert self.watermark is not None
        if entity is None:
            return [NAN] * width
        old = g.kept.get(event.event_id)
        if old is not None and old.time > self.watermark - g.horizon:
            return old.served
        if t < self.watermark - g.lateness:
            return [NAN] * width
        mine = [k for k in g.kept.values() if k.entity == entity]
        served = []
        for length in sorted(g.lengths):
            if g.delay == 0:
                window = [k for k in mine if t - length < k.time <= t
                          and (k.time, k.event_id) < (t, event.event_id)]
                window.append(Kept(entity, t, event.event_id, event, []))
            else:
                window = [k for k in mine if t - g.delay - length < k.time <= t - g.delay]
            served += [aggregate(a, window) for a in g.aggregates]
        stamp = self.pending.get(event.event_id, (-math.inf, 0)) if g.labelled else (-math.inf, 0)
        g.kept[event.event_id] = Kept(entity, t, event.event_id, event, served, stamp)
        return served

    def calendar_features(self, t: int) -> list[float]:
        local = pd.Timestamp(t, unit="ms", tz="UTC").tz_convert(self.calendar.time_zone)
        first, last = self.calendar.night_hours
        hour, weekday = local.hour, local.day_of_week
        night = first <= hour <= last if first <= last else (hour >= first or hour <= last)
        return [hour, weekday, float(weekday >= 5), float(night)]


def aggregate(spec: str, window: list[Kept]) -> float:
    kind, _, name = spec.partition(":")
    if kind == "count":
        return float(len(window))
    if kind == "rate":
        frauds = sum(1 for k in window if k.stamp[1] == 1)
        return frauds / len(window) if window else 0.0
    values = [v for k in window if not math.isnan(v := value(k.event, name))]
    if kind == "sum":
        return math.fsum(values)
    if not values:
        return NAN
    if kind == "mean":
        return math.fsum(values) / len(values)
    return min(values) if kind == "min" else max(values)
