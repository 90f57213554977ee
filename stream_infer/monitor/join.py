"""Scores joined to their labels by event id: bounded state whose figures do not depend on
the order, or the number of times, the records arrive.

A score is kept per (model, version, event id); the same score twice is a no-op, and of two
scores of one event by one model version (the service scored it again after a restart) the
earlier ``scored_at`` is kept, whatever order they come in. A label is kept per event id with
its winning stamp (:class:`~stream_infer.features.labels.Label`: the newest ``label_time``
wins, fraud on ties), so a duplicate is a no-op and a correction applies in any order; the
earliest ``label_time`` seen is kept too, for the label delay. A label that arrives before its
score waits for it.

State is bounded in event time: scores are held in UTC-day buckets, and once the newest event
time seen (the watermark) enters a new day, the days more than ``ttl_days`` before it are
dropped, with the labels of their events and every label stamped before the oldest day kept.
A score of a day already dropped is not kept. Which days are held, and so every figure,
depends only on the set of records read: a restart that reads them again, in another order,
gives the same state. ``max_scores`` and ``max_labels`` are a safety net under that: over
them the oldest day (and the oldest label) goes first, counted in :attr:`JoinState.evicted`,
and then figures do depend on what was read when.

A score record written before records carried ``alerted`` counts as alerted when it carries
a ``threshold`` its score reaches, and as not alerted without one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ..features.labels import Label
from ..records import ScoreRecord

DAY_MS = 86_400_000
UNLABELLED = -1
ModelKey = tuple[str, str]
"""(model name, version)."""
Array = npt.NDArray[Any]


class Score(msgspec.Struct, frozen=True, gc=False):
    """What the join keeps of a score record."""

    card_id: str
    score: float
    event_time: int
    scored_at: int
    alerted: bool
    shadow: bool


@dataclass(slots=True)
class LabelState:
    """An event's labels as far as they matter: the winning stamp and the first label time."""

    label_time: int
    label: int
    first_time: int

    @property
    def stamp(self) -> tuple[float, float]:
        return float(self.label_time), float(self.label)


@dataclass(frozen=True, slots=True)
class ModelRows:
    """One model version's joined scores as columns (one row per event, by event time).

    ``labels`` is 1, 0, or :data:`UNLABELLED`; ``first_label_ms`` is the earliest label time
    of the event (-1 when unlabelled); ``label_ms`` the winning label's time (-1 likewise).
    """

    model: str
    version: str
    event_ids: Array
    cards: Array
    event_ms: Array
    scores: Array
    alerted: Array
    shadow: Array
    labels: Array
    first_label_ms: Array
    label_ms: Array

    def __len__(self) -> int:
        return len(self.event_ids)

    def take(self, rows: Array) -> ModelRows:
        """The rows at ``rows`` (indexes or a mask)."""
        cols = {name: getattr(self, name)[rows] for name in _COLUMNS}
        return ModelRows(self.model, self.version, **cols)

    @property
    def days(self) -> Array:
        return self.event_ms // DAY_MS


_COLUMNS = ("event_ids", "cards", "event_ms", "scores", "alerted", "shadow", "labels",
            "first_label_ms", "label_ms")


class JoinState:
    """Scores and labels by event id, bounded (see the module docstring)."""

    def __init__(self, *, ttl_days: int | None = 35, max_scores: int | None = 2_000_000,
                 max_labels: int | None = 2_000_000) -> None:
        self.ttl_days = ttl_days
        self.max_scores = max_scores
        self.max_labels = max_labels
        self._days: dict[int, dict[tuple[str, str, str], Score]] = {}
        self._labels: dict[str, LabelState] = {}
        self._scores = 0
        self.watermark_ms: int | None = None
        self.newest_label_ms: int | None = None
        self.evicted: Counter[str] = Counter()
        """Entries dropped by ``ttl`` (scores, labels) and by the caps (``*_cap``)."""

    @property
    def scores(self) -> int:
        return self._scores

    @property
    def labels(self) -> int:
        return len(self._labels)

    def add_score(self, record: ScoreRecord) -> bool:
        """Hold ``record``; False if it changed nothing (a duplicate, a later re-score, or an
        event of a day already dropped)."""
        day = record.event_time // DAY_MS
        if self._expired(day):
            self.evicted["scores"] += 1
            return False
        key = (record.model_name, record.model_version, record.event_id)
        bucket = self._days.setdefault(day, {})
        held = bucket.get(key)
        if held is not None and (held.scored_at, held.score) <= (record.scored_at, record.score):
            return False
        alerted = record.alerted if record.alerted is not None else (
            record.threshold is not None and record.score >= record.threshold)
        bucket[key] = Score(record.card_id, record.score, record.event_time, record.scored_at,
                            alerted, record.shadow)
        self._scores += held is None
        self._advance(record.event_time)
        return True

    def add_label(self, label: Label) -> bool:
        """Apply ``label``; False if it changed nothing (a duplicate, or older than the one
        held and not earlier than the first)."""
        held = self._labels.get(label.event_id)
        if held is None:
            self._labels[label.event_id] = LabelState(label.label_time, label.label,
                                                      label.label_time)
            self._cap_labels()
        else:
            changed = False
            if label.stamp > held.stamp:
                held.label_time, held.label = label.label_time, label.label
                changed = True
            if label.label_time < held.first_time:
                held.first_time, changed = label.label_time, True
            if not changed:
                return False
        if self.newest_label_ms is None or label.label_time > self.newest_label_ms:
            self.newest_label_ms = label.label_time
        return True

    def models(self) -> list[ModelKey]:
        return sorted({(name, version) for bucket in self._days.values()
                       for name, version, _ in bucket})

    def rows(self, from_ms: int | None = None, to_ms: int | None = None
             ) -> dict[ModelKey, ModelRows]:
        """Each model version's rows with event time in ``[from_ms, to_ms)``."""
        found: dict[ModelKey, list[tuple[str, Score]]] = {}
        for day in sorted(self._days):
            if (from_ms is not None and (day + 1) * DAY_MS <= from_ms) or (
                    to_ms is not None and day * DAY_MS >= to_ms):
                continue
            for (name, version, event_id), score in self._days[day].items():
                if (from_ms is None or score.event_time >= from_ms) and (
                        to_ms is None or score.event_time < to_ms):
                    found.setdefault((name, version), []).append((event_id, score))
        return {key: self._columns(key, held) for key, held in sorted(found.items())}

    def _columns(self, key: ModelKey, held: list[tuple[str, Score]]) -> ModelRows:
        held.sort(key=lambda item: (item[1].event_time, item[0]))
        labels = [self._labels.get(event_id) for event_id, _ in held]
        return ModelRows(
            model=key[0], version=key[1],
            event_ids=np.array([e for e, _ in held], dtype=object),
            cards=np.array([s.card_id for _, s in held], dtype=object),
            event_ms=np.array([s.event_time for _, s in held], dtype=np.int64),
            scores=np.array([s.score for _, s in held], dtype=np.float64),
            alerted=np.array([s.alerted for _, s in held], dtype=bool),
            shadow=np.array([s.shadow for _, s in held], dtype=bool),
            labels=np.array([UNLABELLED if lab is None else lab.label for lab in labels],
                            dtype=np.int64),
            first_label_ms=np.array([-1 if lab is None else lab.first_time for lab in labels],
                                    dtype=np.int64),
            label_ms=np.array([-1 if lab is None else lab.label_time for lab in labels],
                              dtype=np.int64))

    def _expired(self, day: int) -> bool:
        if self.ttl_days is None or self.watermark_ms is None:
            return False
        return day < self.watermark_ms // DAY_MS - self.ttl_days

    def _advance(self, event_time: int) -> None:
        before = self.watermark_ms
        if before is not None and event_time <= before:
            self._cap_scores()
            return
        self.watermark_ms = event_time
        new_day = before is None or event_time // DAY_MS > before // DAY_MS
        if self.ttl_days is not None and new_day:
            oldest = event_time // DAY_MS - self.ttl_days
            self._drop_days([d for d in self._days if d < oldest], "scores")
            self._drop_labels_before(oldest * DAY_MS)
        self._cap_scores()

    def _cap_scores(self) -> None:
        while self.max_scores is not None and self._scores > self.max_scores and self._days:
            self._drop_days([min(self._days)], "scores_cap")

    def _drop_days(self, days: Iterable[int], reason: str) -> None:
        for day in days:
            bucket = self._days.pop(day)
            self._scores -= len(bucket)
            self.evicted[reason] += len(bucket)
            for _, _, event_id in bucket:
                if self._labels.pop(event_id, None) is not None:
                    self.evicted["labels"] += 1

    def _drop_labels_before(self, cutoff_ms: int) -> None:
        old = [e for e, held in self._labels.items() if held.label_time < cutoff_ms]
        for event_id in old:
            del self._labels[event_id]
        self.evicted["labels"] += len(old)

    def _cap_labels(self) -> None:
        if self.max_labels is not None and len(self._labels) > self.max_labels:
            del self._labels[next(iter(self._labels))]
            self.evicted["labels_cap"] += 1

