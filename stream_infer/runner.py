"""The loop: poll a batch, process it, emit, wait for acks, store offsets; shut down cleanly.

At-least-once: a batch's offsets are stored only after every output it produced (alerts,
scores, dead letters) is acknowledged. If delivery fails, the batch's partitions are rewound
and the batch is processed again; consumers dedup on ``alert_id``. If a dependency is down
(the feature store under the ``pause`` policy, the Schema Registry), consumption pauses and
the same batch is retried with backoff.
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

from . import failpoints
from .errors import DeliveryError, DependencyUnavailable
from .pipeline import BatchCounts, BatchOutcome, Pipeline, TopicPartition, wall_clock_ms
from .records import Output, SourceRecord
from .retry import Backoff
from .score import Scoring
from .stats import Reservoir

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


class Sink(Protocol):
    """The producer port: ``flush`` raises DeliveryError unless every output was acked."""

    def send(self, outputs: Sequence[Output]) -> None: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self) -> None: ...


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

    def poll(self) -> Scoring | None: ...


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
        """Consume and fully handle one batch; return how many records it held."""
        self.observer.loop_turned()
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
                self._rewind(outcome, exc)
                return 0
            if self.transactions is None:
                self.source.store(outcome.next_offsets)
                failpoints.hit("after_store")
            if self._tracing:
                span.set_attributes(_batch_attributes(outcome, self.pipeline))
        self._account(outcome, time.perf_counter() - emit_started)
        return len(records)

    def close(self) -> None:
        """Flush what is queued, commit stored offsets, leave the group."""
        try:
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

    def _rewind(self, outcome: BatchOutcome, exc: DeliveryError) -> None:
        self.stats.delivery_failures += 1
        self.observer.delivery_failed()
        log.error("outputs not acknowledged, batch will be consumed again: %s", exc)
        self.source.seek(outcome.first_offsets)
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
