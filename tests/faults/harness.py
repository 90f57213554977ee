"""The fault-test harness, after Kafka's system tests and Jepsen.

- :class:`Traffic` produces unique events (and malformed records) and writes every input the
  broker acknowledged into a :class:`Ledger`, keyed by (partition, offset).
- :class:`Service` is ``python -m stream_infer run --config X`` in a subprocess, its stderr in
  a file, its peak RSS sampled from ``/proc``.
- :class:`Outputs` tails the scores, dead-letter and alert topics from the beginning.
- :func:`reconcile` checks every input offset against the outputs: each good event must have
  a score, each malformed record a dead letter, and alerts deduped on ``alert_id`` must leave
  one alert per event.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.demo.embedded import EmbeddedBroker, free_port
from stream_infer.offline import simulate

MODELS = Path(__file__).resolve().parents[2] / "models"
Coord = tuple[int, int]


@dataclass(frozen=True)
class Run:
    """The names of one scenario: topics, group, and where its files go."""

    run_id: str
    bootstrap: str
    redis_url: str
    workdir: Path
    partitions: int

    @property
    def group_id(self) -> str:
        return f"g-{self.run_id}"

    @property
    def input_topic(self) -> str:
        return f"tx-{self.run_id}"

    @property
    def output_topics(self) -> dict[str, str]:
        return {"scores": f"scores-{self.run_id}", "dlq": f"dlq-{self.run_id}",
                "alerts": f"alerts-{self.run_id}"}

    def create_topics(self) -> None:
        ensure_topics({"bootstrap.servers": self.bootstrap},
                      [self.input_topic, *self.output_topics.values()], create=True,
                      partitions=self.partitions, replication_factor=1)

    def write_config(self, **overrides: Mapping[str, Any]) -> Path:
        """A service config for this run; ``overrides`` are merged per section."""
        sections: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap, "group_id": self.group_id,
                "input_topics": [self.input_topic],
                "alert_topic": self.output_topics["alerts"],
                "dlq_topic": self.output_topics["dlq"],
                "scores_topic": self.output_topics["scores"],
                "topic_partitions": self.partitions, "session_timeout_ms": 3000,
                "commit_interval_ms": 500, "delivery_timeout_ms": 10000,
                "consumer": {"fetch.wait.max.ms": 10, "heartbeat.interval.ms": 500},
            },
            "batch": {"max_records": 100, "max_wait_ms": 20},
            "redis": {"url": self.redis_url},
            "features": {
                "card": {"key": "card:{card_id}", "fields": list(simulate.CARD_FIELDS)},
                "merchant": {"key": "merchant:{merchant_id}",
                             "fields": list(simulate.MERCHANT_FIELDS)},
            },
            "model": {"dir": str(MODELS), "name": "demo"},
            "tracing": {"enabled": False},
        }
        for name, values in overrides.items():
            merged = sections.setdefault(name, {})
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        path = self.workdir / f"config-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(_toml(sections))
        return path


_INLINE = {"consumer", "producer", "options"}


def _toml(tables: Mapping[str, Any], prefix: str = "") -> str:
    """Nested dicts as TOML tables; client options (``_INLINE``) as inline tables."""
    lines, subtables = [], []
    for key, value in tables.items():
        if isinstance(value, dict) and key not in _INLINE:
            subtables.append(_toml(value, f"{prefix}.{key}" if prefix else key))
        elif isinstance(value, dict):
            inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    head = [f"[{prefix}]"] if prefix and lines else []
    return "\n".join([*head, *lines, *subtables]) + "\n"


class ProxiedBroker(EmbeddedBroker):
    """A Tansu that advertises ``advertised_port``: after bootstrap, every client (the
    service, the test's producer and readers) talks to the broker through that port."""

    def __init__(self, port: int, advertised_port: int) -> None:
        super().__init__(port)
        self.advertised_port = advertised_port

    def command(self, workdir: Path) -> list[str]:
        command = super().command(workdir)
        command[command.index("--advertised-listener-url") + 1] = \
            f"tcp://{self.host}:{self.advertised_port}"
        return command


class Ledger:
    """Every input the broker acknowledged: event id -> malformed (a dead letter is due)."""

    def __init__(self) -> None:
        self.acked: dict[str, bool] = {}
        self._lock = threading.Lock()

    def add(self, event_id: str, malformed: bool) -> None:
        with self._lock:
            self.acked[event_id] = malformed

    def snapshot(self) -> dict[str, bool]:
        with self._lock:
            return dict(self.acked)


class Traffic:
    """Unique events to the input topic; every ``bad_every``-th record is malformed."""

    def __init__(self, run: Run, ledger: Ledger, *, seed: int = 1, bad_every: int = 97) -> None:
        self.run, self.ledger, self.bad_every = run, ledger, bad_every
        self.population = population()
        self.seed = seed
        self.sent = 0
        self.failed = 0
        self._producer = Producer({"bootstrap.servers": run.bootstrap, "enable.idempotence": True,
                                   "linger.ms": 5})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, count: int) -> None:
        """Produce ``count`` records and wait until each is acknowledged."""
        self._produce(count)
        assert self._producer.flush(60) == 0, "inputs not acknowledged"

    def start(self, rate_per_s: float) -> None:
        """Produce in a background thread at ``rate_per_s`` until :meth:`stop`."""
        def loop() -> None:
            step = max(int(rate_per_s / 10), 1)
            while not self._stop.is_set():
                self._produce(step)
                self._producer.poll(0)
                self._stop.wait(step / rate_per_s)

        self._thread = threading.Thread(target=loop, name="traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop producing and wait until every input sent is acknowledged."""
        self.halt()
        assert self._producer.flush(60) == 0, "inputs not acknowledged"

    def halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _produce(self, count: int) -> None:
        events = simulate.transactions(self.population, count=count, seed=self.seed)
        self.seed += 1
        for event in events:
            self.sent += 1
            event_id = f"{self.run.run_id}-{self.sent:06d}"
            malformed = self.sent % self.bad_every == 0
            if malformed:  # truncated JSON: undecodable, yet it still names its event
                key, value = b"bad", f'{{"event_id": "{event_id}'.encode()
            else:
                event["event_id"] = event_id
                key, value = event["card_id"].encode(), json.dumps(event).encode()
            self._producer.produce(self.run.input_topic, value, key,
                                   on_delivery=self._recorder(event_id, malformed))

    def _recorder(self, event_id: str, malformed: bool) -> Any:
        def done(error: KafkaError | None, message: Any) -> None:
            if error is None:
                self.ledger.add(event_id, malformed)
            else:
                self.failed += 1
        return done


_POPULATION: simulate.Population | None = None


def population() -> simulate.Population:
    global _POPULATION
    if _POPULATION is None:
        _POPULATION = simulate.make_population(cards=300, merchants=40, seed=3)
    return _POPULATION


class Service:
    """One ``stream-infer run`` process. Its stderr goes to ``<workdir>/<name>.log``."""

    def __init__(self, config: Path, name: str, env: Mapping[str, str] | None = None) -> None:
        self.config, self.name = config, name
        self.env = dict(env or {})
        self.metrics_port = free_port()
        self.log_path = config.parent / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib = 0
        self.started_at = 0.0

    def start(self) -> Service:
        env = {**os.environ, "STREAM_INFER_OBSERVABILITY__HTTP_PORT": str(self.metrics_port),
               "STREAM_INFER_OBSERVABILITY__HTTP_HOST": "127.0.0.1", **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream_infer", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.started_at = time.monotonic()
        threading.Thread(target=self._sample_memory, args=(self.process,), daemon=True).start()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then wait; return the exit code."""
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"{self.name} did not exit: {self.log_tail()}") from None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def assignment(self) -> set[str]:
        """Partitions owned now, from the ``assigned``/``revoked``/``lost`` log lines."""
        owned: set[str] = set()
        for verb, names in _ASSIGN.findall(self.log()):
            parts = set() if names == "nothing" else set(names.split(", "))
            if verb == "assigned":
                owned |= parts
            else:
                owned -= parts
        return owned

    def metric(self, name: str) -> float:
        """The sum of a metric's series from ``/metrics`` (0 when absent)."""
        with urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as page:
            text = page.read().decode()
        return sum(float(m.group(1)) for m in
                   re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    @property
    def peak_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def _sample_memory(self, process: subprocess.Popen[bytes]) -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                match = re.search(r"VmHWM:\s+(\d+)", status.read_text())
            except OSError:
                break
            if match:
                self.peak_rss_kib = max(self.peak_rss_kib, int(match.group(1)))
            time.sleep(0.1)


_ASSIGN = re.compile(r"stream_infer\.adapters\.kafka: (assigned|revoked|assignment lost)"
                     r"(?: \(nothing committed for it\))?:? (.*)$", re.M)


_EVENT_ID = re.compile(rb'"event_id": "([\w-]+)')


def event_id_of(value: bytes | None) -> str:
    """The event id an input names (malformed inputs included), or "" if none."""
    match = _EVENT_ID.search(value or b"")
    return match.group(1).decode() if match else ""


@dataclass
class Observed:
    """What was read back: the input log (the ground truth, offset by offset) and the outputs."""

    inputs: dict[Coord, str] = field(default_factory=dict)  # offset -> the event it names
    malformed: set[Coord] = field(default_factory=set)      # inputs that are not JSON
    scores: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[Coord, str]] = field(default_factory=list)  # (source offset, event)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def missing(self, ledger: Ledger) -> int:
        """Acknowledged inputs that have no output yet."""
        scored = {doc["event_id"] for doc in self.scores}
        dead = {event_id for _, event_id in self.dead}
        return sum(1 for event_id, malformed in ledger.snapshot().items()
                   if event_id not in (dead if malformed else scored))

    def ends(self) -> dict[int, int]:
        """Per input partition, the offset after the last input read."""
        ends: dict[int, int] = {}
        for partition, offset in self.inputs:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        return ends

    def size(self) -> int:
        return len(self.inputs) + len(self.scores) + len(self.dead) + len(self.alerts)


class Outputs(Observed):
    """Tails the run's input topic and its output topics from the beginning; :meth:`poll`
    reads more."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self._closed = False
        self._consumer = Consumer({"bootstrap.servers": self.run.bootstrap,
                                   "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                                   "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self._kinds = {self.run.input_topic: "input",
                       **{t: k for k, t in self.run.output_topics.items()}}
        meta = self._consumer.list_topics(timeout=10).topics
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                               for t in self._kinds for p in meta[t].partitions])

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for m in self._consumer.consume(5000, min(left, 0.2)):
                if m.error() is None:
                    self._take(self._kinds[m.topic()], m)

    def _take(self, kind: str, m: Any) -> None:
        if kind == "input":
            coord = (m.partition(), m.offset())
            self.inputs[coord] = event_id_of(m.value())
            try:
                json.loads(m.value())
            except ValueError:
                self.malformed.add(coord)
        elif kind == "dlq":
            headers = dict(m.headers() or [])
            source = (int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))
            self.dead.append((source, event_id_of(m.value())))
        else:
            doc = json.loads(m.value())
            if not doc.get("shadow"):
                (self.scores if kind == "scores" else self.alerts).append(doc)

    def wait_until_covered(self, ledger: Ledger, timeout_s: float = 90) -> float:
        """Poll until every acknowledged input has an output; return the seconds it took."""
        started = time.monotonic()
        while self.missing(ledger):
            assert time.monotonic() - started < timeout_s, \
                f"{self.missing(ledger)} inputs still without output after {timeout_s:g}s"
            self.poll(0.25)
        return time.monotonic() - started

    def settle(self, quiet_s: float = 2.0) -> None:
        """Read until nothing new arrives for ``quiet_s`` (late duplicates included)."""
        while True:
            before = self.size()
            self.poll(quiet_s)
            if self.size() == before:
                return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


@dataclass(frozen=True)
class Tally:
    """What a reconciliation found. Must be 0: lost, unknown, absent, after_dedup."""

    inputs: int            # input offsets in the log
    lost: int              # input offsets without a score (event) or a dead letter (malformed)
    duplicates: int        # scores and dead letters beyond one per input offset (raw)
    alerts: int            # distinct alert ids
    alert_duplicates: int  # alert records beyond one per alert_id (raw)
    after_dedup: int       # events left with more than one alert after dedup on alert_id
    conflicts: int         # alert ids whose copies disagree on the score
    unknown: int           # outputs that match no input offset
    absent: int            # acknowledged inputs missing from the log (a broker fault)
    input_duplicates: int  # events stored at more than one offset (a producer retry)


def reconcile(ledger: Ledger, outputs: Observed) -> Tally:
    """Every input offset in the log against the outputs; see :class:`Tally`."""
    offsets = Counter(outputs.inputs.values())
    malformed = outputs.malformed
    scored = Counter(doc["event_id"] for doc in outputs.scores)
    dead = Counter(coord for coord, _ in outputs.dead)
    good = [e for c, e in outputs.inputs.items() if c not in malformed]
    by_alert: dict[str, set[float]] = {}
    for alert in outputs.alerts:
        by_alert.setdefault(alert["alert_id"], set()).add(alert["score"])
    alerted = Counter({a["alert_id"]: a["event_id"] for a in outputs.alerts}.values())
    return Tally(
        inputs=len(outputs.inputs),
        lost=sum(1 for e in good if not scored[e]) + sum(1 for c in malformed if not dead[c]),
        duplicates=sum(max(scored[e] - offsets[e], 0) for e in set(good))
        + sum(n - 1 for n in dead.values() if n > 1),
        alerts=len(by_alert),
        alert_duplicates=len(outputs.alerts) - len(by_alert),
        after_dedup=sum(1 for n in alerted.values() if n > 1),
        conflicts=sum(1 for scores in by_alert.values() if len(scores) > 1),
        unknown=sum(1 for e in scored if e not in offsets)
        + sum(1 for c in dead if c not in outputs.inputs),
        absent=sum(1 for e in ledger.snapshot() if e not in offsets),
        input_duplicates=sum(n - 1 for n in offsets.values() if n > 1),
    )


def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    """Wait until ``predicate()`` is true; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(poll_s)
    return time.monotonic() - started


def committed(run: Run, group_id: str) -> dict[int, int]:
    """The group's committed offsets on the input topic (without joining the group)."""
    consumer = Consumer({"bootstrap.servers": run.bootstrap, "group.id": group_id,
                         "enable.auto.commit": False})
    try:
        tps = [TopicPartition(run.input_topic, p) for p in range(run.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


class CommitWatch:
    """Samples the group's committed offsets in a thread; they must never go backwards.

    A stale commit (a member storing offsets for partitions it lost to another member that
    has since committed further) shows up as a regression.
    """

    def __init__(self, run: Run, every_s: float = 0.1) -> None:
        self.run, self.every_s = run, every_s
        self.samples = 0
        self.high: dict[int, int] = {}
        self.regressions: list[tuple[int, int, int]] = []  # (partition, high, seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="commit-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _watch(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.run.bootstrap,
                             "group.id": self.run.group_id, "enable.auto.commit": False})
        tps = [TopicPartition(self.run.input_topic, p) for p in range(self.run.partitions)]
        try:
            while not self._stop.wait(self.every_s):
                try:
                    offsets = consumer.committed(tps, timeout=5)
                except Exception:  # the broker may be unreachable during a fault
                    continue
                self.samples += 1
                for tp in offsets:
                    if tp.offset < 0:
                        continue
                    high = self.high.get(tp.partition, -1)
                    if tp.offset < high:
                        self.regressions.append((tp.partition, high, tp.offset))
                    self.high[tp.partition] = max(high, tp.offset)
        finally:
            consumer.close()


def caught_up(run: Run, outputs: Outputs) -> bool:
    """True once the group has committed every input partition to the end read so far."""
    outputs.poll(0.2)
    done = committed(run, run.group_id)
    return all(done.get(p, -1) >= end for p, end in outputs.ends().items())


class Lab:
    """Makes what a fault test needs and, at teardown, stops whatever is still running."""

    def __init__(self, bootstrap: str, redis_url: str, workdir: Path) -> None:
        self.bootstrap, self.redis_url, self.workdir = bootstrap, redis_url, workdir
        self.services: list[Service] = []
        self._traffic: list[Traffic] = []
        self._outputs: list[Outputs] = []
        self._watches: list[CommitWatch] = []

    def run(self, partitions: int = 4, *, bootstrap: str | None = None,
            redis_url: str | None = None) -> Run:
        run = Run(uuid.uuid4().hex[:8], bootstrap or self.bootstrap,
                  redis_url or self.redis_url, self.workdir, partitions)
        run.create_topics()
        return run

    def traffic(self, run: Run, ledger: Ledger, **kwargs: Any) -> Traffic:
        self._traffic.append(Traffic(run, ledger, **kwargs))
        return self._traffic[-1]

    def outputs(self, run: Run) -> Outputs:
        self._outputs.append(Outputs(run))
        return self._outputs[-1]

    def service(self, config: Path, name: str, env: Mapping[str, str] | None = None) -> Service:
        self.services.append(Service(config, name, env).start())
        return self.services[-1]

    def commit_watch(self, run: Run) -> CommitWatch:
        self._watches.append(CommitWatch(run))
        return self._watches[-1]

    def close(self) -> None:
        for traffic in self._traffic:
            traffic.halt()
        for service in self.services:
            if service.running():
                service.signal(signal.SIGCONT)
                service.signal(signal.SIGKILL)
                service.wait(10)
        for watch in self._watches:
            watch.stop()
        for outputs in self._outputs:
            outputs.close()
