"""Window features in a replay: the engine ``features backfill`` runs, fed the same arrivals.

A replay computes the ``[windows.*]`` features of its history in memory, in its own
:class:`~stream_infer.features.WindowEngine`: it never reads or writes the live window state
in Redis. Events arrive in the replay's input order, batch after batch; the labels of a
``--labels`` file arrive at their ``label_time``. Each batch first takes the labels due by
then, those whose ``label_time`` is at or before the batch's newest event time, and
:func:`~stream_infer.offline.backfill.features` interleaves them with the batch's events as
backfill does (by time, labels first on a tie). So a replay of a time-ordered history serves
exactly the values ``features backfill`` writes for it, however it is cut into batches
(``tests/unit/replay/test_replay_windows.py``). A time range (``--from``) feeds the windows
only the events in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..decode import JsonLabelDecoder
from ..enrich import Matrix
from ..errors import ConfigError, RecordError
from ..features import Definition, Label, WindowEngine
from ..offline.backfill import features, records
from ..records import LabelRecord, Transaction
from .collect import Rejected


class ReplayWindows:
    """The :class:`~stream_infer.pipeline.WindowFeatures` of a replay: ``definition``'s
    features over the events it is given, in order, with ``labels`` applied as they come
    due (see the module's docstring); labels given with a batch apply first, as live."""

    def __init__(self, definition: Definition, labels: Sequence[LabelRecord] = ()) -> None:
        self.engine = WindowEngine(definition, pending_labels=max(len(labels), 1))
        self.names = definition.names
        self.labels = sorted(labels, key=_label_time)
        """The labels in arrival order (by ``label_time``, file order on a tie)."""
        self._frauds = frozenset(label.event_id for label in labels if label.label == 1)
        self.applied = 0
        """How many of :attr:`labels` have come due."""
        self.calls = 0

    def __call__(self, events: Sequence[Transaction],
                 labels: Sequence[LabelRecord] = ()) -> Matrix:
        if labels:
            self.engine.apply([], [Label.of(label) for label in labels])
        if not events:
            return np.empty((0, len(self.names)), np.float32)
        rows, calls = features(self.engine, events, self._due(events), frauds=self._frauds)
        self.calls += calls
        return rows

    def _due(self, events: Sequence[Transaction]) -> list[LabelRecord]:
        """The labels not yet applied whose time is at or before the batch's newest event."""
        newest = max(e.event_time_ms for e in events)
        start = end = self.applied
        while end < len(self.labels) and self.labels[end].label_time_ms <= newest:
            end += 1
        self.applied = end
        return self.labels[start:end]


class LabelsFile:
    """A ``--labels`` file read and decoded with the live label decoder (JSON lines, or
    Parquet rows as JSON): the labels, and the refused lines as the replay's dead letters
    (``partition`` 0, ``offset`` the line from 0, as a replayed file's events)."""

    def __init__(self, path: Path, max_payload_bytes: int) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"labels file not found: {path}")
        self.path = path
        self.labels: list[LabelRecord] = []
        self.rejected: list[Rejected] = []
        self.read = 0
        decode = JsonLabelDecoder(max_payload_bytes)
        for position, value in records(path):
            self.read += 1
            try:
                self.labels.append(decode(value))
            except RecordError as error:
                self.rejected.append(Rejected(0, position - 1, error.reason, str(error), value))

    @property
    def reasons(self) -> Counter[str]:
        return Counter(row.reason for row in self.rejected)


def _label_time(label: LabelRecord) -> int:
    return label.label_time_ms
