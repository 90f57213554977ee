"""How a batch's outputs reach Kafka and when its input offsets are stored: one small
strategy per processing guarantee, chosen once when the runner is built.

- :class:`FlushThenStore`: send, wait for every acknowledgement, store the offsets.
- :class:`Tracked`: send and keep consuming; store each batch's offsets, in batch order,
  once its outputs are acknowledged (``max_in_flight`` batches at most).
- :class:`Transactional`: outputs and input offsets committed in one Kafka transaction.

A mode reports each batch it has settled to ``done(outcome, emit_s)`` and a batch to consume
again to ``rewind(first_offsets, error)``; it stores nothing for a batch whose outputs failed.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from . import failpoints
from .errors import DeliveryError
from .pipeline import BatchOutcome, TopicPartition
from .records import Output

Done = Callable[[BatchOutcome, float], None]
Rewind = Callable[[Mapping[TopicPartition, int], DeliveryError], None]


class Delivery:
    """The acknowledgements of one batch's outputs, filled in as a :class:`TrackingSink`
    polls: ``pending`` outputs neither acknowledged nor failed yet, and why the first failed
    one failed (``error``)."""

    __slots__ = ("error", "pending")

    def __init__(self, outputs: int) -> None:
        self.pending = outputs
        self.error: str | None = None

    def settle(self, error: str | None) -> None:
        """One output acknowledged (``error`` None) or failed."""
        self.pending -= 1
        if error is not None and self.error is None:
            self.error = error


class Sink(Protocol):
    """The producer port: ``flush`` raises DeliveryError unless every output was acked."""

    def send(self, outputs: Sequence[Output]) -> None: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class TrackingSink(Sink, Protocol):
    """A sink that serves ``max_in_flight`` > 1: a :class:`Delivery` per batch, filled in by
    ``poll`` (never blocks) or ``wait`` (up to ``timeout_s``)."""

    def send_tracked(self, outputs: Sequence[Output]) -> Delivery: ...
    def poll(self) -> None: ...
    def wait(self, delivery: Delivery, timeout_s: float) -> None: ...


class Transactions(Protocol):
    """Exactly-once delivery (``adapters.kafka.KafkaTransactions``): outputs and the input
    offsets committed together; raises DeliveryError after an abort."""

    def commit(self, outputs: Sequence[Output], offsets: Mapping[TopicPartition, int]
               ) -> None: ...
    def close(self) -> None: ...


class OffsetStore(Protocol):
    """Where acknowledged offsets go (the runner's source)."""

    def store(self, offsets: Mapping[TopicPartition, int]) -> None: ...


class Mode(Protocol):
    """A delivery mode. ``send`` raises :class:`DeliveryError` when the batch must be
    consumed again (nothing of it stored); ``settle`` reports the batches now stored."""

    @property
    def in_flight(self) -> int: ...
    def send(self, outcome: BatchOutcome, started: float) -> None: ...
    def settle(self, *, block: bool) -> None: ...
    def close(self) -> None: ...


class FlushThenStore:
    """Send, wait for every acknowledgement, then store the batch's offsets."""

    in_flight = 0

    def __init__(self, sink: Sink, offsets: OffsetStore, flush_timeout_s: float,
                 done: Done) -> None:
        self.sink, self.offsets, self.flush_timeout_s, self.done = (
            sink, offsets, flush_timeout_s, done)

    def send(self, outcome: BatchOutcome, started: float) -> None:
        self.sink.send(outcome.outputs)
        failpoints.hit("after_produce")
        self.sink.flush(self.flush_timeout_s)
        failpoints.hit("after_flush")
        self.offsets.store(outcome.next_offsets)
        failpoints.hit("after_store")
        self.done(outcome, time.perf_counter() - started)

    def settle(self, *, block: bool) -> None:
        pass

    def close(self) -> None:
        self.sink.close()


class Transactional:
    """Commit each batch's outputs with its input offsets in one Kafka transaction."""

    in_flight = 0

    def __init__(self, sink: Sink, transactions: Transactions, done: Done) -> None:
        self.sink, self.transactions, self.done = sink, transactions, done

    def send(self, outcome: BatchOutcome, started: float) -> None:
        self.transactions.commit(outcome.outputs, outcome.next_offsets)
        self.done(outcome, time.perf_counter() - started)

    def settle(self, *, block: bool) -> None:
        pass

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            self.transactions.close()


@dataclass(slots=True)
class _InFlight:
    """A batch whose outputs are sent and whose offsets wait for their acknowledgements."""

    outcome: BatchOutcome
    delivery: Delivery
    emit_s: float


class Tracked:
    """Keep consuming while earlier batches await their acknowledgements; store offsets in
    batch order. A failure rewinds every batch in flight."""

    def __init__(self, sink: TrackingSink, offsets: OffsetStore, flush_timeout_s: float,
                 done: Done, rewind: Rewind) -> None:
        self.sink, self.offsets, self.flush_timeout_s = sink, offsets, flush_timeout_s
        self.done, self.rewind = done, rewind
        self._batches: deque[_InFlight] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._batches)

    def send(self, outcome: BatchOutcome, started: float) -> None:
        delivery = self.sink.send_tracked(outcome.outputs)
        failpoints.hit("after_produce")
        self._batches.append(_InFlight(outcome, delivery, time.perf_counter() - started))

    def settle(self, *, block: bool) -> None:
        """Store the offsets of the oldest batches whose outputs are all acknowledged, in
        order; with ``block``, wait for the oldest first."""
        if not self._batches:
            return
        self.sink.poll()
        while self._batches:
            oldest = self._batches[0]
            if oldest.delivery.pending and block:
                waited = time.perf_counter()
                self.sink.wait(oldest.delivery, self.flush_timeout_s)
                oldest.emit_s += time.perf_counter() - waited
                if oldest.delivery.pending:
                    self._rewind_all(f"{oldest.delivery.pending} outputs unacknowledged "
                                     f"after {self.flush_timeout_s}s")
                    return
            if oldest.delivery.pending:
                return
            if oldest.delivery.error is not None:
                self._rewind_all(oldest.delivery.error)
                return
            failpoints.hit("after_flush")
            self.offsets.store(oldest.outcome.next_offsets)
            failpoints.hit("after_store")
            self._batches.popleft()
            self.done(oldest.outcome, oldest.emit_s)
            block = False

    def _rewind_all(self, reason: str) -> None:
        """Settle what the sink still holds, then rewind each partition to the first offset
        of the oldest batch in flight that holds it."""
        with contextlib.suppress(DeliveryError):  # already failing; flush also renews a
            self.sink.flush(self.flush_timeout_s)  # fenced producer
        first: dict[TopicPartition, int] = {}
        for batch in self._batches:
            for tp, offset in batch.outcome.first_offsets.items():
                first.setdefault(tp, offset)
        self._batches.clear()
        self.rewind(first, DeliveryError(f"outputs not acknowledged: {reason}"))

    def close(self) -> None:
        while self._batches:
            self.settle(block=True)
        self.sink.close()
