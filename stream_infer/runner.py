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

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .delivery import (
    FlushThenStore,
    Mode,
    Sink,
    Tracked,
    TrackingSink,
    Transactional,
    Transactions,
)
from .errors import ConfigError, DeliveryError, DependencyUnavailable
from .pipeline import BatchCounts, BatchOutcome, Pipeline, TopicPartition
from .records import SourceRecord, wall_clock_ms
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


class Observer(Protocol):
    """Told what the loop does (``metrics.ServiceMetrics``); must not block or raise."""

    def loop_turned(self) -> None: ...
    def batch_done(self, outcome: BatchOutcome, emit_s: float, latency_ms: list[int]) -> None: ...
    def dependency_down(self, paused: bool) -> None: ...
    def delivery_failed(self) -> None: ...


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
        self.tracer = pipeline.tracer
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self.delivery = self._mode(transactions)

    def _mode(self, transactions: Transactions | None) -> Mode:
        """The delivery mode: transactional, tracked (``max_in_flight`` > 1) or flush then
        store."""
        timeout, limit = self.config.flush_timeout_s, self.config.max_in_flight
        if transactions is not None:
            return Transactional(self.sink, transactions, self._account)
        if limit == 1:
            return FlushThenStore(self.sink, self.source, timeout, self._account)
        if not isinstance(self.sink, TrackingSink):
            raise ConfigError(f"max_in_flight {limit} needs a sink that tracks each batch's "
                              f"deliveries; {type(self.sink).__name__} does not")
        return Tracked(self.sink, self.source, timeout, self._account, self._rewind)

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

        The delivery mode stores the batch's offsets once its outputs are acknowledged:
        before this returns, or (tracked) in a later step.
        """
        self.observer.loop_turned()
        self.delivery.settle(block=False)
        if self.reloader is not None and (models := self.reloader.poll()) is not None:
            self.pipeline.swap(models)
        records = self.source.consume(self.config.max_records, self.config.max_wait_s)
        if not records:
            return 0
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        with self.tracer.start_as_current_span("batch", links=self._links(records)) as span:
            outcome = self._process(records)
            if outcome is None:
                return 0
            try:
                with self.tracer.start_as_current_span("emit") as emit:
                    emit.set_attribute("stream_infer.outputs", len(outcome.outputs))
                    self.delivery.send(outcome, time.perf_counter())
            except DeliveryError as exc:
                span.set_status(Status(StatusCode.ERROR, "outputs not acknowledged"))
                self._rewind(outcome.first_offsets, exc)
                return 0
            if self._tracing:
                span.set_attributes(_batch_attributes(outcome, self.pipeline))
        self.delivery.settle(block=self.delivery.in_flight >= self.config.max_in_flight)
        return len(records)

    def close(self) -> None:
        """Store what is acknowledged, flush what is queued, commit stored offsets, leave."""
        try:
            self.delivery.close()
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
