"""Metrics move with what the runner reports; endpoints answer like Kubernetes probes want."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.errors import ConfigError
from stream_infer.pipeline import BatchCounts, BatchOutcome
from stream_infer.service.metrics import ConsumerCollector, Endpoints, ServiceMetrics


def outcome() -> BatchOutcome:
    counts = BatchCounts(consumed=10, dead_lettered=2, scored=8, alerted=1, feature_misses=3,
                         degraded=0, dlq_reasons=Counter({"schema": 2}),
                         shadow_alerts=Counter({"challenger:1": 3}))
    return BatchOutcome([], {}, {}, counts, [], {"decode": 0.001, "enrich": 0.002, "score": 0.003})


def call(app: Endpoints, path: str) -> tuple[str, str]:
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                        lambda s, h: status.append(s)))
    return status[0], body.decode()


def samples(text: str) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_batches_move_counters_and_histograms() -> None:
    metrics = ServiceMetrics()
    metrics.serving("demo", "2")
    metrics.serving("demo", "3", [("challenger", "1")])
    metrics.reloaded(True)
    metrics.reloaded(False)
    metrics.batch_done(outcome(), emit_s=0.004, latency_ms=[12])
    metrics.batch_done(outcome(), emit_s=0.004, latency_ms=[])
    metrics.delivery_failed()
    metrics.dependency_down(True)
    _, text = call(Endpoints(metrics, {}), "/metrics")
    got = samples(text)
    assert got[("stream_infer_events_consumed_total", ())] == 20
    assert got[("stream_infer_dead_letters_total", (("reason", "schema"),))] == 4
    assert got[("stream_infer_alerts_total", ())] == 2
    assert got[("stream_infer_feature_misses_total", ())] == 6
    assert got[("stream_infer_stage_seconds_count", (("stage", "emit"),))] == 2
    assert got[("stream_infer_event_to_alert_seconds_sum", ())] == 0.012
    models = {labels for name, labels in got if name == "stream_infer_model_info"}
    assert models == {(("name", "demo"), ("role", "champion"), ("version", "3")),
                      (("name", "challenger"), ("role", "shadow"), ("version", "1"))}
    assert got[("stream_infer_model_reloads_total", (("result", "ok"),))] == 1
    assert got[("stream_infer_shadow_alerts_total",
                (("name", "challenger"), ("version", "1")))] == 6
    assert got[("stream_infer_model_reloads_total", (("result", "refused"),))] == 1
    assert got[("stream_infer_delivery_failures_total", ())] == 1
    assert got[("stream_infer_paused", ())] == 1


def test_consumer_lag_is_read_at_scrape_time_and_a_failing_read_does_not_break_it() -> None:
    metrics = ServiceMetrics()
    lag = {("tx", 0): 5}
    metrics.registry.register(ConsumerCollector(lambda: lag, lambda: 3))
    got = samples(call(Endpoints(metrics, {}), "/metrics")[1])
    assert got[("stream_infer_consumer_lag", (("partition", "0"), ("topic", "tx")))] == 5
    assert got[("stream_infer_rebalances", ())] == 3

    def broken() -> dict[tuple[str, int], int]:
        raise RuntimeError("consumer closed")

    other = ServiceMetrics()
    other.registry.register(ConsumerCollector(broken, lambda: 0))
    assert call(Endpoints(other, {}), "/metrics")[0] == "200 OK"


def test_healthz_fails_when_the_loop_stops_turning() -> None:
    metrics = ServiceMetrics()
    app = Endpoints(metrics, {}, stale_after_s=0.05)
    metrics.loop_turned()
    assert call(app, "/healthz")[0] == "200 OK"
    time.sleep(0.06)
    assert call(app, "/healthz")[0].startswith("503")


def test_readyz_names_each_failing_check() -> None:
    def boom() -> tuple[bool, str]:
        raise ConnectionError

    app = Endpoints(ServiceMetrics(), {"partitions": lambda: (True, "2 assigned"),
                                       "redis": lambda: (False, ""), "broker": boom})
    status, body = call(app, "/readyz")
    assert status.startswith("503")
    assert "partitions: ok 2 assigned" in body and "redis: FAIL" in body
    assert "broker: FAIL ConnectionError" in body
    ready = Endpoints(ServiceMetrics(), {"partitions": lambda: (True, "")})
    assert call(ready, "/readyz")[0] == "200 OK"
    assert call(ready, "/nope")[0].startswith("404")


def test_fail_open_batches_count_store_errors_and_set_degraded_mode() -> None:
    metrics = ServiceMetrics()
    degraded = outcome()
    degraded.counts.degraded, degraded.counts.store_errors = 8, 1
    metrics.batch_done(degraded, emit_s=0.001, latency_ms=[])
    got = samples(call(Endpoints(metrics, {}), "/metrics")[1])
    assert got[("stream_infer_feature_store_errors_total", ())] == 1
    assert got[("stream_infer_degraded", ())] == 1
    metrics.batch_done(outcome(), emit_s=0.001, latency_ms=[])
    assert samples(call(Endpoints(metrics, {}), "/metrics")[1])[("stream_infer_degraded", ())] == 0


def test_spans_dropped_for_a_full_queue_are_counted() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from stream_infer.adapters.otel import CountingBatchSpanProcessor

    blocked = threading.Event()

    class Blocking(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            blocked.wait(5)
            return SpanExportResult.SUCCESS

    processor = CountingBatchSpanProcessor(Blocking(), max_queue_size=4, max_export_batch_size=1,
                                           schedule_delay_millis=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    tracer.start_span("first").end()
    time.sleep(0.2)  # the worker took it and is now stuck exporting
    for _ in range(10):
        tracer.start_span("s").end()
    assert processor.dropped == 6
    blocked.set()
    provider.shutdown()


def test_a_taken_port_is_a_config_error_naming_it_and_the_setting() -> None:
    first = Endpoints(ServiceMetrics(), {})
    port = first.start("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=rf"127\.0\.0\.1:{port} \(observability\.http_port"):
            Endpoints(ServiceMetrics(), {}).start("127.0.0.1", port)
    finally:
        first.stop()
