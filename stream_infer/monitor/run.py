"""``monitor run`` and ``monitor report``'s reading: the join fed from Kafka.

``monitor run`` is a consumer of its own group (default ``<kafka.group_id>-monitor``) on the
scores and labels topics, apart from the scoring service, so the scoring loop pays nothing for
it. It never commits an offset: its state is a function of the records (:mod:`.join`), so on
every start it reads both topics again from the beginning of their retention and rebuilds the
same state, and a restart or a replayed record changes no figure. The price is start-up time,
a read of the retained topics. Keep the topics' retention at least the join's TTL (35 days
by default); longer retention only slows the start. The join needs every partition of both
topics, so run one instance per group: a second one would split the partitions between them.

``monitor report`` reads each topic whole, to every partition's end of log (the read is
verified, not taken from a watermark), or JSON-lines files, and keeps the scores with event
time in ``[--from, --to)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..decode import make_label_decoder
from ..errors import ConfigError
from .cohorts import windows
from .feed import Feed, feed_files
from .join import JoinState
from .metrics import MetricsServer, Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorOptions:
    group: str | None = None
    host: str = "0.0.0.0"
    port: int = 9465
    horizon_days: int = 7
    k: int = 100
    ttl_days: int = 35
    max_scores: int = 2_000_000
    max_labels: int = 2_000_000
    refresh_s: float = 15.0


def topics(settings: Settings) -> tuple[str, str]:
    """The scores and labels topics, which the monitor cannot do without."""
    kafka = settings.kafka
    if not kafka.scores_topic or not kafka.labels_topic:
        raise ConfigError("the monitor reads kafka.scores_topic and kafka.labels_topic: set both")
    return kafka.scores_topic, kafka.labels_topic


def run_monitor(settings: Settings, options: MonitorOptions, *,
                stop: threading.Event | None = None,
                clock: Callable[[], float] = time.time) -> Feed:
    """Consume until ``stop`` is set, publishing figures every ``refresh_s``; the feed's
    counts at the end."""
    from ..adapters.kafka import KafkaSource

    scores_topic, labels_topic = topics(settings)
    stop = stop or threading.Event()
    state = JoinState(ttl_days=options.ttl_days, max_scores=options.max_scores,
                      max_labels=options.max_labels)
    feed = Feed(state, make_label_decoder(settings.decode))
    group = options.group or f"{settings.kafka.group_id}-monitor"
    config = {**settings.kafka.consumer_config(), "group.id": group,
              "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    server = MetricsServer()
    port = server.start(options.host, options.port)
    source = KafkaSource(config, [scores_topic, labels_topic])
    log.info("monitor: group %r on %s and %s, metrics on http://%s:%d/metrics", group,
             scores_topic, labels_topic, options.host, port)
    published = 0.0
    try:
        while not stop.is_set():
            for message in source.consume(5000, 0.5):
                value = message.value()
                (feed.score if message.topic() == scores_topic else feed.label)(value)
            if time.monotonic() - published >= options.refresh_s:
                server.publish(snapshot(feed, as_of_ms=int(clock() * 1000),
                                        horizon_days=options.horizon_days, k=options.k))
                published = time.monotonic()
    finally:
        source.close()
        server.stop()
    return feed


def snapshot(feed: Feed, *, as_of_ms: int, horizon_days: int, k: int) -> Snapshot:
    """The figures a scrape shows, computed from the join now."""
    state = feed.state
    rows = state.rows()
    cohorts = [c for r in rows.values()
               for c in windows(r, as_of_ms=as_of_ms, horizon_days=horizon_days, k=k)]
    last = {key: int(r.label_ms.max()) for key, r in rows.items()
            if len(r) and r.label_ms.max() >= 0}
    return Snapshot(windows=cohorts, last_label_ms=last, records=dict(feed.counts),
                    entries={"scores": state.scores, "labels": state.labels},
                    evicted=dict(state.evicted), watermark_ms=state.watermark_ms)


def read_report_input(settings: Settings | None, feed: Feed, *,
                      scores: list[Path] | None = None, labels: list[Path] | None = None
                      ) -> str:
    """Fill ``feed`` from files when given, else from the configured topics read to their
    end of log; where the records came from, for the report."""
    if scores or labels:
        if not (scores and labels):
            raise ConfigError("monitor report: give both --scores and --labels files, or "
                              "neither (then it reads the topics)")
        feed_files(feed, scores, labels)
        return f"files {', '.join(map(str, [*scores, *labels]))}"
    if settings is None:
        raise ConfigError("monitor report: give --config (to read the topics) or files")
    from ..adapters.kafka import read_to_end

    scores_topic, labels_topic = topics(settings)
    config = settings.kafka.common_config()
    for batch in read_to_end(config, scores_topic):
        for message in batch:
            feed.score(message.value())
    for batch in read_to_end(config, labels_topic):
        for message in batch:
            feed.label(message.value())
    return f"topics {scores_topic} and {labels_topic} (to each partition's end of log)"
