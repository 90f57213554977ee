"""The Faust engine: the native :class:`Runner` and :class:`Pipeline`, driven by a Faust agent.

Faust does the consuming (group membership, fetching, committing acknowledged offsets), the
micro-batching (``stream.take_events(max_records, within=max_wait)``, Faust's ``take`` that
yields the events, whose messages carry the coordinates dead letters and offsets need), the
producing (its aiokafka producer) and the web server. Everything a batch goes through is the
native code: the agent hands each batch to ``Runner.step`` on a worker thread, whose
:class:`AgentBatches` source and sink lead back into Faust. Outputs, schemas, dead letters,
retries, spans and metrics are therefore those of ``stream-infer run``, by construction.

Offsets after delivery. Faust commits an offset once every reference to its message is
acknowledged. The agent takes one more reference on each message of a batch
(``Message.incref``) and acknowledges it only when the runner has stored the batch's
offsets, i.e. after every alert, score and dead letter was acknowledged by the broker
(``acks=all``). A batch that is never stored (the worker stops while Redis is down under
``pause`` or while outputs keep failing, or its partitions are revoked meanwhile) keeps that
reference, so this member never commits it, and leaves Faust's wait-for-acks set, so
shutdown and rebalances do not wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import random
import shutil
import signal
import ssl
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP as FaustTP
from faust.types import EventT, Message, StreamT
from faust.web import Request, Response, View

from ..adapters.otel import Tracing
from ..config import KafkaSecurity, Settings
from ..errors import ConfigError, DeliveryError
from ..pipeline import TopicPartition
from ..records import Headers, HeaderValue, Output
from ..runner import Runner, RunStats
from .app import Prepared, Probes, health_endpoints, input_topics, model_watch, prepare
from .metrics import Endpoints, ServiceMetrics
from .ports import free_port
from .reload import ModelWatch

log = logging.getLogger(__name__)
AGENT = "stream-infer-score"


class FaustRecord:
    """A Faust ``Message`` as the pipeline's :class:`~stream_infer.records.SourceRecord`."""

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        self.message = message

    def topic(self) -> str:
        return self.message.topic

    def partition(self) -> int:
        return self.message.partition

    def offset(self) -> int:
        return self.message.offset

    def key(self) -> bytes | None:
        return self.message.key

    def value(self) -> bytes | None:
        return self.message.value

    def headers(self) -> Headers:
        headers = self.message.headers or []
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return [(key, value) for key, value in pairs]

    def timestamp(self) -> tuple[int, int]:
        """(librdkafka timestamp type, epoch ms): aiokafka's type + 1; Faust keeps seconds."""
        ts = self.message.timestamp
        if ts is None:
            return 0, -1
        return self.message.timestamp_type + 1, round(ts * 1000)


class Settled(enum.Enum):
    """What became of the batch the agent offered: stored, to be retried, or given up."""

    STORED = "stored"
    RETRY = "retry"
    DROPPED = "dropped"


class AgentBatches:
    """The runner's source and sink when a Faust agent hands it one batch at a time.

    Source: :meth:`consume` returns the batch the agent offered, once; :meth:`seek` (the
    runner's rewind after a delivery failure) offers it again, without the records of
    partitions no longer owned; :meth:`store` marks it stored. :meth:`settle` tells the
    agent which of the three happened. Pausing and committing are Faust's: while the agent
    waits for a batch, its stream buffer fills and Faust stops fetching; it commits what
    the agent acknowledged every ``broker_commit_interval``.

    Sink: :meth:`send` produces through the app's Faust producer on the event loop,
    :meth:`flush` waits for every acknowledgement and raises :class:`DeliveryError` unless
    all arrived. Runner-side methods run on the runner's thread, agent-side ones on the loop.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = threading.Event()
        self.rebalances = 0
        self._owned: set[TopicPartition] = set()
        self._offered: list[FaustRecord] = []
        self._taken: list[FaustRecord] = []
        self._stored = False
        self._acks: concurrent.futures.Future[None] | None = None

    @property
    def assigned(self) -> set[TopicPartition]:
        """Partitions owned now; none while Faust rebalances (it waits for in-flight batches)."""
        return set() if self.app.rebalancing else self._owned

    @assigned.setter
    def assigned(self, owned: set[TopicPartition]) -> None:
        self._owned = owned

    def offer(self, records: Sequence[FaustRecord]) -> None:
        self._offered, self._taken, self._stored = list(records), [], False

    def settle(self) -> Settled:
        if self._stored:
            return Settled.STORED
        return Settled.RETRY if self._offered else Settled.DROPPED

    def consume(self, max_records: int, timeout_s: float) -> list[FaustRecord]:
        if not self._offered:
            self.stopping.wait(timeout_s)
            return []
        self._taken, self._offered = self._offered, []
        return self._taken

    def store(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._stored = True

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        owned = self.assigned
        self._offered = [r for r in self._taken if (r.topic(), r.partition()) in owned]

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def send(self, outputs: Sequence[Output]) -> None:
        if outputs:
            assert self.loop is not None, "send before the agent started"
            self._acks = asyncio.run_coroutine_threadsafe(self._produce(outputs), self.loop)

    def flush(self, timeout_s: float) -> None:
        acks, self._acks = self._acks, None
        if acks is None:
            return
        try:
            acks.result(timeout_s)
        except concurrent.futures.TimeoutError:
            acks.cancel()
            raise DeliveryError(f"outputs unacknowledged after {timeout_s}s") from None
        except DeliveryError:
            raise
        except Exception as exc:
            raise DeliveryError(f"outputs not acknowledged: {exc!r}") from exc

    def close(self) -> None:
        pass

    async def _produce(self, outputs: Sequence[Output]) -> None:
        send = self.app.producer.send
        acks = [await send(o.topic, o.key, o.value, None, None, _headers(o.headers))
                for o in outputs]
        results = await asyncio.gather(*acks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise DeliveryError(f"{len(failed)} of {len(outputs)} outputs failed: {failed[-1]!r}")


class FaustEngine:
    """The scoring agent of one Faust app, with its runner, metrics and web endpoints.

    Built by :func:`attach`. ``on_limit`` is called once when ``max_events`` were consumed.
    """

    def __init__(self, app: faust.App, runner: Runner, batches: AgentBatches,
                 metrics: ServiceMetrics, input_topics: Iterable[str], *,
                 max_events: int | None = None) -> None:
        self.app = app
        self.input_topics = frozenset(input_topics)
        self.runner = runner
        self.batches = batches
        self.metrics = metrics
        self.max_events = max_events
        self.on_limit: Callable[[], object] | None = None
        self.handle_sighup = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._busy = False

    @property
    def stats(self) -> RunStats:
        return self.runner.stats

    async def agent(self, stream: StreamT[Any]) -> None:
        """Micro-batch the input topics and hand every batch to the runner."""
        self.batches.loop = loop = asyncio.get_running_loop()
        reloader = self.runner.reloader
        if self.handle_sighup and isinstance(reloader, ModelWatch):
            loop.add_signal_handler(signal.SIGHUP, reloader.request)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="stream-infer-batch")
        batch = self.runner.config
        take = cast(faust.Stream[bytes], stream).take_events
        async for events in take(batch.max_records, within=max(batch.max_wait_s, 0.001)):
            await self._batch(events)

    async def _batch(self, events: Sequence[EventT[bytes]]) -> None:
        messages = [event.message for event in events]
        for message in messages:
            message.incref()
        self._busy = True
        try:
            settled = await self._settle([FaustRecord(m) for m in messages])
        except Exception as exc:
            self._abandon(messages)
            log.exception("batch failed; stopping the worker")
            await self.app.crash(exc)
            return
        finally:
            self._busy = False
        if settled is Settled.STORED:
            for event in events:
                event.ack()
            self._maybe_stop()
        else:
            self._abandon(messages)

    async def _settle(self, records: list[FaustRecord]) -> Settled:
        self.batches.offer(records)
        while True:
            await self._step()
            settled = self.batches.settle()
            if settled is not Settled.RETRY:
                return settled
            if self.runner.stopping.is_set():
                self.batches.offer([])
                return Settled.DROPPED

    async def _step(self) -> None:
        """One ``Runner.step`` on the worker thread; a stopping app stops its retries."""
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self.runner.step)
        while not done.done():
            await asyncio.wait({done}, timeout=0.25)
            if self.app.should_stop:
                self.runner.stop()
        done.result()

    def _abandon(self, messages: Iterable[Message]) -> None:
        """Keep the extra reference (never committed here); stop Faust waiting for it."""
        unacked = self.app.consumer.unacked
        for message in messages:
            unacked.discard(message)

    def _maybe_stop(self) -> None:
        consumed = self.runner.stats.counts.consumed
        if self.max_events is not None and consumed >= self.max_events and self.on_limit:
            on_limit, self.on_limit = self.on_limit, None
            on_limit()

    async def heartbeat(self) -> None:
        """An idle agent is a turning loop (``/healthz``); a stuck batch or rebalance is not.

        A member that stalled longer than ``max_poll_interval_ms`` is revoked by aiokafka and
        may never rejoin (an open aiokafka issue): ``/healthz`` then fails, so that it is
        restarted.
        """
        if not self._busy and not self.app.rebalancing:
            self.metrics.loop_turned()

    async def on_assigned(self, sender: Any, *args: Any, signal: Any = None,
                          **kwargs: Any) -> None:
        self.batches.rebalances += 1
        self.batches.assigned = self._owned()

    async def on_revoked(self, sender: Any, *args: Any, signal: Any = None,
                         **kwargs: Any) -> None:
        revoked: set[FaustTP] = args[0] if args else set()
        self.batches.rebalances += 1
        self.batches.assigned = self._owned() - {(tp.topic, tp.partition) for tp in revoked}

    async def on_shutdown(self, sender: Any, *args: Any, signal: Any = None,
                          **kwargs: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _owned(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()
                if tp.topic in self.input_topics}

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the high watermark, from Faust's monitor (last read, end offsets)."""
        monitor = self.app.monitor
        read, end = dict(monitor.tp_read_offsets), dict(monitor.tp_end_offsets)
        owned = self.batches.assigned
        return {(tp.topic, tp.partition): max(end[tp] - offset - 1, 0)
                for tp, offset in read.items()
                if tp in end and (tp.topic, tp.partition) in owned}


def attach(app: faust.App, settings: Settings, *, metrics: ServiceMetrics | None = None,
           tracing: Tracing | None = None, max_events: int | None = None) -> FaustEngine:
    """Add the scoring agent and the /metrics, /healthz, /readyz pages to an existing app.

    The importable factory: ``engine = attach(app, load_settings(path))``, then run the app
    as usual (``faust -A module worker``). Its consumer group is the app's id. Topics, the
    models and Redis are checked now, as ``stream-infer run`` does, with the same errors.
    """
    if settings.kafka.exactly_once:
        raise ConfigError("kafka.processing_guarantee = exactly_once needs the native engine "
                          "(the Faust engine is at-least-once)")
    metrics = metrics or ServiceMetrics()
    batches = AgentBatches(app)
    prepared = prepare(settings, metrics, tracing.tracer if tracing else None)
    runner = _runner(settings, prepared, batches, metrics)
    consumed = input_topics(settings)  # the labels too, when a window has a rate
    engine = FaustEngine(app, runner, batches, metrics, consumed, max_events=max_events)
    topic = app.topic(*consumed, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    app.agent(topic, name=AGENT, concurrency=1)(engine.agent)
    app.timer(1.0, name=f"{AGENT}-heartbeat")(engine.heartbeat)
    signals: Any = app  # mode types signal receivers so that no async method matches
    signals.on_partitions_assigned.connect(engine.on_assigned)
    signals.on_partitions_revoked.connect(engine.on_revoked)
    signals.on_before_shutdown.connect(engine.on_shutdown)
    _pages(app, health_endpoints(settings, runner, metrics, Probes(
        engine.lag, lambda: batches.rebalances, prepared.store_ok), tracing))
    return engine


def create_app(settings: Settings, datadir: Path) -> faust.App:
    """A Faust app configured from ``settings`` (group, timeouts, web endpoints, partitioner).

    The producer is configured as the native one (``acks=all``, lz4, 5 ms linger) but is not
    idempotent (Faust enables idempotence only with transactions); output keys go to the
    partition librdkafka would pick (CRC32), so both engines place a card's alerts alike.
    ``kafka.consumer["fetch.wait.max.ms"]`` is honoured (Faust fixes aiokafka's at 1,500 ms;
    a broker that holds fetches until it expires, as Tansu does, would otherwise add that
    much to every fetch).
    """
    kafka, web = settings.kafka, settings.observability
    session_s = kafka.session_timeout_ms / 1000
    app = faust.App(
        kafka.group_id,
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=kafka.topic_partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=min(3.0, session_s / 3),
        broker_max_poll_interval=kafka.max_poll_interval_ms / 1000,
        broker_commit_interval=kafka.commit_interval_ms / 1000,
        producer_acks=-1,
        producer_linger=0.005,
        producer_compression_type="lz4",
        producer_request_timeout=kafka.delivery_timeout_ms / 1000,
        producer_partitioner=crc32_partitioner,
        stream_buffer_maxsize=max(4096, 2 * settings.batch.max_records),
        broker_credentials=credentials(kafka.security),
        web_enabled=web.http_port is not None,
        web_bind=web.http_host,
        web_port=web.http_port or (free_port() if web.http_port == 0 else 6066),
    )
    wait_ms = kafka.consumer.get("fetch.wait.max.ms")
    if wait_ms is not None:
        _set_fetch_wait(app, int(wait_ms))
    return app


def credentials(security: KafkaSecurity) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """``kafka.security`` as Faust broker credentials: TLS (with client certificates) and SASL
    PLAIN/SCRAM. OAUTHBEARER is refused: aiokafka takes a token provider object, not the
    OIDC settings librdkafka uses, so it needs the native engine."""
    if security.protocol == "PLAINTEXT":
        return None
    if security.sasl_mechanism == "OAUTHBEARER":
        raise ConfigError("kafka.security.sasl_mechanism = OAUTHBEARER needs the native engine "
                          "(run without --engine faust)")
    context = None
    if security.protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=security.ssl_ca_location)
        if security.ssl_certificate_location:
            password = security.ssl_key_password
            context.load_cert_chain(security.ssl_certificate_location, security.ssl_key_location,
                                    password.get_secret_value() if password else None)
        if not security.ssl_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if security.sasl_mechanism is None:
        return faust.SSLCredentials(context)
    password = security.sasl_password
    return faust.SASLCredentials(username=security.sasl_username,
                                 password=password.get_secret_value() if password else None,
                                 mechanism=security.sasl_mechanism, ssl_context=context)


def run_worker(settings: Settings, metrics: ServiceMetrics, tracing: Tracing | None = None,
               *, max_events: int | None = None) -> RunStats:
    """``stream-infer run --engine faust``: until SIGTERM/SIGINT or ``max_events``.

    SIGTERM: Faust stops fetching, the batches in hand finish and are acknowledged, acked
    offsets are committed, the member leaves the group. SIGHUP reloads the models.
    """
    datadir = Path(tempfile.mkdtemp(prefix="stream-infer-faust-"))
    try:
        app = create_app(settings, datadir)
        engine = attach(app, settings, metrics=metrics, tracing=tracing, max_events=max_events)
        worker = faust.Worker(app, quiet=True, redirect_stdouts=False, override_logging=False)
        worker.spinner = None  # it writes terminal escapes even when quiet
        _quiet_lifecycle_logs()
        log.info("consuming %s as Faust app and group %r",
                 ", ".join(settings.kafka.input_topics), app.conf.id)
        web = settings.observability
        if web.http_port is not None:
            log.info("metrics and health on http://%s:%d/metrics, /healthz, /readyz "
                     "(Faust's web server)", web.http_host, app.conf.web_port)
        stopping: list[asyncio.Task[None]] = []
        engine.on_limit = lambda: stopping.append(asyncio.ensure_future(worker.stop()))
        engine.handle_sighup = True
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
        return engine.stats
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def crc32_partitioner(key: bytes | None, all_partitions: Sequence[int],
                      available: Sequence[int]) -> int:
    """librdkafka's default ``consistent_random``: CRC32 of the key; random without one."""
    if key is None:
        return random.choice(list(available or all_partitions))
    return sorted(all_partitions)[zlib.crc32(key) % len(all_partitions)]


def _runner(settings: Settings, prepared: Prepared, batches: AgentBatches,
            metrics: ServiceMetrics) -> Runner:
    """The native runner's parts (``service.prepare``), the agent's batches as its source
    and sink. The agent settles each batch before taking the next: one in flight."""
    runner = Runner(batches, batches, prepared.pipeline, replace(prepared.config, max_in_flight=1),
                    observer=metrics,
                    reloader=model_watch(settings, metrics))
    batches.stopping = runner.stopping
    return runner


def _pages(app: faust.App, endpoints: Endpoints) -> None:
    """Serve the WSGI endpoints from Faust's web server (checks run off the event loop)."""
    for path in ("/metrics", "/healthz", "/readyz"):

        async def page(view: View, request: Request, path: str = path) -> Response:
            environ = {
                "REQUEST_METHOD": request.method,
                "PATH_INFO": path,
                "QUERY_STRING": request.query_string,
                "HTTP_ACCEPT": request.headers.get("Accept", ""),
                "HTTP_ACCEPT_ENCODING": request.headers.get("Accept-Encoding", ""),
            }
            status, headers, body = await asyncio.to_thread(_call, endpoints, environ)
            return view.bytes(body, status=status, headers=headers)

        app.page(path, name=f"stream-infer{path.replace('/', '-')}")(page)


def _call(app: Endpoints, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    started: list[Any] = []
    body = b"".join(app(environ, lambda status, headers: started.extend((status, headers))))
    status, headers = started
    return int(status.split()[0]), dict(headers), body


def _headers(headers: Headers) -> list[tuple[str, bytes]]:
    return [(k, _header_bytes(v)) for k, v in headers]


def _header_bytes(value: HeaderValue) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def _quiet_lifecycle_logs() -> None:
    """Faust and mode log every service start and stop at INFO; keep those for DEBUG."""
    if not log.isEnabledFor(logging.DEBUG):
        for name in ("faust", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _set_fetch_wait(app: faust.App, wait_ms: int) -> None:
    """Give this app's aiokafka consumer ``fetch_max_wait_ms=wait_ms``."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    ConsumerThread.logger = faust_aiokafka.AIOKafkaConsumerThread.logger
    Consumer.logger = faust_aiokafka.Consumer.logger
    transport: Any = app.transport
    transport.Consumer = Consumer
