"""Labels: the fraud outcome of an event, learned after it, and the ones waiting for it.

A label sets the label of its event; of several labels for one event the one with the
newest ``label_time`` wins (on equal times, fraud wins), whatever order they arrive in, so
a duplicate is a no-op and an older correction is ignored. A label that arrives before its
event waits among the pending labels, at most ``capacity`` of them (the oldest arrival is
dropped first), and applies when its event arrives. A label may also arrive among a
batch's events (:class:`LabelsDuring`): it counts for the events after it only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from ..records import LabelRecord

NO_LABEL = (float("-inf"), 0.0)
"""The (label_time, label) of an event no label has reached."""


class Label(msgspec.Struct, frozen=True, gc=False):
    """The outcome of event ``event_id``: ``label`` 1 is fraud, 0 is genuine, as known at
    ``label_time`` (epoch ms)."""

    event_id: str
    label: Annotated[int, msgspec.Meta(ge=0, le=1)]
    label_time: int

    @classmethod
    def of(cls, record: LabelRecord) -> Label:
        """The label a decoded wire record carries."""
        return cls(record.event_id, record.label, record.label_time_ms)

    @property
    def stamp(self) -> tuple[float, float]:
        """What decides between labels of one event: the greater stamp wins."""
        return float(self.label_time), float(self.label)


class PendingLabels:
    """Labels whose event has not arrived: the winning stamp per event id, bounded."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._stamps: dict[str, tuple[float, float]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, label: Label) -> bool:
        """Keep ``label`` if it wins over the one waiting for its event; True if kept."""
        held = self._stamps.get(label.event_id, NO_LABEL)
        if label.stamp <= held:
            return False
        self._stamps[label.event_id] = label.stamp
        if len(self._stamps) > self._capacity:
            del self._stamps[next(iter(self._stamps))]
            self.evicted += 1
        return True

    def get(self, event_id: str) -> tuple[float, float] | None:
        return self._stamps.get(event_id)

    def discard(self, event_ids: list[str]) -> None:
        """Forget the labels of events that have arrived (they now live in the state)."""
        for event_id in event_ids:
            self._stamps.pop(event_id, None)


class LabelsDuring:
    """Labels that arrive among a batch's events, ``labels[m]`` just before the event at
    ``arrivals[m]``; what became of each: ``won``, its outcome on its event's row in each
    rate group that keeps the event (as :meth:`GroupState.label`), and ``taken``, whether
    its event arrived after it and took it on arrival."""

    def __init__(self, during: Sequence[tuple[int, Label]], pending: PendingLabels) -> None:
        self.arrivals = [arrival for arrival, _ in during]
        self.labels = [label for _, label in during]
        self.won: list[list[bool]] = [[] for _ in during]
        self.taken = [False] * len(during)
        self.waiting: dict[str, list[tuple[int, tuple[float, float]]]] = {}
        for arrival, label in during:
            self.waiting.setdefault(label.event_id, []).append((arrival, label.stamp))
        self.held = {event_id: pending.get(event_id) for event_id in self.waiting}
        """The label waiting for each labelled event as the batch began."""

    def stamp(self, event_id: str, arrival: int, held: tuple[float, float] | None
              ) -> tuple[float, float] | None:
        """The label an event arriving at ``arrival`` takes: the winner of ``held`` (the
        pending one) and those that arrived among the batch's events before it."""
        stamps = [stamp for at, stamp in self.waiting.get(event_id, ()) if at <= arrival]
        if not stamps:
            return held
        return max(held or NO_LABEL, *stamps)
