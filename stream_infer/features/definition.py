"""One feature definition: the ``[windows.*]`` and ``[calendar]`` settings compiled into
windows, their feature names in a stable order, and the versioned prefix of their state.

Names follow the feature scheme of the rest of the service, ``<group>.<aggregate>_<length>``
(``customer.count_7d``, ``customer.mean_amount_30d``, ``terminal.rate_label_1d``), then the
calendar's ``event.hour``, ``event.weekday``, ``event.is_weekend``, ``event.is_night``.
Groups come in name order, each group's lengths shortest first and, per length, its
aggregates in their configured order. Lengths are named in their largest whole unit
(``"24h"`` is named ``1d``).

A group's state lives under ``win<STATE_FORMAT>:<group>:<version>``, the version being a
short hash of the group's canonical definition: a changed definition (or state format)
starts fresh beside the old one, which expires on its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import CalendarSettings, Settings, WindowGroup, duration_ms

STATE_FORMAT = 3
"""Bumped whenever the layout of the window state changes."""
CALENDAR_NAMES = ("event.hour", "event.weekday", "event.is_weekend", "event.is_night")
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1))


def duration_name(ms: int) -> str:
    """``ms`` in its largest whole unit: 86_400_000 -> ``"1d"``, 5_400_000 -> ``"90m"``."""
    unit, size = next((u, s) for u, s in _UNITS if ms % s == 0)
    return f"{ms // size}{unit}"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``kind`` (count, sum, mean, min, max, rate) of ``field`` (``amount``,
    ``attributes.<name>``, ``label``; None for count)."""

    kind: str
    field: str | None

    @classmethod
    def parse(cls, text: str) -> Aggregate:
        kind, _, name = text.partition(":")
        return cls(kind, name or None)

    @property
    def token(self) -> str:
        """The aggregate's part of a feature name: ``count``, ``mean_amount``."""
        if self.field is None:
            return self.kind
        return f"{self.kind}_{self.field.removeprefix('attributes.')}"


@dataclass(frozen=True)
class Window:
    """One window group, compiled: the entity ``key``, its lengths (ascending, ms), the delay
    and allowed lateness (ms) and the aggregates, with everything derived from them."""

    name: str
    key: str
    lengths_ms: tuple[int, ...]
    delay_ms: int
    lateness_ms: int
    aggregates: tuple[Aggregate, ...]
    fields: tuple[str, ...] = field(init=False)
    """The event values the state keeps, in first-use order (``amount``, ``attributes.x``)."""
    uses_labels: bool = field(init=False)
    names: tuple[str, ...] = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        fields = dict.fromkeys(a.field for a in self.aggregates
                               if a.field is not None and a.kind != "rate")
        names = tuple(f"{self.name}.{a.token}_{duration_name(length)}"
                      for length in self.lengths_ms for a in self.aggregates)
        object.__setattr__(self, "fields", tuple(f for f in fields if f is not None))
        object.__setattr__(self, "uses_labels", any(a.kind == "rate" for a in self.aggregates))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "version", _digest(self.canonical()))

    @property
    def horizon_ms(self) -> int:
        """How far behind the watermark the state must reach: an event no older than the
        allowed lateness looks back at most its delay and its longest length."""
        return self.lateness_ms + self.delay_ms + self.lengths_ms[-1]

    @property
    def prefix(self) -> str:
        """Where this definition's state lives: ``win3:customer:1a2b3c4d``."""
        return f"win{STATE_FORMAT}:{self.name}:{self.version}"

    def canonical(self) -> dict[str, object]:
        """Everything the state and the served values depend on, as plain data."""
        return {"format": STATE_FORMAT, "name": self.name, "key": self.key,
                "lengths_ms": list(self.lengths_ms), "delay_ms": self.delay_ms,
                "lateness_ms": self.lateness_ms,
                "aggregates": [[a.kind, a.field] for a in self.aggregates]}


@dataclass(frozen=True)
class Definition:
    """Every window group (in name order) and the calendar: the one definition that the live
    service, backfill and replay compute."""

    windows: tuple[Window, ...]
    time_zone: str = "UTC"
    night_hours: tuple[int, int] = (0, 6)

    @property
    def names(self) -> tuple[str, ...]:
        """Every feature name, in the order of the engine's columns."""
        return (*(n for w in self.windows for n in w.names), *CALENDAR_NAMES)


def compile_window(name: str, group: WindowGroup) -> Window:
    """One validated ``[windows.<name>]`` section as a :class:`Window`."""
    return Window(name=name, key=group.key,
                  lengths_ms=tuple(sorted(duration_ms(x) for x in group.lengths)),
                  delay_ms=duration_ms(group.delay),
                  lateness_ms=duration_ms(group.allowed_lateness),
                  aggregates=tuple(Aggregate.parse(a) for a in group.aggregates))


def define(windows: Mapping[str, WindowGroup],
           calendar: CalendarSettings | None = None) -> Definition:
    """The definition of validated window and calendar settings.

    Raises ValueError when two features would share a name (an attribute named like a
    field, e.g. ``mean:attributes.amount`` beside ``mean:amount``).
    """
    calendar = calendar or CalendarSettings()
    compiled = tuple(compile_window(n, windows[n]) for n in sorted(windows))
    definition = Definition(compiled, calendar.time_zone, calendar.night_hours)
    names = definition.names
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"feature names collide: {', '.join(twice)}")
    return definition


def from_settings(settings: Settings) -> Definition:
    """The definition of the service's settings."""
    return define(settings.windows, settings.calendar)


def feature_names(definition: Definition) -> list[str]:
    """Every feature name the definition computes, in a stable order (the engine's columns)."""
    return list(definition.names)


def _digest(canonical: Mapping[str, object]) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]
