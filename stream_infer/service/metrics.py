"""Prometheus metrics and the ``/metrics``, ``/healthz``, ``/readyz`` endpoints.

The only module that imports ``prometheus_client``. :class:`ServiceMetrics` is the runner's
:class:`~stream_infer.runner.Observer`: it never blocks or raises. Each service instance owns
its registry, so tests (and several services in one process) do not collide.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..drift import DriftTracker
from ..errors import ConfigError
from ..features.live import LiveStats
from ..pipeline import BatchOutcome

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ServiceMetrics:
    """Every metric the service exports, with the update methods the runner calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("stream_infer_events_consumed", "Input records consumed",
                                registry=r)
        self.scored = Counter("stream_infer_events_scored", "Events scored", registry=r)
        self.labels = Counter("stream_infer_labels", "Valid labels consumed (the labels topic)",
                              registry=r)
        self.alerted = Counter("stream_infer_alerts", "Alerts produced", registry=r)
        self.dead = Counter("stream_infer_dead_letters", "Records dead-lettered", ["reason"],
                            registry=r)
        self.misses = Counter("stream_infer_feature_misses",
                              "Feature values missing (NaN) at scoring", registry=r)
        self.degraded = Counter("stream_infer_degraded_events",
                                "Events scored without the feature store (fail-open)", registry=r)
        self.store_errors = Counter("stream_infer_feature_store_errors",
                                    "Batches whose feature lookup failed (fail-open)", registry=r)
        self.degraded_mode = Gauge("stream_infer_degraded",
                                   "1 while batches are scored without the feature store",
                                   registry=r)
        self.delivery_failures = Counter("stream_infer_delivery_failures",
                                         "Batches whose outputs were not acknowledged", registry=r)
        self.outages = Counter("stream_infer_dependency_outages",
                               "Times a dependency was down and consumption paused", registry=r)
        self.paused = Gauge("stream_infer_paused", "1 while consumption is paused", registry=r)
        self.batch_size = Histogram("stream_infer_batch_size", "Records per batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.stage = Histogram("stream_infer_stage_seconds", "Time per batch in each stage",
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.latency = Histogram("stream_infer_event_to_alert_seconds",
                                 "Input record timestamp to alert acknowledged",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.model = Gauge("stream_infer_model_info", "The models being served",
                           ["name", "version", "role"], registry=r)
        self.shadow_alerts = Counter("stream_infer_shadow_alerts",
                                     "Events a shadow model would have alerted on",
                                     ["name", "version"], registry=r)
        self.reloads = Counter("stream_infer_model_reloads",
                               "Model reload attempts (refused = the old models kept serving)",
                               ["result"], registry=r)
        self.last_loop = time.monotonic()
        self.drift: DriftTracker | None = None

    def watch_drift(self, tracker: DriftTracker) -> None:
        """Export ``tracker``'s PSI per model, feature and window (:class:`DriftCollector`)."""
        if self.drift is None:
            self.registry.register(DriftCollector(tracker))
            self.drift = tracker

    def watch_windows(self, stats: LiveStats) -> None:
        """Export the window features' counts (:class:`WindowCollector`)."""
        self.registry.register(WindowCollector(stats))

    def serving(self, name: str, version: str,
                shadows: Iterable[tuple[str, str]] = ()) -> None:
        """The champion (and shadows) now served; the previous set is forgotten."""
        self.model.clear()
        self.model.labels(name=name, version=version, role="champion").set(1)
        shadows = list(shadows)
        for shadow_name, shadow_version in shadows:
            self.model.labels(name=shadow_name, version=shadow_version, role="shadow").set(1)
        if self.drift is not None:
            self.drift.keep([(name, version), *shadows])

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels(result="ok" if ok else "refused").inc()

    def loop_turned(self) -> None:
        self.last_loop = time.monotonic()

    def batch_done(self, outcome: BatchOutcome, emit_s: float, latency_ms: list[int]) -> None:
        c = outcome.counts
        self.consumed.inc(c.consumed)
        self.scored.inc(c.scored)
        self.labels.inc(c.labels)
        self.alerted.inc(c.alerted)
        self.misses.inc(c.feature_misses)
        self.degraded.inc(c.degraded)
        self.store_errors.inc(c.store_errors)
        if c.scored:
            self.degraded_mode.set(1 if c.degraded else 0)
        for reason, count in c.dlq_reasons.items():
            self.dead.labels(reason=reason).inc(count)
        for model, count in c.shadow_alerts.items():
            name, _, version = model.rpartition(":")
            self.shadow_alerts.labels(name=name, version=version).inc(count)
        self.batch_size.observe(c.consumed)
        for stage, seconds in outcome.stage_seconds.items():
            self.stage.labels(stage=stage).observe(seconds)
        self.stage.labels(stage="emit").observe(emit_s)
        for ms in latency_ms:
            self.latency.observe(max(ms, 0) / 1000)

    def dependency_down(self, paused: bool) -> None:
        if paused:
            self.outages.inc()
        self.paused.set(1 if paused else 0)

    def delivery_failed(self) -> None:
        self.delivery_failures.inc()


class WindowCollector(Collector):
    """``stream_infer_window_events_total{group,outcome}``: computed, late (older than an event
    their entity had: served as of their time), too_late (beyond the allowed lateness: no
    window features), duplicate, missing_key, ahead (stamped beyond
    ``redis.windows_max_ahead_ms`` ahead of the worker's clock: no window features);
    ``stream_infer_window_labels_total{outcome}``: applied, ignored (duplicates, older
    corrections), pending (waiting for their event);
    ``stream_infer_window_retries_total{group}``: batches computed again after losing a
    race for the shared state to another worker;
    ``stream_infer_window_wait_seconds_total{group}``: time batches waited for another
    worker's turn on a group every worker shares (its lease);
    ``stream_infer_window_log_bytes_total{group,direction}``: bytes of entity logs read from
    and written to Redis (a batch moves the whole log of every entity it touches);
    ``stream_infer_window_state_lost_total{group}``: reads that found a group's state lost
    or rolled back in Redis (its watermark went back)."""

    def __init__(self, stats: LiveStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        events = CounterMetricFamily("stream_infer_window_events",
                                     "Events per window group, by what their windows did",
                                     labels=["group", "outcome"])
        for group, counts in self.stats.groups.items():
            for outcome, value in (("computed", counts.computed), ("late", counts.late),
                                   ("too_late", counts.too_late),
                                   ("duplicate", counts.duplicates),
                                   ("missing_key", counts.missing_key),
                                   ("ahead", counts.ahead)):
                events.add_metric([group, outcome], value)
        labels = CounterMetricFamily("stream_infer_window_labels",
                                     "Labels applied to the window state, by outcome",
                                     labels=["outcome"])
        for outcome in ("applied", "ignored", "pending"):
            labels.add_metric([outcome], getattr(self.stats.labels, outcome))
        retries = CounterMetricFamily(
            "stream_infer_window_retries",
            "Window batches computed again: another worker's write of the state they read "
            "came first", labels=["group"])
        for group in self.stats.groups:
            retries.add_metric([group], self.stats.retries.get(group, 0))
        waits = CounterMetricFamily(
            "stream_infer_window_wait_seconds",
            "Seconds window batches waited for another worker's turn on a shared group",
            labels=["group"])
        for group in self.stats.groups:
            waits.add_metric([group], self.stats.waits.get(group, 0.0))
        moved = CounterMetricFamily(
            "stream_infer_window_log_bytes",
            "Bytes of entity logs the window batches read from and wrote to Redis",
            labels=["group", "direction"])
        for group in self.stats.groups:
            for direction in ("read", "written"):
                moved.add_metric([group, direction],
                                 self.stats.log_bytes.get((group, direction), 0))
        lost = CounterMetricFamily(
            "stream_infer_window_state_lost",
            "Window state reads that found a group's state lost or rolled back in Redis "
            "(its watermark went back): a restart without persistence, a flush, a failover",
            labels=["group"])
        for group in self.stats.groups:
            lost.add_metric([group], self.stats.state_lost.get(group, 0))
        return [events, labels, retries, waits, moved, lost]


class ConsumerCollector(Collector):
    """Lag per partition and rebalances, read from the consumer at scrape time."""

    def __init__(self, lag: Callable[[], Mapping[tuple[str, int], int]],
                 rebalances: Callable[[], int],
                 dropped_spans: Callable[[], int] = lambda: 0) -> None:
        self.lag, self.rebalances, self.dropped_spans = lag, rebalances, dropped_spans

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily("stream_infer_consumer_lag",
                                "Records behind the high watermark", labels=["topic", "partition"])
        try:
            for (topic, partition), behind in sorted(self.lag().items()):
                lag.add_metric([topic, str(partition)], behind)
        except Exception as exc:  # a scrape must never fail because of the consumer
            log.debug("lag unavailable: %s", exc)
        rebalances = GaugeMetricFamily("stream_infer_rebalances",
                                       "Partition assignment changes since start")
        rebalances.add_metric([], self.rebalances())
        dropped = GaugeMetricFamily("stream_infer_spans_dropped",
                                    "Spans the trace exporters could not deliver")
        dropped.add_metric([], self.dropped_spans())
        return [lag, rebalances, dropped]


class DriftCollector(Collector):
    """PSI against the training profile, computed from the tracker's windows at scrape time.

    A window below its minimum sample exports its row count alone; a model without a
    profile exports nothing.
    """

    def __init__(self, tracker: DriftTracker) -> None:
        self.tracker = tracker

    def collect(self) -> Iterable[Metric]:
        rows = GaugeMetricFamily("stream_infer_psi_rows",
                                 "Rows scored in the drift window", labels=WINDOW_LABELS)
        families = [GaugeMetricFamily(name, text, labels=[*WINDOW_LABELS, "feature"])
                    for name, text in PSI_FAMILIES]
        try:
            for name, version, window in self.tracker.readings():
                rows.add_metric([name, version, window.window], window.rows)
                for f in window.features:
                    labels = [name, version, window.window, f.feature]
                    for family, value in zip(families, (f.psi, f.no_drift.expected,
                                                        f.no_drift.p99), strict=True):
                        family.add_metric(labels, value)
        except Exception as exc:  # a scrape must never fail because of drift
            log.warning("drift unavailable: %s", exc)
        return [rows, *families]


WINDOW_LABELS = ["model", "version", "window"]
PSI_FAMILIES = (
    ("stream_infer_psi", "Population stability index against the training profile"),
    ("stream_infer_psi_expected",
     "PSI expected with no drift for the window's rows: (bins - 1)(1/rows + 1/training rows)"),
    ("stream_infer_psi_expected_p99", "The 99th percentile of PSI with no drift"),
)
Check = Callable[[], tuple[bool, str]]


class Endpoints:
    """``/metrics``, ``/healthz`` (the loop turns) and ``/readyz`` (every check passes).

    Each request is served on a thread of its own, so a slow readiness check (a broker or
    Redis timing out) never holds up a liveness probe or a scrape.
    """

    def __init__(self, metrics: ServiceMetrics, ready_checks: Mapping[str, Check],
                 stale_after_s: float = 60.0) -> None:
        self.metrics = metrics
        self.ready_checks = ready_checks
        self.stale_after_s = stale_after_s
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._server: WSGIServer | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return iter(self._metrics_app(environ, start_response))
        if path == "/healthz":
            idle = time.monotonic() - self.metrics.last_loop
            return _reply(start_response, idle < self.stale_after_s,
                          f"loop turned {idle:.1f}s ago")
        if path == "/readyz":
            results = {name: _safe(check) for name, check in self.ready_checks.items()}
            body = "\n".join(f"{n}: {'ok' if ok else 'FAIL'} {why}" for n, (ok, why) in
                             results.items())
            return _reply(start_response, all(ok for ok, _ in results.values()), body)
        return _reply(start_response, False, "not found", status="404 Not Found")

    def start(self, host: str, port: int) -> int:
        """Serve in a daemon thread (:func:`serve_in_thread`); return the bound port
        (``port=0`` picks one)."""
        self._server = serve_in_thread(
            self, host, port, "metrics and health",
            "observability.http_port; worker i of --workers N uses http_port + i")
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _safe(check: Check) -> tuple[bool, str]:
    try:
        return check()
    except Exception as exc:
        return False, type(exc).__name__


def _reply(start_response: Any, ok: bool, body: str,
           status: str | None = None) -> Iterator[bytes]:
    start_response(status or ("200 OK" if ok else "503 Service Unavailable"),
                   [("Content-Type", "text/plain; charset=utf-8")])
    return iter([(body + "\n").encode()])


def serve_in_thread(app: Any, host: str, port: int, what: str, setting: str) -> WSGIServer:
    """Serve the WSGI ``app`` on ``host:port`` (``port=0`` picks one) in a daemon thread, a
    thread per request: a slow request never holds up another. A port that cannot be bound
    (taken, or not this host's) is a :class:`ConfigError` naming it, ``what`` is served and
    the ``setting`` that chose the port, not a traceback."""
    try:
        server = make_server(host, port, app, server_class=_ThreadingWSGIServer,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot serve {what} on {host}:{port} ({setting}): {exc}") from exc
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request still running never delays stop()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
