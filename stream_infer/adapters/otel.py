"""The OpenTelemetry SDK adapter, its only user: the tracer provider and the Kafka span exporter.

Pipeline code depends on the OTel API alone (a no-op tracer when this module is not used).
Spans go through a :class:`BatchSpanProcessor` with a bounded queue, so a slow or dead
telemetry backend drops spans (counted) instead of slowing scoring. On the traces topic each
record is one OTLP ``ExportTraceServiceRequest`` in protobuf, the encoding the OpenTelemetry
Collector's Kafka receiver reads (``encoding: otlp_proto``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Producer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from ..config import Settings

log = logging.getLogger(__name__)
SERVICE_NAME = "stream-infer"


class KafkaSpanExporter(SpanExporter):
    """Writes each export batch as one OTLP protobuf record; never blocks or raises."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self.dropped = 0
        self._producer = Producer({**config, "linger.ms": 200, "acks": 1,
                                   "enable.idempotence": False,
                                   "queue.buffering.max.messages": 1000,
                                   "message.timeout.ms": 30_000,
                                   "on_delivery": self._on_delivery})

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            payload = encode_spans(spans).SerializeToString()
            self._producer.produce(self.topic, payload)
            self._producer.poll(0)
        except Exception as exc:  # telemetry never takes the pipeline down
            self.dropped += len(spans)
            log.debug("span export failed: %s", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._producer.flush(timeout_millis / 1000) == 0)

    def shutdown(self) -> None:
        self._producer.flush(5)

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self.dropped += 1


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that also counts the spans it drops because its queue is full.

    The SDK drops the oldest span when the queue is full and only logs it; the queue length
    is read from the SDK's internals when they are there, and nothing is counted otherwise.
    """

    def __init__(self, exporter: SpanExporter, *, max_queue_size: int, **kwargs: Any) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size, **kwargs)
        self.max_queue_size = max_queue_size
        self.dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        if queue is not None and len(queue) >= self.max_queue_size:
            self.dropped += 1
        super().on_end(span)


class Tracing:
    """A tracer provider with its exporters; ``tracer`` is what the pipeline is given."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.tracing
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.exporters: list[SpanExporter] = []
        if cfg.kafka_topic:
            config = {**settings.kafka.common_config(), **settings.kafka.producer}
            self.exporters.append(KafkaSpanExporter(config, cfg.kafka_topic))
        if cfg.otlp:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.exporters.append(OTLPSpanExporter(timeout=cfg.otlp_timeout_s))
        self.processors = [
            CountingBatchSpanProcessor(
                exporter, max_queue_size=cfg.max_queue_size,
                schedule_delay_millis=cfg.schedule_delay_ms,
                max_export_batch_size=cfg.max_export_batch_size,
            )
            for exporter in self.exporters
        ]
        for processor in self.processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("stream_infer")

    @property
    def dropped(self) -> int:
        """Spans dropped: queue full, or the Kafka exporter could not deliver them."""
        return (sum(p.dropped for p in self.processors)
                + sum(getattr(e, "dropped", 0) for e in self.exporters))

    def shutdown(self) -> None:
        """Export what is queued (bounded by the processors' timeouts) and stop."""
        self.provider.shutdown()
