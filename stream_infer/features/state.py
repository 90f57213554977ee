"""The window state of one group, in memory, laid out the way a Redis script can keep it.

Per entity (a customer, a terminal) the state is its **log**: the events kept, ordered by
``(event_time, event_id)``, one row each (:class:`Layout`): the time, the label stamp
(groups with a rate), the values the aggregates read and the features served to the event
(its memo). Beside the logs, a **directory** maps each kept ``event_id`` to its entity and
time, to find an event for a label or a duplicate. Nothing else: counts, sums and rates are
recomputed from the log for every event, so an event arriving late or a label arriving at
any time changes exactly what the semantics say it changes.

Retention. ``W``, the watermark, is the newest event time the engine has seen. An event
older than ``W - allowed_lateness`` is too late: it gets no window features and is not
kept. Every other event looks back at most ``delay + longest length`` from its own time,
so a row at or before the horizon ``W - allowed_lateness - delay - longest`` can never be
read again: it is trimmed, an entity with nothing newer expires, and a duplicate of an event
beyond the horizon is too late rather than a memo hit (so trimming early or late is
invisible).

The live service keeps the same logs in Redis, shared by its workers
(``stream_infer.features.live``; the adapter ``stream_infer.adapters.redis_windows`` lists
the keys): per group and batch it reads the logs of the batch's entities, runs this
package's engine on them in the worker, and writes back the logs it changed, the served
features included (``stream_infer.features.codec``), only if none changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .definition import Window
from .labels import Label

Rows = npt.NDArray[np.float64]
Ids = npt.NDArray[np.object_]


class Layout:
    """The columns of a group's event rows: ``TIME``, then ``fraud`` and ``label_time`` for
    a group with a rate, the ``values`` the aggregates read, the ``served`` features."""

    TIME = 0

    def __init__(self, window: Window) -> None:
        first = 3 if window.uses_labels else 1
        self.fraud, self.label_time = 1, 2
        self.values = slice(first, first + len(window.fields))
        self.served = slice(self.values.stop, self.values.stop + len(window.names))
        self.width = self.served.stop


SEPARATOR = "\udcff"
"""Follows each id in stored ids: byte ``0xff`` once encoded (``surrogateescape``), which
UTF-8 never contains, so any id comes back as it was."""


def stored_ids(ids: Ids) -> bytes:
    """Ids as stored: each in UTF-8 followed by byte ``0xff``."""
    ids_list: list[str] = ids.tolist()
    text = SEPARATOR.join(ids_list) + SEPARATOR if ids_list else ""
    return text.encode("utf-8", "surrogateescape")


def split_ids(stored: bytes) -> list[str]:
    """Stored ids back as strings."""
    return stored.decode("utf-8", "surrogateescape").split(SEPARATOR)[:-1]


def id_ends(stored: bytes | memoryview) -> npt.NDArray[np.intp]:
    """Where each stored id ends: one past its separator byte."""
    ends: npt.NDArray[np.intp] = np.flatnonzero(np.frombuffer(stored, np.uint8) == 0xFF) + 1
    return ends


class EntityLog:
    """One entity's kept events, ordered by (time, id): ``rows`` (float64, one per event,
    in :class:`Layout`) and ``ids``, given as an array or as they are stored
    (:func:`stored_ids`; the live path, which moves most logs without reading an id: they
    are decoded on first use, and only the ones asked for by :meth:`ids_between`).

    ``at``: where ``rows`` begins among the rows of ``rows.base``, when the rows are a
    slice of a batch's array of many logs (the live path's decoded and merged logs), so that
    logs side by side there are joined without a copy (:func:`joined_rows`)."""

    __slots__ = ("_ends", "_ids", "_stored", "at", "rows")

    def __init__(self, rows: Rows, ids: Ids | None = None, *,
                 stored: bytes | None = None, at: int | None = None) -> None:
        assert ids is not None or stored is not None
        self.rows = rows
        self._ids = ids
        self._stored = stored
        self._ends: npt.NDArray[np.intp] | None = None
        self.at = at

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> Ids:
        if self._ids is None:
            assert self._stored is not None
            self._ids = np.array(split_ids(self._stored), object)
        return self._ids

    def stored(self) -> bytes:
        """The ids as stored (:func:`stored_ids`)."""
        if self._stored is None:
            self._stored = stored_ids(self.ids)
        return self._stored

    def stored_with(self, positions: Sequence[int],
                    added: Sequence[bytes | memoryview]) -> bytes:
        """The ids as stored with ``added`` (each one id as stored) inserted before the rows
        at ``positions`` (ascending; ``len(self)``: after the last), no id decoded."""
        view, done = memoryview(self.stored()), 0
        parts: list[bytes | memoryview] = []
        for at, piece in zip(positions, added, strict=True):
            cut = self._offset(at)
            parts += (view[done:cut], piece)
            done = cut
        parts.append(view[done:])
        return b"".join(parts)

    def ids_between(self, start: int, stop: int) -> list[str]:
        """The ids of rows ``[start, stop)``, decoding only those."""
        if start >= stop:
            return []
        if self._ids is not None or self._stored is None:
            between: list[str] = self.ids[start:stop].tolist()
            return between
        return split_ids(self._stored[self._offset(start):self._offset(stop)])

    def tail(self, cut: int, *, copy: bool) -> EntityLog:
        """The log without its first ``cut`` rows (copies of the arrays with ``copy``)."""
        rows = self.rows[cut:].copy() if copy else self.rows[cut:]
        at = None if copy or self.at is None else self.at + cut
        if self._ids is not None or self._stored is None:
            ids = self.ids[cut:]
            return EntityLog(rows, ids.copy() if copy else ids, at=at)
        return EntityLog(rows, stored=self._stored[self._offset(cut):], at=at)

    def _offset(self, row: int) -> int:
        """Where row ``row``'s stored id begins (after the last row: the bytes' length,
        found without scanning them)."""
        assert self._stored is not None
        if row == len(self):
            return len(self._stored)
        if row == 0:
            return 0
        if self._ends is None:
            self._ends = id_ends(self._stored)
        return int(self._ends[row - 1])

    def last_index(self, event_id: str) -> int:
        """Where the newest row of ``event_id`` is, at whatever time, or -1: one search of
        the ids as stored, none decoded."""
        if self._ids is not None or self._stored is None:
            found = np.flatnonzero(self.ids == event_id)
            return int(found[-1]) if len(found) else -1
        stored, wanted = self._stored, event_id.encode("utf-8", "surrogateescape") + b"\xff"
        end = len(stored)
        while (at := stored.rfind(wanted, 0, end)) >= 0:
            if at == 0 or stored[at - 1] == 0xFF:
                return stored.count(b"\xff", 0, at)
            end = at + len(wanted) - 1
        return -1

    def count_before(self, start: int, stop: int, event_id: str) -> int:
        """How many of the ids in ``[start, stop)`` (one time) sort before ``event_id``."""
        return sum(1 for other in self.ids_between(start, stop) if other < event_id)

    def nbytes(self) -> int:
        """Bytes of the representation: the rows and the ids (UTF-8)."""
        if self._ids is None and self._stored is not None:
            return self.rows.nbytes + len(self._stored) - len(self)
        return self.rows.nbytes + sum(len(i.encode()) for i in self.ids)


def joined_rows(logs: Sequence[EntityLog], width: int) -> Rows:
    """The rows of ``logs``, one log after the other: a view when they lie side by side, in
    this order, in one array (:attr:`EntityLog.at`), else a copy."""
    base: Rows | None = None
    start = end = 0
    for log in logs:
        rows = log.rows
        if not len(rows):
            continue
        if base is None and log.at is not None:
            base, start, end = rows.base, log.at, log.at
            if not (isinstance(base, np.ndarray) and base.ndim == 2
                    and base.shape[1] == width):
                base = None
        if base is None or rows.base is not base or log.at != end:
            return np.concatenate([log.rows for log in logs])
        end += len(rows)
    return base[start:end] if base is not None else np.empty((0, width))


@dataclass
class Memory:
    """What one group's state holds, and its bytes (rows, ids and entity keys)."""

    entities: int
    events: int
    bytes: int

    @property
    def bytes_per_entity(self) -> float:
        return self.bytes / self.entities if self.entities else 0.0


class GroupState:
    """The logs of one group's entities and the directory of their events."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.layout = Layout(window)
        self.logs: dict[str, EntityLog] = {}
        self.directory: dict[str, tuple[str, int]] = {}
        self.copies = False
        """Whether an event id was ever kept again while kept (:meth:`remember`)."""
        self.empty = EntityLog(np.empty((0, self.layout.width)), np.empty(0, object))
        """The log of an entity without events (shared: never written to)."""


    def find(self, event_id: str) -> tuple[EntityLog, int, int] | None:
        """The log, row index and time of a kept event."""
        return self._find_all([event_id])[0]

    def _find_all(self, event_ids: Sequence[str]) -> list[tuple[EntityLog, int, int] | None]:
        """:meth:`find` of each of ``event_ids``: one search per entity for all of its
        events, ids read only where times tie (the directory names the entity and time of
        every event its logs keep)."""
        wanted: dict[str, tuple[list[int], list[int]]] = {}
        for j, event_id in enumerate(event_ids):
            entry = self.directory.get(event_id)
            if entry is not None:
                asked, at = wanted.setdefault(entry[0], ([], []))
                asked.append(j)
                at.append(entry[1])
        found: list[tuple[EntityLog, int, int] | None] = [None] * len(event_ids)
        for entity, (asked, at) in wanted.items():
            log = self.logs[entity]
            times = log.rows[:, Layout.TIME]
            lefts = np.searchsorted(times, at, "left").tolist()
            rights = np.searchsorted(times, at, "right").tolist()
            for j, time, left, right in zip(asked, at, lefts, rights, strict=True):
                if right - left > 1:
                    left += log.ids_between(left, right).index(event_ids[j])
                found[j] = log, left, time
        return found

    def memo(self, event_id: str, horizon: int) -> Rows | None:
        """The features served to ``event_id``, if it is kept and newer than ``horizon``."""
        found = self.find(event_id)
        if found is None or found[2] <= horizon:
            return None
        log, at, _ = found
        return log.rows[at, self.layout.served]

    def label(self, labels: Sequence[Label], horizon: int | None) -> list[bool | None]:
        """Apply each of ``labels``, in order, to its kept event: True where it won, False
        where an equal or newer label was there, None where the event is not kept here or
        lies at or before ``horizon`` (no window reads it again, whether or not it is
        trimmed yet: so the outcome does not depend on when trimming ran)."""
        fraud, when = self.layout.fraud, self.layout.label_time
        edge = -(2**63) if horizon is None else horizon
        won: list[bool | None] = []
        for label, found in zip(labels, self._find_all([label.event_id for label in labels]),
                                strict=True):
            if found is None or found[2] <= edge:
                won.append(None)
                continue
            row = found[0].rows[found[1]]
            if label.stamp <= (row[when], row[fraud]):
                won.append(False)
            else:
                row[when], row[fraud] = label.stamp
                won.append(True)
        return won

    def remember(self, ids: list[str], places: Iterable[tuple[str, int]]) -> None:
        """Name each kept event's entity and time in the directory (``ids`` distinct)."""
        before = len(self.directory)
        self.directory.update(zip(ids, places, strict=True))
        self.copies |= len(self.directory) < before + len(ids)

    def trim(self, entity: str, log: EntityLog, horizon: int) -> int:
        """Drop ``log``'s rows at or before ``horizon`` (the whole entity if nothing is
        newer); how many rows went."""
        cut = int(np.searchsorted(log.rows[:, Layout.TIME], horizon, "right"))
        self.drop(entity, log, cut, copy=True)
        return cut

    def drop(self, entity: str, log: EntityLog, cut: int, *, copy: bool) -> None:
        """Keep ``log`` without its first ``cut`` rows as ``entity``'s (none left: drop the
        entity), and forget their events in the directory, unless it names another copy
        of one (the same id kept again elsewhere or at another time)."""
        if not cut:
            return
        directory = self.directory
        if not self.copies:
            for event_id in log.ids_between(0, cut):
                directory.pop(event_id, None)
        else:
            times = log.rows[:cut, Layout.TIME].astype(np.int64).tolist()
            for event_id, time in zip(log.ids_between(0, cut), times, strict=True):
                if directory.get(event_id) == (entity, time):
                    del directory[event_id]
        if cut == len(log):
            del self.logs[entity]
        else:
            self.logs[entity] = log.tail(cut, copy=copy)

    def expire(self, horizon: int) -> tuple[int, int]:
        """Trim every entity to ``horizon``: (rows trimmed, entities expired)."""
        before = len(self.logs)
        old = [(e, log) for e, log in self.logs.items() if log.rows[0, Layout.TIME] <= horizon]
        trimmed = sum(self.trim(e, log, horizon) for e, log in old)
        return trimmed, before - len(self.logs)

    def memory(self) -> Memory:
        logs = self.logs.values()
        size = sum(log.nbytes() for log in logs) + sum(len(e.encode()) for e in self.logs)
        return Memory(len(self.logs), sum(len(log) for log in logs), size)

