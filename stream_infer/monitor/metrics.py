"""The monitor's Prometheus metrics, served on its own ``/metrics`` port.

The consuming thread computes a :class:`Snapshot` now and then and hands it over whole; a
scrape reads the last one and never touches the join state. A figure with nothing to compute
it on (no alert, no fraud, a window with no mature day) has no sample, rather than a NaN.

By ``model``, ``version`` and ``cohort_window`` (:data:`~.cohorts.WINDOWS`, and
``matured_7d``): ``stream_infer_monitor_events``, ``_labelled_events``, ``_label_coverage``,
``_precision``, ``_recall``, ``_auc``, ``_average_precision``, ``_card_precision_at_k``,
``_label_delay_hours{quantile}``; by ``model`` and ``version``:
``_last_label_timestamp_seconds``. Counters ``_scores_total`` / ``_labels_total`` by
``outcome`` (records read), ``_evicted_total`` by ``reason``; gauges ``_state_entries`` by
``kind`` and ``_watermark_timestamp_seconds``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .cohorts import Cohort

PREFIX = "stream_infer_monitor_"
RATIOS = ("label_coverage", "precision", "recall", "auc", "average_precision",
          "card_precision_at_k")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape shows: the window cohorts, and the join's own counts."""

    windows: list[Cohort] = field(default_factory=list)
    last_label_ms: Mapping[tuple[str, str], int] = field(default_factory=dict)
    records: Mapping[tuple[str, str], int] = field(default_factory=dict)
    entries: Mapping[str, int] = field(default_factory=dict)
    evicted: Mapping[str, int] = field(default_factory=dict)
    watermark_ms: int | None = None


class MonitorCollector(Collector):
    """Turns the latest :class:`Snapshot` into metric families at scrape time."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        labels = ["model", "version", "cohort_window"]
        events = GaugeMetricFamily(PREFIX + "events", "Events scored in the cohort", labels=labels)
        labelled = GaugeMetricFamily(PREFIX + "labelled_events", "Of which have a label",
                                     labels=labels)
        ratios = {name: GaugeMetricFamily(PREFIX + name, _HELP[name], labels=labels)
                  for name in RATIOS}
        delay = GaugeMetricFamily(PREFIX + "label_delay_hours",
                                  "Hours from an event to its first label", labels=[*labels,
                                                                                   "quantile"])
        for c in s.windows:
            key = [c.model, c.version, c.cohort]
            events.add_metric(key, c.events)
            labelled.add_metric(key, c.labelled)
            for name, family in ratios.items():
                value = getattr(c, name)
                if value is not None:
                    family.add_metric(key, value)
            for q, value in (("0.5", c.delay_p50_h), ("0.9", c.delay_p90_h),
                             ("0.99", c.delay_p99_h)):
                if value is not None:
                    delay.add_metric([*key, q], value)
        last = GaugeMetricFamily(PREFIX + "last_label_timestamp_seconds",
                                 "Label time of the newest label joined to the model's scores",
                                 labels=["model", "version"])
        for (model, version), ms in sorted(s.last_label_ms.items()):
            last.add_metric([model, version], ms / 1000)
        yield from [events, labelled, *ratios.values(), delay, last, *self._own(s)]

    @staticmethod
    def _own(s: Snapshot) -> Iterable[Metric]:
        for kind in ("scores", "labels"):
            read = CounterMetricFamily(PREFIX + kind, f"{kind.capitalize()} records read",
                                       labels=["outcome"])
            for (k, outcome), n in sorted(s.records.items()):
                if k == kind:
                    read.add_metric([outcome], n)
            yield read
        evicted = CounterMetricFamily(PREFIX + "evicted", "Join entries dropped",
                                      labels=["reason"])
        for reason, n in sorted(s.evicted.items()):
            evicted.add_metric([reason], n)
        entries = GaugeMetricFamily(PREFIX + "state_entries", "Join entries held",
                                    labels=["kind"])
        for kind, n in sorted(s.entries.items()):
            entries.add_metric([kind], n)
        watermark = GaugeMetricFamily(PREFIX + "watermark_timestamp_seconds",
                                      "Newest event time among the scores read")
        if s.watermark_ms is not None:
            watermark.add_metric([], s.watermark_ms / 1000)
        yield from [evicted, entries, watermark]


_HELP = {
    "label_coverage": "Labelled events / events scored",
    "precision": "Labelled frauds among labelled alerts",
    "recall": "Alerted among labelled frauds",
    "auc": "AUC ROC on mature days, unlabelled counted as genuine",
    "average_precision": "Average precision on mature days, unlabelled counted as genuine",
    "card_precision_at_k": "Mean over mature days of the top-k cards' fraud share",
}


class MetricsServer:
    """``/metrics`` of a :class:`MonitorCollector` on its own registry and port."""

    def __init__(self) -> None:
        self.collector = MonitorCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def publish(self, snapshot: Snapshot) -> None:
        self.collector.snapshot = snapshot

    def start(self, host: str, port: int) -> int:
        """Serve in a daemon thread; the bound port (``port=0`` picks one)."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
