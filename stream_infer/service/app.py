"""The composition root: settings in, a wired :class:`Runner` out. Nothing else wires adapters.

The Kafka, Redis, metrics and tracing adapters are imported by the functions that wire them,
so a command that needs none of them (a replay of a file) does not pay for their imports.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import msgspec
from opentelemetry import trace

from ..adapters.schema_registry import schema_resolver
from ..adapters.xgboost import XGBoostModel
from ..config import Settings
from ..decode import make_decoder, make_label_decoder
from ..drift import DriftTracker, Profile, window
from ..enrich import FeatureStore
from ..errors import ModelError
from ..features import from_settings
from ..features.live import LiveWindows
from ..pipeline import Pipeline, TopicPartition, Topics, WindowFeatures
from ..registry import read_manifest, resolve
from ..retry import Backoff
from ..runner import Runner, RunnerConfig, RunStats
from ..score import Model, ModelSet
from .gc_tuning import steady_state_gc
from .reload import ModelWatch

if TYPE_CHECKING:
    from ..adapters.otel import Tracing
    from .metrics import Endpoints, ServiceMetrics

log = logging.getLogger(__name__)


def load_models(settings: Settings, model_dirs: Sequence[Path],
                drift: DriftTracker | None = None) -> ModelSet:
    """Champion and shadows from their registry directories, verified, planned together;
    with ``drift``, each model with a reference profile counts its batches there.

    A shadow that resolves to the champion's version (a challenger just promoted, its
    shadow entry still in the config) is served once, as the champion."""
    champion_dir = Path(model_dirs[0]).resolve()
    promoted = [d for d in model_dirs[1:] if Path(d).resolve() == champion_dir]
    if promoted:
        log.info("%s is the champion now: not also shadowed", model_dirs[0])
        model_dirs = [model_dirs[0], *(d for d in model_dirs[1:]
                                       if Path(d).resolve() != champion_dir)]
    models: list[Model] = [XGBoostModel.from_settings(settings.model, d) for d in model_dirs]
    if drift is not None:
        models = [drift.watch(m, _profile(d)) for m, d in zip(models, model_dirs, strict=True)]
    champion, *shadows = models
    windows = from_settings(settings).names if settings.windows else ()
    return ModelSet.build(champion, settings.features, shadows, windows=windows)


def _profile(model_dir: Path) -> Profile | None:
    """The manifest's reference profile; None (no drift metrics, said in the log) without a
    usable one."""
    data = read_manifest(model_dir).profile
    if not data:
        log.info("%s: no reference profile in the manifest: no drift metrics", model_dir)
        return None
    try:
        return Profile.from_json(data)
    except ModelError as exc:
        log.warning("%s: the reference profile is unusable, no drift metrics: %s",
                    model_dir, exc)
        return None


def _drift(settings: Settings, metrics: ServiceMetrics | None) -> DriftTracker | None:
    """The tracker ``metrics`` exports (made on first use); None when drift is off."""
    cfg = settings.drift
    if metrics is None or not cfg.enabled:
        return None
    if metrics.drift is None:
        metrics.watch_drift(DriftTracker([window(w, cfg.buckets) for w in cfg.windows],
                                         cfg.min_sample))
    return metrics.drift


def model_watch(settings: Settings, metrics: ServiceMetrics | None = None) -> ModelWatch:
    """The hot-reload watch over the configured champion and shadows."""
    cfg = settings.model

    def on_result(scoring: ModelSet | None) -> None:
        if metrics is None:
            return
        metrics.reloaded(scoring is not None)
        if scoring is not None:
            _serving(metrics, scoring)

    drift = _drift(settings, metrics)
    return ModelWatch(cfg.dir, cfg.refs(), lambda dirs: load_models(settings, dirs, drift),
                      poll_s=cfg.reload_poll_s, on_result=on_result)


def build_pipeline(settings: Settings, store: FeatureStore, model: Model | ModelSet,
                   tracer: trace.Tracer | None = None,
                   windows: WindowFeatures | None = None) -> Pipeline:
    """The stages for this configuration (shared by the runner, replay and Faust); with
    ``windows``, the records of ``kafka.labels_topic`` are labels for them."""
    kafka = settings.kafka
    scoring = model if isinstance(model, ModelSet) else ModelSet.build(model, settings.features)
    labels_topic = kafka.labels_topic if windows is not None else None
    resolver = schema_resolver(settings.decode)
    return Pipeline(
        decoder=make_decoder(settings.decode, resolver),
        models=scoring,
        store=store,
        topics=Topics(kafka.alert_topic, kafka.dlq_topic, kafka.scores_topic, labels_topic),
        windows=windows,
        label_decoder=make_label_decoder(settings.decode, resolver) if labels_topic else None,
        labels_max_ahead_ms=settings.redis.windows_max_ahead_ms,
        encoder=msgspec.json.Encoder().encode,
        on_store_error=settings.redis.on_error,
        tracer=tracer,
        reasons_top_k=settings.model.reasons_top_k,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """What either engine's runner is built from, and the store's health probe."""

    pipeline: Pipeline
    config: RunnerConfig
    store_ok: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Probes:
    """What the health endpoints read, handed over by whoever built the parts: the
    consumer's lag and rebalances, whether the feature store answers, and why the group
    counts as stuck (a sentence; None while it is not, or for an engine without the watch)."""

    lag: Callable[[], Mapping[TopicPartition, int]]
    rebalances: Callable[[], int]
    store_ok: Callable[[], bool]
    stalled: Callable[[], str | None] = lambda: None


@dataclass(frozen=True, slots=True)
class Service:
    """A wired native service: the runner, and the probes its endpoints read."""

    runner: Runner
    probes: Probes


def prepare(settings: Settings, metrics: ServiceMetrics | None = None,
            tracer: trace.Tracer | None = None) -> Prepared:
    """Everything a runner needs but its Kafka clients, for either engine: topics checked
    (or created), models loaded and verified, Redis, the pipeline, the loop's bounds."""
    from ..adapters.kafka import ensure_topics
    from ..adapters.redis import RedisFeatureStore

    kafka = settings.kafka
    created = ensure_topics(
        kafka.common_config(), [*input_topics(settings), *kafka.output_topics()],
        create=kafka.create_topics, partitions=kafka.topic_partitions,
        replication_factor=kafka.replication_factor,
    )
    if created:
        log.info("created topics %s", created)
    if tracer is not None and settings.tracing.enabled and settings.tracing.kafka_topic:
        ensure_topics(kafka.common_config(), [settings.tracing.kafka_topic],
                      create=kafka.create_topics, partitions=1,
                      replication_factor=kafka.replication_factor)
    cfg = settings.model
    scoring = load_models(settings, [resolve(cfg.dir, n, v) for n, v in cfg.refs()],
                          _drift(settings, metrics))
    for role, model in [("champion", scoring.champion), *(("shadow", m) for m in scoring.shadows)]:
        log.info("serving %s %s version %s (%d features, threshold %.3f)", role, model.name,
                 model.version, len(model.features), model.threshold)
    if metrics is not None:
        _serving(metrics, scoring)
    redis = settings.redis
    store = RedisFeatureStore.from_settings(redis)
    store.check_credentials()
    windows = live_windows(settings)
    if windows is not None and metrics is not None:
        metrics.watch_windows(windows.stats)
    pipeline = build_pipeline(settings, store, scoring, tracer, windows)
    config = RunnerConfig(
        max_records=settings.batch.max_records,
        max_wait_s=settings.batch.max_wait_ms / 1000,
        flush_timeout_s=kafka.delivery_timeout_ms / 1000 + 5,
        backoff=Backoff(redis.retry_backoff_ms / 1000, redis.retry_backoff_max_ms / 1000),
        max_links=settings.tracing.max_links,
        max_in_flight=settings.batch.max_in_flight,
    )
    return Prepared(pipeline, config, store.ping)


def live_windows(settings: Settings) -> LiveWindows | None:
    """The window features of ``[windows.*]``, their state in Redis (None without any);
    refuses, in production, a Redis that may evict that state."""
    if not settings.windows:
        return None
    from ..adapters.redis import connect
    from ..adapters.redis_windows import RedisWindowStore, check_eviction

    redis = settings.redis
    client = connect(redis.model_copy(update={"socket_timeout_ms": redis.windows_timeout_ms}))
    check_eviction(client, production=settings.profile == "production")
    windows = LiveWindows(from_settings(settings), RedisWindowStore(client),
                          lease_ms=redis.windows_lease_ms, wait_ms=redis.windows_wait_ms,
                          lease_shards=redis.windows_lease_shards,
                          max_ahead_ms=redis.windows_max_ahead_ms)
    groups = ", ".join(f"{w.name} ({w.prefix})" for w in windows.definition.windows)
    log.info("window features of %s; labels from %s", groups,
             settings.kafka.labels_topic or "no topic (kafka.labels_topic unset)")
    return windows


def input_topics(settings: Settings) -> list[str]:
    """What the service consumes: the events, and the labels when a window needs them."""
    kafka = settings.kafka
    labelled = any(w.uses_labels for w in from_settings(settings).windows)
    if labelled and kafka.labels_topic:
        return [*kafka.input_topics, kafka.labels_topic]
    return list(kafka.input_topics)


def build_runner(settings: Settings, metrics: ServiceMetrics | None = None,
                 tracer: trace.Tracer | None = None) -> Runner:
    """The native service's runner (see :func:`build_service`)."""
    return build_service(settings, metrics, tracer).runner


def build_service(settings: Settings, metrics: ServiceMetrics | None = None,
                  tracer: trace.Tracer | None = None) -> Service:
    """Check topics, load the model, connect to Redis and Kafka; fail fast with clear errors."""
    from ..adapters.kafka import KafkaSink, KafkaSource, KafkaTransactions

    prepared = prepare(settings, metrics, tracer)
    kafka = settings.kafka
    source = KafkaSource(kafka.consumer_config(), input_topics(settings))
    transactions = (KafkaTransactions(kafka.transactional_config(), source.consumer,
                                      kafka.delivery_timeout_ms / 1000)
                    if kafka.exactly_once else None)
    runner = Runner(
        source,
        KafkaSink(kafka.producer_config()),
        prepared.pipeline,
        prepared.config,
        observer=metrics,
        reloader=model_watch(settings, metrics),
        transactions=transactions,
    )
    return Service(runner, Probes(lambda: source.lag, lambda: source.rebalances,
                                  prepared.store_ok, source.watch.stalled))


def start_endpoints(settings: Settings, service: Service, metrics: ServiceMetrics,
                    tracing: Tracing | None = None) -> Endpoints | None:
    """Serve /metrics, /healthz and /readyz for this service (None when disabled)."""
    cfg = settings.observability
    if cfg.http_port is None:
        return None
    endpoints = health_endpoints(settings, service.runner, metrics, service.probes, tracing)
    port = endpoints.start(cfg.http_host, cfg.http_port)
    log.info("metrics and health on http://%s:%d/metrics, /healthz, /readyz",
             cfg.http_host, port)
    return endpoints


def health_endpoints(settings: Settings, runner: Runner, metrics: ServiceMetrics,
                     probes: Probes, tracing: Tracing | None) -> Endpoints:
    """The metrics and probes of a runner, whichever engine feeds it (not yet serving).

    Readiness: partitions assigned (and the group not stuck, see :class:`Probes`), the
    broker reachable, Redis answering, and the model in service now (after a hot reload, the
    new one).
    """
    from ..adapters.kafka import broker_reachable
    from .metrics import ConsumerCollector, Endpoints

    source, pipeline = runner.source, runner.pipeline
    metrics.registry.register(ConsumerCollector(
        probes.lag, probes.rebalances, lambda: tracing.dropped if tracing else 0))
    broker_ok = broker_reachable(settings.kafka.common_config())

    def partitions() -> tuple[bool, str]:
        held, stalled = f"{len(source.assigned)} assigned", probes.stalled()
        return (False, f"{held}; {stalled}") if stalled else (bool(source.assigned), held)

    checks = {
        "partitions": partitions,
        "broker": lambda: (broker_ok(), settings.kafka.bootstrap_servers),
        "redis": lambda: (probes.store_ok(), ""),
        "model": lambda: (True, f"{pipeline.model.name} {pipeline.model.version}"),
    }
    return Endpoints(metrics, checks, stale_after_s=settings.observability.stale_loop_s)


def serve(runner: Runner, *, max_events: int | None = None) -> RunStats:
    """Run until SIGTERM/SIGINT (finish the batch, flush, commit, leave) or ``max_events``.

    SIGHUP reloads the models at the next batch boundary. Garbage collection is tuned for
    the batch loop meanwhile (:mod:`stream_infer.service.gc_tuning`).
    """

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        runner.stop()

    def _reload(signum: int, frame: FrameType | None) -> None:
        if isinstance(runner.reloader, ModelWatch):
            runner.reloader.request()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _reload)
    try:
        with steady_state_gc():
            return runner.run(max_events=max_events)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serving(metrics: ServiceMetrics, scoring: ModelSet) -> None:
    champion = scoring.champion
    metrics.serving(champion.name, champion.version,
                    [(m.name, m.version) for m in scoring.shadows])
