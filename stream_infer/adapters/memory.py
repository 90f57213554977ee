"""In-memory fakes for every port, for unit tests and examples.

The integration tests still use the real broker and Redis; these make the pure stages and
the runner's control flow testable without sockets or sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..delivery import Delivery
from ..enrich import Lookup, Matrix, Reply
from ..errors import DeliveryError, FeatureStoreError
from ..records import Headers, Output
from ..score import Scores

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka-message look-alike (the ``SourceRecord`` protocol)."""

    _value: bytes | None
    _topic: str = "transactions"
    _partition: int = 0
    _offset: int = 0
    _key: bytes | None = None
    _headers: Headers | None = None
    _timestamp: int = 0

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


class MemorySource:
    """Partitions held in lists; offsets stored and committed in dicts."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.partitions: dict[TP, list[Record]] = {}
        for record in records:
            self.partitions.setdefault((record.topic(), record.partition()), []).append(record)
        self.assigned: set[TP] = set(self.partitions)
        self.position: dict[TP, int] = dict.fromkeys(self.partitions, 0)
        self.stored: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}
        self.paused = False
        self.closed = False

    def consume(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.paused:
            return []
        batch: list[Record] = []
        for tp in sorted(self.assigned):
            records = self.partitions.get(tp, [])
            take = records[self.position[tp]:self.position[tp] + max_records - len(batch)]
            self.position[tp] += len(take)
            batch.extend(take)
        return batch

    def store(self, offsets: Mapping[TP, int]) -> None:
        self.stored.update({tp: o for tp, o in offsets.items() if tp in self.assigned})

    def seek(self, offsets: Mapping[TP, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self.assigned:
                first = self.partitions[tp][0].offset()
                self.position[tp] = offset - first

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def commit(self) -> None:
        self.committed.update(self.stored)

    def close(self) -> None:
        self.commit()
        self.closed = True


class MemorySink:
    """Collects delivered outputs; ``fail_next`` makes the next flushes fail.

    Tracked sends (``max_in_flight`` > 1) are acknowledged by the next :meth:`poll`, or, with
    ``hold``, only by :meth:`acknowledge`, :meth:`wait` or :meth:`flush`; while ``fail_next``
    lasts, each batch with outputs fails instead.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.delivered: list[Output] = []
        self._pending: list[Output] = []
        self._tracked: list[tuple[Delivery, Sequence[Output]]] = []
        self.hold = hold
        self.fail_next = 0

    def send(self, outputs: Sequence[Output]) -> None:
        self._pending.extend(outputs)

    def send_tracked(self, outputs: Sequence[Output]) -> Delivery:
        delivery = Delivery(len(outputs))
        self._tracked.append((delivery, outputs))
        return delivery

    def poll(self) -> None:
        if not self.hold:
            self.acknowledge()

    def wait(self, delivery: Delivery, timeout_s: float) -> None:
        self.acknowledge()

    def acknowledge(self) -> None:
        """Settle every tracked batch sent so far."""
        tracked, self._tracked = self._tracked, []
        for delivery, outputs in tracked:
            failed = bool(self.fail_next and outputs)
            self.fail_next -= failed
            for _ in outputs:
                delivery.settle("failed (injected)" if failed else None)
            if not failed:
                self.delivered.extend(outputs)

    def flush(self, timeout_s: float) -> None:
        self.acknowledge()
        pending, self._pending = self._pending, []
        if self.fail_next:
            self.fail_next -= 1
            raise DeliveryError(f"{len(pending)} outputs failed (injected)")
        self.delivered.extend(pending)

    def close(self) -> None:
        self.flush(0)

    def on(self, topic: str) -> list[Output]:
        return [o for o in self.delivered if o.topic == topic]


@dataclass
class MemoryFeatureStore:
    """Hashes (and packed vectors) in dicts; ``down`` simulates an outage; ``round_trips``
    counts fetches."""

    hashes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    vectors: dict[str, bytes] = field(default_factory=dict)
    down: bool = False
    round_trips: int = 0

    def fetch(self, lookups: Sequence[Lookup]) -> list[Reply]:
        if self.down:
            raise FeatureStoreError("memory store is down (injected)")
        self.round_trips += 1
        return [self.vectors.get(key) if fields is None
                else [self.hashes.get(key, {}).get(f) for f in fields] for key, fields in lookups]


@dataclass
class FunctionModel:
    """A model whose scores are any function of the matrix (``score.Model`` protocol)."""

    fn: Callable[[Matrix], Scores]
    features: tuple[str, ...]
    threshold: float = 0.5
    name: str = "fake"
    version: str = "1"

    def predict(self, matrix: Matrix) -> Scores:
        return np.asarray(self.fn(matrix), dtype=np.float32)

    def contributions(self, matrix: Matrix) -> npt.NDArray[np.float32]:
        """Each feature contributes its own value; the bias is 0."""
        bias = np.zeros((matrix.shape[0], 1), dtype=np.float32)
        return np.hstack([np.nan_to_num(matrix), bias]).astype(np.float32)
