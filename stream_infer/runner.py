"""The loop: poll a batch, process it, emit, wait for acks, store offsets; shut down cleanly.

At-least-once: a batch's offsets are stored only after every output it produced (alerts,
scores, dead letters) is acknowledged. With ``max_in_flight`` > 1 the next batches are
consumed and processed while earlier ones await their acknowledgements, and offsets are
stored in batch order. If delivery fails, every batch not yet stored is rewound and processed
again; consumers dedup on ``alert_id``. If a dependency is down (the feature store under the
``pause`` policy, the Schema Registry), consumption pauses and the same batch is retried
with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import failpoints
from .errors import ConfigError, DeliveryError, DependencyUnavailable
from .pipeline import BatchCounts, BatchOutcome, Pipeline, TopicPartition, wall_clock_ms
from .records import Output, SourceRecord
from .reservoir import Reservoir
from .retry import Backoff
from .score import ModelSet

log = logging.getLogger(__name__)


class Source(Protocol):
    """The consumer port (``adapters.kafka.KafkaSource``; ``adapters.memory.MemorySource``)."""

    assigned: set[TopicPartition]

    def consume(self, max_records: int, timeout_s: float) -> Sequence[SourceRecord]: ...
    def store(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    def seek(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


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


class Observer(Protocol):
    """Told what the loop does (``metrics.ServiceMetrics``); must not block or raise."""

    def loop_turned(self) -> None: ...
    def batch_done(self, outcome: BatchOutcome, emit_s: float, latency_ms: list[int]) -> None: ...
    def dependency_down(self, paused: bool) -> None: ...
    def delivery_failed(self) -> None: ...


class Transactions(Protocol):
    """Exactly-once delivery (``adapters.kafka.KafkaTransactions``): outputs and the input
    offsets committed together; raises DeliveryError after an abort."""

    def commit(self, outputs: Sequence[Output], offsets: Mapping[TopicPartition, int]
               ) -> None: ...
    def close(self) -> None: ...


class Reloader(Protocol):
    """Offers new models between batches (``reload.ModelWatch``)."""

    def poll(self) -> ModelSet | None: ...


class NoObserver:
    """The default: observes nothing."""

    def loop_turned(self) -> None:
        pass

    def batch_done(self, outcome: BatchOutcome, emit_s: float, latency_ms: list[int]) -> None:
        pass

    def dependency_down(self, paused: bool) -> None:
        pass

    def delivery_failed(self) -> None:
        pass


@dataclass(slots=True)
class RunStats:
    """Totals since start, for progress lines, summaries and (later) metrics."""

    counts: BatchCounts = field(default_factory=BatchCounts)
    batches: int = 0
    delivery_failures: int = 0
    outages: int = 0
    latency_ms: Reservoir = field(default_factory=Reservoir)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    first_batch_at: float | None = None
    last_batch_at: float | None = None

    def events_per_s(self) -> float:
        """Consumed records per second from the first batch consumed to the last one acked."""
        if self.first_batch_at is None or self.last_batch_at is None:
            return 0.0
        return self.counts.consumed / max(self.last_batch_at - self.first_batch_at, 1e-9)


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    max_records: int = 1000
    max_wait_s: float = 0.05
    flush_timeout_s: float = 30.0
    max_links: int = 8
    backoff: Backoff = field(default_factory=Backoff)
    max_in_flight: int = 1


@dataclass(slots=True)
class _InFlight:
    """A batch whose outputs are sent and whose offsets wait for their acknowledgements."""

    outcome: BatchOutcome
    delivery: Delivery
    emit_s: float


class Runner:
    """Drives a :class:`Pipeline` between a :class:`Source` and a :class:`Sink`."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        pipeline: Pipeline,
        config: RunnerConfig = RunnerConfig(),
        *,
        clock: Callable[[], int] = wall_clock_ms,
        observer: Observer | None = None,
        reloader: Reloader | None = None,
        transactions: Transactions | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.pipeline = pipeline
        self.config = config
        self.clock = clock
        self.stats = RunStats()
        self.stopping = threading.Event()
        self.observer: Observer = observer or NoObserver()
        self.reloader = reloader
        self.transactions = transactions
        self.tracer = pipeline.tracer
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self._in_flight: deque[_InFlight] = deque()
        self._tracking: TrackingSink | None = None
        if transactions is None and config.max_in_flight > 1:
            if not isinstance(sink, TrackingSink):
                raise ConfigError(f"max_in_flight {config.max_in_flight} needs a sink that "
                                  f"tracks each batch's deliveries; {type(sink).__name__} "
                                  f"does not")
            self._tracking = sink

    def run(self, *, max_events: int | None = None) -> RunStats:
        """Process batches until :meth:`stop` or ``max_events`` consumed; then close cleanly."""
        try:
            while not self.stopping.is_set():
                if max_events is not None and self.stats.counts.consumed >= max_events:
                    break
                self.step()
        finally:
            self.close()
        return self.stats

    def stop(self) -> None:
        """Ask the loop to finish the current batch and exit (safe from a signal handler)."""
        self.stopping.set()

    def step(self) -> int:
        """Consume and handle one batch; return how many records it held.

        With ``max_in_flight`` > 1 the batch's offsets may be stored by a later step, once its
        outputs are acknowledged; otherwise they are stored before this returns.
        """
        self.observer.loop_turned()
        if self._in_flight:
            self._settle(block=False)
        if self.reloader is not None and (scoring := self.reloader.poll()) is not None:
            self.pipeline.swap(scoring)
        records = self.source.consume(self.config.max_records, self.config.max_wait_s)
        if not records:
            return 0
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        with self.tracer.start_as_current_span("batch", links=self._links(records)) as span:
            outcome = self._process(records)
            if outcome is None:
                return 0
            emit_started = time.perf_counter()
            if self._tracking is not None:
                with self.tracer.start_as_current_span("emit") as emit:
                    emit.set_attribute("stream_infer.outputs", len(outcome.outputs))
                    delivery = self._tracking.send_tracked(outcome.outputs)
                    failpoints.hit("after_produce")
                self._in_flight.append(
                    _InFlight(outcome, delivery, time.perf_counter() - emit_started))
            elif not self._emit(outcome, span):
                return 0
            if self._tracing:
                span.set_attributes(_batch_attributes(outcome, self.pipeline))
        if self._tracking is not None:
            self._settle(block=len(self._in_flight) >= self.config.max_in_flight)
        else:
            self._account(outcome, time.perf_counter() - emit_started)
        return len(records)

    def _emit(self, outcome: BatchOutcome, span: trace.Span) -> bool:
        """Send, wait for every acknowledgement, store the offsets; False if rewound."""
        try:
            with self.tracer.start_as_current_span("emit") as emit:
                emit.set_attribute("stream_infer.outputs", len(outcome.outputs))
                if self.transactions is not None:
                    self.transactions.commit(outcome.outputs, outcome.next_offsets)
                else:
                    self.sink.send(outcome.outputs)
                    failpoints.hit("after_produce")
                    self.sink.flush(self.config.flush_timeout_s)
                    failpoints.hit("after_flush")
        except DeliveryError as exc:
            span.set_status(Status(StatusCode.ERROR, "outputs not acknowledged"))
            self._rewind(outcome.first_offsets, exc)
            return False
        if self.transactions is None:
            self.source.store(outcome.next_offsets)
            failpoints.hit("after_store")
        return True

    def _settle(self, *, block: bool) -> None:
        """Store the offsets of the oldest batches whose outputs are all acknowledged, in
        order; with ``block``, wait for the oldest first. A failure rewinds every batch in
        flight."""
        sink = self._tracking
        assert sink is not None
        sink.poll()
        while self._in_flight:
            oldest = self._in_flight[0]
            if oldest.delivery.pending and block:
                waited = time.perf_counter()
                sink.wait(oldest.delivery, self.config.flush_timeout_s)
                oldest.emit_s += time.perf_counter() - waited
                if oldest.delivery.pending:
                    self._rewind_in_flight(f"{oldest.delivery.pending} outputs unacknowledged "
                                           f"after {self.config.flush_timeout_s}s")
                    return
            if oldest.delivery.pending:
                return
            if oldest.delivery.error is not None:
                self._rewind_in_flight(oldest.delivery.error)
                return
            failpoints.hit("after_flush")
            self.source.store(oldest.outcome.next_offsets)
            failpoints.hit("after_store")
            self._in_flight.popleft()
            self._account(oldest.outcome, oldest.emit_s)
            block = False

    def _rewind_in_flight(self, reason: str) -> None:
        """Settle what the sink still holds, then rewind each partition to the first offset
        of the oldest batch in flight that holds it."""
        with contextlib.suppress(DeliveryError):  # already failing; flush also renews a
            self.sink.flush(self.config.flush_timeout_s)  # fenced producer
        first: dict[TopicPartition, int] = {}
        for batch in self._in_flight:
            for tp, offset in batch.outcome.first_offsets.items():
                first.setdefault(tp, offset)
        self._in_flight.clear()
        self._rewind(first, DeliveryError(f"outputs not acknowledged: {reason}"))

    def close(self) -> None:
        """Store what is acknowledged, flush what is queued, commit stored offsets, leave."""
        try:
            while self._in_flight:
                self._settle(block=True)
            self.sink.close()
            if self.transactions is not None:
                self.transactions.close()
        finally:
            self.source.close()

    def _process(self, records: Sequence[SourceRecord]) -> BatchOutcome | None:
        failures = 0
        while True:
            try:
                outcome = self.pipeline.process(records)
            except DependencyUnavailable as exc:
                failures += 1
                records = self._wait_for_dependency(records, failures, exc)
                if not records:
                    return None
                continue
            if failures:
                self.source.resume()
                self.observer.dependency_down(False)
                log.info("dependencies are back after %d attempts; consuming again", failures)
            return outcome

    def _wait_for_dependency(
        self, records: Sequence[SourceRecord], failures: int, exc: DependencyUnavailable
    ) -> Sequence[SourceRecord]:
        """Stop fetching, keep the group alive, drop records we no longer own, back off."""
        if failures == 1:
            self.stats.outages += 1
            self.source.pause()
            self.observer.dependency_down(True)
            log.warning("%s; consumption paused until it is back", exc)
        if self.stopping.is_set():
            return []
        self.source.consume(1, self.config.backoff.compute(failures))
        owned = self.source.assigned
        return [r for r in records if (r.topic() or "", r.partition() or 0) in owned]

    def _links(self, records: Sequence[SourceRecord]) -> list[Link]:
        """Links to the traces of up to ``max_links`` inputs.

        At most ``16 * max_links`` records, evenly spaced, are looked at, so the cost per batch
        is bounded whatever the batch size.
        """
        limit = self.config.max_links
        if not self._tracing or not limit:
            return []
        links: list[Link] = []
        for record in records[:: max(len(records) // (16 * limit), 1)]:
            if len(links) == limit:
                break
            headers = record.headers() or []
            pairs = headers.items() if isinstance(headers, dict) else headers
            value = next((v for k, v in pairs if k == "traceparent"), None)
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            if value:
                context = trace.get_current_span(
                    _PROPAGATOR.extract({"traceparent": value})).get_span_context()
                if context.is_valid:
                    links.append(Link(context))
        return links

    def _rewind(self, first_offsets: Mapping[TopicPartition, int], exc: DeliveryError) -> None:
        self.stats.delivery_failures += 1
        self.observer.delivery_failed()
        log.error("outputs not acknowledged, batch will be consumed again: %s", exc)
        self.source.seek(first_offsets)
        self.stopping.wait(self.config.backoff.compute(self.stats.delivery_failures))

    def _account(self, outcome: BatchOutcome, emit_s: float) -> None:
        self.stats.batches += 1
        self.stats.last_batch_at = time.monotonic()
        self.stats.counts.add(outcome.counts)
        now = self.clock()
        latency = [now - ts for ts in outcome.alert_source_ms]
        self.stats.latency_ms.extend(latency)
        stages = self.stats.stage_seconds
        for stage, seconds in [*outcome.stage_seconds.items(), ("emit", emit_s)]:
            stages[stage] = stages.get(stage, 0.0) + seconds
        self.observer.batch_done(outcome, emit_s, latency)


_PROPAGATOR = TraceContextTextMapPropagator()


def _batch_attributes(outcome: BatchOutcome, pipeline: Pipeline) -> dict[str, str | int]:
    """What a batch span says: sizes, offsets, model. Never a card id or a payload."""
    c = outcome.counts
    ranges = ", ".join(f"{t}[{p}]:{first}-{outcome.next_offsets[(t, p)] - 1}"
                       for (t, p), first in sorted(outcome.first_offsets.items()))
    return {
        "messaging.batch.message_count": c.consumed,
        "stream_infer.partitions": ranges,
        "stream_infer.scored": c.scored,
        "stream_infer.alerts": c.alerted,
        "stream_infer.dead_letters": c.dead_lettered,
        "stream_infer.feature_misses": c.feature_misses,
        "stream_infer.model.name": pipeline.model.name,
        "stream_infer.model.version": pipeline.model.version,
    }
