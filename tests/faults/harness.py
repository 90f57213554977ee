"""The fault-test harness, after Kafka's system tests and Jepsen.

- :class:`Traffic` produces unique events (and malformed records) and writes every input the
  broker acknowledged into a :class:`Ledger`, keyed by (partition, offset).
- :class:`Run` names a scenario's topics and group and writes its service configs; the
  services are :class:`tests.support.service.Service` processes, made by the :class:`Lab`.
- :class:`Outputs` tails the scores, dead-letter and alert topics from the beginning.
- :func:`reconcile` checks every input offset against the outputs: each good event must have
  a score, each malformed record a dead letter, and alerts deduped on ``alert_id`` must leave
  one alert per event; :class:`FaultReport` collects one table row per fault.

The fault suite's own library: only ``tests/faults`` imports it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.offline import simulate
from tests.support.configs import merge, service_config, write_config
from tests.support.population import population
from tests.support.service import Service
from tests.support.topics import committed
from tests.support.wait import wait_until

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
        """A service config for this run (short session, fast fetches, no tracing);
        ``overrides`` are merged per section."""
        sections = service_config(
            self.run_id, self.bootstrap, self.redis_url,
            kafka={"topic_partitions": self.partitions, "session_timeout_ms": 3000,
                   "delivery_timeout_ms": 10000,
                   "consumer": {"fetch.wait.max.ms": 10, "heartbeat.interval.ms": 500}},
            tracing={"enabled": False})
        return write_config(self.workdir / f"config-{uuid.uuid4().hex[:6]}.toml",
                            merge(sections, overrides))

    def committed(self) -> dict[int, int]:
        """The offsets the run's group committed on the input topic."""
        return committed(self.bootstrap, self.group_id, self.input_topic, self.partitions)


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
        def covered() -> bool:
            if not self.missing(ledger):
                return True
            self.poll(0.25)
            return False

        try:
            return wait_until(covered, timeout_s, "an output for every acknowledged input",
                              poll_s=0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.missing(ledger)} still without") from None

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
    done = run.committed()
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
        self.services.append(Service(config, name, env=env).start())
        return self.services[-1]

    def commit_watch(self, run: Run) -> CommitWatch:
        self._watches.append(CommitWatch(run))
        return self._watches[-1]

    def close(self) -> None:
        for traffic in self._traffic:
            traffic.halt()
        for service in self.services:
            service.kill()
        for watch in self._watches:
            watch.stop()
        for outputs in self._outputs:
            outputs.close()


class FaultReport:
    """Collects one table row per fault and broker (the ``fault_report`` fixture)."""

    HEADER = ("| fault | broker | inputs | lost | duplicates (raw) | alert duplicates (raw) "
              "| duplicates after dedup on alert_id | recovery | peak RSS |")
    COLUMNS = 9

    def __init__(self, rows: list[str], broker: str) -> None:
        self.rows, self.broker = rows, broker

    def add(self, fault: str, tally: Tally, recovery_s: float, peak_mib: float) -> None:
        inputs = f"{tally.inputs:,}" + (f" ({tally.input_duplicates} stored twice)"
                                         if tally.input_duplicates else "")
        self.rows.append(
            f"| {fault} | {self.broker} | {inputs} | {tally.lost} | {tally.duplicates} "
            f"| {tally.alert_duplicates} | {tally.after_dedup} | {recovery_s:.1f} s "
            f"| {peak_mib:.0f} MiB |")
