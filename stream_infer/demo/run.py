"""``stream-infer demo``: the real service on an embedded Tansu broker and a real redis-server.

Everything is started on free local ports and stopped at the end: features are loaded into
Redis, simulated traffic (with a small share of malformed records) is produced, and the same
runner as ``stream-infer run`` scores it, with a progress line and a summary.
"""

from __future__ import annotations

import itertools
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

from ..config import Settings, load_settings
from ..decode import encode_avro_transaction
from ..offline import simulate
from ..pipeline import BatchOutcome
from ..reservoir import Reservoir
from ..runner import NoObserver, Runner, RunStats
from .apache_kafka import ApacheKafka
from .embedded import EmbeddedBroker, EmbeddedRedis

CHUNK = 50_000


BrokerKind = Literal["tansu", "kafka"]
BROKER_NAMES = {"tansu": "Tansu", "kafka": "Apache Kafka"}


def start_broker(kind: BrokerKind) -> EmbeddedBroker | ApacheKafka:
    """A broker of ``kind`` on a free loopback port, not yet started (a context manager)."""
    return ApacheKafka() if kind == "kafka" else EmbeddedBroker()


def demo_sections(bootstrap: str, redis_url: str, models_dir: Path) -> dict[str, dict[str, Any]]:
    """The demo's configuration as settings sections: fast group joins, the simulator's
    feature views, the demo model (``stream-infer dev up`` writes them as TOML).

    Tansu answers a fetch only when ``fetch.wait.max.ms`` expires, so the demo shortens it
    (Apache Kafka answers as soon as ``fetch.min.bytes`` are there).
    """
    return {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_ms": 6000,
                  "topic_partitions": 4, "commit_interval_ms": 1000,
                  "consumer": {"fetch.wait.max.ms": 10, "log.connection.close": False},
                  "producer": {"log.connection.close": False}},
        "batch": {"max_records": 1000, "max_wait_ms": 10},
        "redis": {"url": redis_url},
        "features": {
            "card": {"key": "card:{card_id}", "fields": list(simulate.CARD_FIELDS)},
            "merchant": {"key": "merchant:{merchant_id}", "fields": list(simulate.MERCHANT_FIELDS)},
        },
        "model": {"dir": str(models_dir), "name": "demo", "version": "latest"},
    }


def demo_settings(bootstrap: str, redis_url: str, models_dir: Path) -> Settings:
    """The demo's configuration (:func:`demo_sections`)."""
    return load_settings(None, **demo_sections(bootstrap, redis_url, models_dir))


def encode_events(
    events: Iterable[dict[str, Any]], fmt: str = "json", schema_id: int = 1
) -> Iterator[tuple[bytes | None, bytes]]:
    """``(key, value)`` pairs keyed by card id, as JSON or Confluent-framed Avro."""
    for event in events:
        key = str(event["card_id"]).encode()
        if fmt == "avro":
            yield key, encode_avro_transaction(event, schema_id)
        else:
            yield key, json.dumps(event, separators=(",", ":")).encode()


def with_malformed(
    pairs: Iterable[tuple[bytes | None, bytes]], rate: float, seed: int = 1
) -> Iterator[tuple[bytes | None, bytes]]:
    """Replace a ``rate`` share of values with typical bad input, to exercise the DLQ."""
    rnd = random.Random(seed)
    breakers: list[Callable[[bytes], bytes]] = [
        lambda v: v[: len(v) // 2],
        lambda v: v.replace(b'"amount":', b'"amount":-', 1),
        lambda v: v.replace(b'"currency":"', b'"currency":"x', 1),
        lambda v: b"\x00\x01 not an event",
    ]
    for key, value in pairs:
        yield (key, rnd.choice(breakers)(value)) if rnd.random() < rate else (key, value)


def run_demo(
    *, events: int | None, rate: float, bad_rate: float, models_dir: Path | None, out: TextIO,
    broker_kind: BrokerKind = "tansu",
) -> RunStats:
    """Start the embedded services, run the pipeline, print progress and a summary.

    ``broker_kind``: ``tansu`` (shipped in a wheel) or ``kafka`` (Apache Kafka, which needs
    Java 17+ and Maven; its jars are fetched once and cached)."""
    from ..adapters.kafka import produce_stream
    from ..adapters.redis import connect
    from ..offline.features import load_features
    from ..service.app import build_runner, serve

    models = models_dir or default_models_dir()
    with (tempfile.TemporaryDirectory() as tmp, start_broker(broker_kind) as broker,
          EmbeddedRedis() as rds):
        settings = demo_settings(broker.bootstrap_servers, rds.url, models)
        print(f"broker  {BROKER_NAMES[broker_kind]} at {broker.bootstrap_servers} | "
              f"redis at {rds.url}", file=out)
        pop = simulate.make_population(seed=7)
        client = connect(settings.redis)
        for path in simulate.write_feature_csvs(pop, Path(tmp)):
            view = path.name.split("_")[0]
            report = load_features(client, path, view, settings.features[view])
            print(f"loaded  {report.rows:,} {view} feature rows into Redis", file=out)
        runner = build_runner(settings)
        print(f"model   {runner.pipeline.model.name} v{runner.pipeline.model.version} "
              f"(threshold {runner.pipeline.model.threshold:.3f})", file=out)
        kafka = settings.kafka
        traffic = with_malformed(encode_events(_traffic(pop, events)), bad_rate)
        latency = runner.observer = StartupSplit(runner.clock)

        def produce_when_assigned() -> None:
            while not runner.source.assigned and not runner.stopping.wait(0.05):
                pass
            latency.offered_at_ms = runner.clock()
            produce_stream(load_generator_config(settings), kafka.input_topics[0], traffic,
                           rate_per_s=rate, should_stop=runner.stopping.is_set)

        threading.Thread(target=produce_when_assigned, daemon=True).start()
        progress = _Progress(runner, out)
        progress.start()
        stats = serve(runner, max_events=events)
        progress.stop()
        _summary(stats, out, latency)
        _sample_alert(settings, out)
        return stats


def load_generator_config(settings: Settings) -> dict[str, Any]:
    """The demo's traffic producer: the service's producer options, not idempotent.

    An idempotent producer holds its first records until the broker grants it a producer
    id, which Tansu takes half a second to do; those records would carry that wait into the
    event-to-alert latency though the service never saw them. The traffic is generated, so
    a retry that duplicates a record costs nothing.
    """
    return {**settings.kafka.producer_config(), "enable.idempotence": False}


class StartupSplit(NoObserver):
    """Event-to-alert latency split at the first batch acknowledged.

    Alerts on events produced before it measure the start-up (the consumer finding its
    offsets, its first fetch, the first batch through every stage) and are kept apart;
    those on events produced after it are the steady state the summary reports.
    """

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.offered_at_ms: int | None = None
        self.first_ack_ms: int | None = None
        self.startup = Reservoir()
        self.steady = Reservoir()

    def batch_done(self, outcome: BatchOutcome, emit_s: float, latency_ms: list[int]) -> None:
        if self.first_ack_ms is None:
            self.first_ack_ms = self.clock()
        for produced, waited in zip(outcome.alert_source_ms, latency_ms, strict=True):
            (self.steady if produced >= self.first_ack_ms else self.startup).extend([waited])

    def startup_s(self) -> float | None:
        """Seconds from the first record offered to the first batch acknowledged."""
        if self.offered_at_ms is None or self.first_ack_ms is None:
            return None
        return max(self.first_ack_ms - self.offered_at_ms, 0) / 1000


SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
"""The demo model shipped in the package (a copy of the repository's ``models/demo``)."""


def default_models_dir() -> Path:
    """``./models`` if it holds the demo model, else the copy shipped in the package."""
    here = Path("models")
    return here if (here / "demo").is_dir() else SHIPPED_MODELS


def _traffic(pop: simulate.Population, events: int | None) -> Iterator[dict[str, Any]]:
    now_ms = time.time_ns() // 1_000_000
    chunks = itertools.count() if events is None else range(-(-events // CHUNK))
    for n in chunks:
        count = CHUNK if events is None else min(CHUNK, events - n * CHUNK)
        yield from simulate.transactions(pop, count=count, seed=1000 + n, start_ms=now_ms)


class _Progress(threading.Thread):
    """A live one-line display on a terminal; a line every 5 s otherwise."""

    def __init__(self, runner: Runner, out: TextIO) -> None:
        super().__init__(daemon=True)
        self.runner, self.out = runner, out
        self.live = out.isatty()
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.done.wait(1.0 if self.live else 5.0):
            stats = self.runner.stats
            c = stats.counts
            line = (f"{time.monotonic() - started:6.1f}s  consumed {c.consumed:>9,}  "
                    f"alerts {c.alerted:>6,}  dlq {c.dead_lettered:>5,}  "
                    f"{stats.events_per_s():>9,.0f} events/s")
            print(f"\r{line}" if self.live else line, end="" if self.live else "\n",
                  file=self.out, flush=True)

    def stop(self) -> None:
        self.done.set()
        self.join()
        if self.live:
            print(file=self.out)


def _summary(stats: RunStats, out: TextIO, latency: StartupSplit | None = None) -> None:
    c = stats.counts
    seconds = (stats.last_batch_at or 0) - (stats.first_batch_at or 0)
    steady = latency.steady if latency and latency.steady.count else stats.latency_ms
    p50, p99 = steady.percentile(50), steady.percentile(99)
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(c.dlq_reasons.items())) or "none"
    share = c.alerted / c.scored if c.scored else 0.0
    print("summary", file=out)
    print(f"  events          {c.consumed:>9,} in {seconds:.1f} s "
          f"({stats.events_per_s():,.0f} events/s)", file=out)
    print(f"  scored          {c.scored:>9,}", file=out)
    print(f"  alerts          {c.alerted:>9,}  ({share:.2%} of scored)", file=out)
    print(f"  dead letters    {c.dead_lettered:>9,}  ({reasons})", file=out)
    print(f"  feature misses  {c.feature_misses:>9,}", file=out)
    if p50 is not None and p99 is not None:
        print(f"  event-to-alert  p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=out)
    if latency is not None:
        _startup(latency, out)
    total = sum(stats.stage_seconds.values())
    if total:
        shares = ", ".join(f"{stage} {seconds / total:.0%}"
                           for stage, seconds in stats.stage_seconds.items())
        print(f"  time in stages  {shares}", file=out)


def _startup(latency: StartupSplit, out: TextIO) -> None:
    """The start-up line: how long until the first batch was acknowledged, and what the
    alerts on events produced meanwhile waited (not in the event-to-alert figures, unless
    everything was; then it says so)."""
    seconds, worst = latency.startup_s(), latency.startup.percentile(100)
    took = "no batch acknowledged" if seconds is None else (
        f"{seconds:.2f} s from the first event offered to the first batch acknowledged")
    if not latency.startup.count:
        print(f"  start-up        {took}", file=out)
    elif not latency.steady.count:
        print(f"  start-up        {took}; every alert came before it (so they are above)",
              file=out)
    else:
        print(f"  start-up        {took}; its {latency.startup.count} alerts, up to "
              f"{worst:.0f} ms, are not above", file=out)


def _sample_alert(settings: Settings, out: TextIO) -> None:
    from ..adapters.kafka import read_one

    value = read_one(settings.kafka.common_config(), settings.kafka.alert_topic)
    if value is not None:
        print(f"a fraud alert, as read back from topic {settings.kafka.alert_topic!r}:", file=out)
        print("  " + json.dumps(json.loads(value), indent=None), file=out)
