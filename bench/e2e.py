"""End to end: the real service on the embedded broker and Redis, against its own ceiling.

Starts Tansu and redis-server, loads the reference workload (``bench/reference.py``: 50,000
cards x 16 features, a 300-tree depth-6 model over 17 features, 4 partitions), runs
``stream-infer run [--workers N]`` as a user would, and prints one JSON object:

- throughput mode (default): N events are produced first, then consumed; ``events_per_s``
  is read off the service's own ``/metrics`` (its consumed counter), with per-stage time
  shares from ``stream_infer_stage_seconds``, ``max_rss_mb`` per worker, ``mean_batch``
  (records per batch), the cores each process group used (``cpu_cores``) and waited for,
  runnable (``run_queue_cores``), and ``steal_cores`` (CPU the hypervisor gave to other
  guests over that window: what makes one run slower than the next on a shared machine);
- latency mode (``--rate R``): events are offered at R/s once the group is assigned, and
  ``p50_ms``/``p99_ms`` are input produce time -> alert record timestamp, over every alert;
  ``acked_within_15ms`` is the share of alerts the service saw acknowledged by the broker
  within 15 ms of their input's timestamp (its ``stream_infer_event_to_alert_seconds``);
- in the same run: ``predict_only_rows_per_s`` (bare ``inplace_predict`` on exactly the rows
  the service scores, batches of ``--batch``, every core; the mean of a measurement just
  before the service starts and one just after it stops, both in
  ``predict_only_before_after``, so a machine that changes speed during the run moves the
  ceiling with it) and ``ceiling_ratio_bracketed`` (events_per_s over that mean);
- ``ceiling_ratio``, the headline (throughput mode): the ceiling measured inside the
  service's own window. Every ``--interleave-s`` of running time the workers are stopped
  (SIGSTOP) while bare ``inplace_predict`` scores the next ``--interleave-rows`` rows on every
  core, then resumed (SIGCONT); ``events_per_s`` counts running time only, the ceiling is the
  rows over the seconds of every gap (``predict_interleaved_rows_per_s``), so both sides see
  the same moments of a machine whose speed drifts. ``--interleave-s 0`` turns this off
  (``ceiling_ratio`` is then the bracketed one);
- ``compiled_only_rows_per_s`` (the compiled
  forest alone, the same way), and a naive per-event loop (HMGET + ``inplace_predict`` of one
  row + produce) over the first ``--naive-events`` events. ``--backend`` sets the service's
  ``model.backend`` (``auto``: the compiled forest).

    python bench/e2e.py --events 200000 --workers 2 --layout packed --json
    python bench/e2e.py --rate 5000 --seconds 20 --json
    python bench/e2e.py --rate 5000 --seconds 20 --broker mock --json

``--broker kafka`` runs on Apache Kafka 4.4 (KRaft, one node; needs Java 17+ and Maven, jars
fetched once and cached); ``--broker both`` measures Tansu, then Apache Kafka, in one run and
prints each with their ratio (``kafka_vs_tansu_events_per_s`` or ``kafka_vs_tansu_p99_ms``).

    python bench/e2e.py --events 300000 --workers 4 --broker both --json
    python bench/e2e.py --rate 5000 --seconds 20 --broker both --json

``--windows`` adds window features to the service (issue 23): ``[windows.customer]`` keyed
by ``card_id`` (count and mean amount over 1, 7 and 30 days) and ``[windows.terminal]`` keyed
by ``merchant_id`` (count and fraud rate over 1, 7 and 30 days, 7 days of delay): 12 window
features and the calendar's 4, their state in the same Redis. The reference model reads none
of them, but the service computes them for every batch all the same, and no labels topic is
set (the rates are 0). The same measurement without windows runs first, in the same run, and
the result holds both with ``windows_vs_plain_events_per_s`` (or ``windows_vs_plain_p99_ms``
with ``--rate``) and the windows' counters (``window_events``, ``degraded_events``, and
``window_log_bytes_per_event``: the logs each group read and wrote per event computed;
``window_retries``: batches a group computed again after another worker's write;
``window_wait_share``: the share of the workers' time their batches waited for another
worker's turn on a group, the run's interleaved gaps included on both sides). Both
count events scored, not consumed (consumption runs ahead of the windows by the batches in
flight), with ``redis.socket_timeout_ms`` 10000 and ``redis.on_error = "pause"``: under the
default 250 ms and fail-open, batches whose script outlasted the timeout were scored without
window features (a third of them, in a first run). ``--window-groups customer`` keeps only
the group keyed like the input topic (its entities never span workers).

    python bench/e2e.py --events 100000 --workers 4 --windows --json
    python bench/e2e.py --rate 5000 --seconds 20 --windows --json

``--broker mock`` swaps Tansu for librdkafka's mock cluster (``test.mock.num.brokers``),
which this process hosts and the service reaches over TCP like any broker: its fetch path is
a few milliseconds, where Tansu's p99 alone is 100 ms and more on this machine, so the
service's own share of the latency can be seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import redis
import reference
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from stream_infer.adapters.kafka import ensure_topics, produce_stream
from stream_infer.adapters.xgboost import Backend, XGBoostModel
from stream_infer.demo.apache_kafka import ApacheKafka
from stream_infer.demo.embedded import EmbeddedBroker, EmbeddedRedis
from stream_infer.service.ports import server_ports

CORES = os.cpu_count() or 1
MOCK_RETAINS = 400_000  # 4 partitions; librdkafka's mock drops a partition's oldest records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, help="latency mode: offer this many events/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency mode duration")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--layout", choices=["packed", "hash"], default="packed")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--wait-ms", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=2, help="batch.max_in_flight")
    parser.add_argument("--tracing", action="store_true", help="trace batches to Kafka too")
    parser.add_argument("--fetch-min-bytes", type=int, default=1,
                        help="the service's fetch.min.bytes (throughput: e.g. 1000000)")
    parser.add_argument("--fetch-wait-ms", type=int, default=10,
                        help="consumer fetch.wait.max.ms (Tansu holds every fetch this long)")
    parser.add_argument("--consumer", action="append", default=[], metavar="KEY=VALUE",
                        help="another librdkafka consumer option for the service (repeatable)")
    parser.add_argument("--linger-ms", type=int, default=5,
                        help="the service producer's linger.ms (its default: 5)")
    parser.add_argument("--nthread", type=int, default=1,
                        help="XGBoost threads per worker (model.nthread; 0 = every core)")
    parser.add_argument("--naive-events", type=int, default=3000)
    parser.add_argument("--backend", choices=["auto", "compiled", "xgboost"], default="auto",
                        help="model.backend of the service")
    parser.add_argument("--broker", choices=["tansu", "kafka", "both", "mock"], default="tansu",
                        help="Tansu; Apache Kafka 4.4 (needs Java); both in turn, in one run; "
                             "or librdkafka's mock cluster hosted by this process")
    parser.add_argument("--interleave-s", type=float, default=0.5,
                        help="throughput mode: running time between ceiling gaps (0: none)")
    parser.add_argument("--interleave-rows", type=int, default=100_000,
                        help="rows bare inplace_predict scores in each gap")
    parser.add_argument("--window-groups", type=window_groups, default=list(WINDOWS),
                        help="with --windows: the groups, of customer,terminal")
    parser.add_argument("--windows", action="store_true",
                        help="with window features, beside the same run without them")
    parser.add_argument("--lease-shards", type=int, default=None,
                        help="with --windows: redis.windows_lease_shards (default: the "
                             "service's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.broker == "mock" and args.rate is None and args.events > MOCK_RETAINS:
        parser.error(f"the mock cluster keeps about {MOCK_RETAINS:,} records per topic; "
                     "use --events up to that")

    if args.windows and args.broker == "both":
        parser.error("--windows measures one broker: --broker tansu, kafka or mock")
    if args.windows:
        report(with_and_without_windows(args), args.json)
        return
    if args.broker != "both":
        report(measure(args, args.broker), args.json)
        return
    runs = {kind: measure(args, kind) for kind in ("tansu", "kafka")}
    key = "events_per_s" if args.rate is None else "p99_ms"
    comparison: dict[str, Any] = {"mode": runs["tansu"]["mode"], **runs}
    comparison[f"kafka_vs_tansu_{key}"] = round(runs["kafka"][key] / runs["tansu"][key], 3)
    report(comparison, args.json)


def with_and_without_windows(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement without windows, then with them, in one run; their ratio."""
    plain = measure(argparse.Namespace(**{**vars(args), "windows": False,
                                          "with_windows_mode": True}), args.broker)
    windowed = measure(argparse.Namespace(**{**vars(args), "with_windows_mode": True}),
                       args.broker)
    key = "events_per_s" if args.rate is None else "p99_ms"
    for run in (plain, windowed):
        if "cpu_cores" in run:
            run["redis_cpu_us_per_event"] = round(
                run["cpu_cores"]["redis"] / run["events_per_s"] * 1e6, 1)
    return {"mode": plain["mode"], "plain": plain, "windows": windowed,
            f"windows_vs_plain_{key}": round(windowed[key] / plain[key], 3)}


REDIS_WITH_WINDOWS = """socket_timeout_ms = 10000
on_error = "pause"
"""
"""With and without windows alike: a batch's script can take longer than the default 250 ms
timeout, and fail-open would then score its events without window features."""

WINDOWS = {"customer": """
[windows.customer]
key = "card_id"
lengths = ["1d", "7d", "30d"]
aggregates = ["count", "mean:amount"]
""", "terminal": """
[windows.terminal]
key = "merchant_id"
lengths = ["1d", "7d", "30d"]
delay = "7d"
aggregates = ["count", "rate:label"]
"""}
"""The window groups by name: the customer keyed like the input topic (by card), the
terminal shared by every partition."""


def window_groups(text: str) -> list[str]:
    """``--window-groups``: names of :data:`WINDOWS`, comma-separated."""
    groups = text.split(",")
    unknown = sorted(set(groups) - set(WINDOWS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown window groups {unknown}: of {list(WINDOWS)}")
    return groups


def report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}  {value}")


def host(kind: str) -> Any:
    """The broker the benchmark runs on, not yet started."""
    return {"mock": MockCluster, "tansu": Tansu, "kafka": Kafka}[kind]()


def measure(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """One whole measurement on a broker of ``kind``."""
    model_dir = reference.model_dir()
    hosted = host(kind)
    with hosted as broker, EmbeddedRedis() as store:
        client = redis.Redis.from_url(store.url)
        reference.load_cards(client, "hash")
        reference.load_cards(client, "packed")
        run_id = uuid.uuid4().hex[:8]
        topic = f"tx-{run_id}"
        broker.create([topic, f"alerts-{run_id}", f"dlq-{run_id}"])
        config = write_config(Path(tempfile.mkdtemp(prefix="e2e-")), broker, store, args,
                              model_dir, run_id)
        encoded = (reference.encoded_events(args.events) if args.rate is None else [])
        if args.rate is None:
            produce(broker, topic, encoded)
        rows = reference.feature_rows(encoded or reference.encoded_events(50_000))
        predict_before = predict_only(model_dir, rows, args.batch)
        others = {"broker": broker.pid,
                  "redis": store.process.pid if store.process else 0}
        gaps = (CeilingGaps(model_dir, rows, args.batch, args.interleave_s,
                            args.interleave_rows) if args.rate is None and args.interleave_s
                else None)
        result = run_service(args, broker, config, topic, run_id, others, gaps)
        predict_after = predict_only(model_dir, rows, args.batch)
        naive = naive_loop(broker, client, topic, model_dir, args.naive_events)
    predict = (predict_before + predict_after) / 2
    compiled = predict_only(model_dir, rows, args.batch, "compiled")
    result |= {
        "mode": "throughput" if args.rate is None else f"latency at {args.rate:g}/s",
        "workers": args.workers, "layout": args.layout, "batch": args.batch,
        "nthread": args.nthread, "fetch_wait_ms": args.fetch_wait_ms, "wait_ms": args.wait_ms,
        "fetch_min_bytes": args.fetch_min_bytes, "in_flight": args.in_flight,
        "linger_ms": args.linger_ms, "consumer": args.consumer,
        "backend": args.backend, "broker": kind,
        "predict_only_rows_per_s": round(predict),
        "predict_only_before_after": [round(predict_before), round(predict_after)],
        "compiled_only_rows_per_s": round(compiled),
        "naive_events_per_s": round(naive),
        "machine": f"{CORES} cores {platform.machine()} python {platform.python_version()}",
    }
    if "events_per_s" in result:
        result["ceiling_ratio_bracketed"] = round(result["events_per_s"] / predict, 3)
        interleaved = result.get("predict_interleaved_rows_per_s")
        result["ceiling_ratio"] = round(result["events_per_s"] / (interleaved or predict), 3)
        result["vs_naive"] = round(result["events_per_s"] / naive, 1)
    return result


class Broker(Protocol):
    """What the benchmark needs of a broker it hosts."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def pid(self) -> int: ...

    def create(self, topics: list[str]) -> None: ...


class Tansu(EmbeddedBroker):
    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def create(self, topics: list[str]) -> None:
        ensure_topics({"bootstrap.servers": self.bootstrap_servers}, topics, create=True,
                      partitions=reference.PARTITIONS, replication_factor=1)


class Kafka(ApacheKafka):
    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def create(self, topics: list[str]) -> None:
        ensure_topics({"bootstrap.servers": self.bootstrap_servers}, topics, create=True,
                      partitions=reference.PARTITIONS, replication_factor=1)


class MockCluster:
    """librdkafka's mock cluster, held open by a producer handle of this process.

    librdkafka names the cluster's address only in a log line; other processes connect to
    it over TCP. Topics are created on first metadata request, with 4 partitions (the
    reference workload's count). Its CPU is this process's (``pid``).
    """

    bootstrap_servers = ""
    pid = os.getpid()

    def __enter__(self) -> MockCluster:
        found: list[str] = []

        class Address(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                hit = re.search(r"replaced with (\S+)", record.getMessage())
                if hit:
                    found.append(hit.group(1))

        log = logging.getLogger("e2e.mock")
        log.addHandler(Address())
        log.setLevel(logging.DEBUG)
        self._holder = Producer({"test.mock.num.brokers": 1, "logger": log})
        deadline = time.monotonic() + 10
        while not found and time.monotonic() < deadline:
            self._holder.poll(0.05)
        if not found:
            raise SystemExit("e2e: librdkafka did not report the mock cluster's address")
        self.bootstrap_servers = found[0]
        return self

    def __exit__(self, *exc: object) -> None:
        del self._holder

    def create(self, topics: list[str]) -> None:
        client = Producer({"bootstrap.servers": self.bootstrap_servers})
        for topic in topics:
            partitions = client.list_topics(topic, timeout=10).topics[topic].partitions
            assert len(partitions) == reference.PARTITIONS, partitions


def consumer_options(args: argparse.Namespace) -> str:
    """``kafka.consumer`` as a TOML inline table: the fetch options and every ``--consumer``."""
    options: dict[str, str | int] = {"fetch.wait.max.ms": args.fetch_wait_ms,
                                     "fetch.min.bytes": args.fetch_min_bytes}
    for option in args.consumer:
        key, _, value = option.partition("=")
        options[key] = int(value) if value.isdigit() else value
    return "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in options.items()) + "}"


def write_config(tmp: Path, broker: Broker, store: EmbeddedRedis,
                 args: argparse.Namespace, model_dir: Path, run_id: str) -> Path:
    views = reference.views(args.layout)["card"]
    path = tmp / "bench.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{broker.bootstrap_servers}"
group_id = "bench-{run_id}"
input_topics = ["tx-{run_id}"]
alert_topic = "alerts-{run_id}"
dlq_topic = "dlq-{run_id}"
session_timeout_ms = 6000
commit_interval_ms = 1000
consumer = {consumer_options(args)}
producer = {{"linger.ms" = {args.linger_ms}}}

[batch]
max_records = {args.batch}
max_wait_ms = {args.wait_ms}
max_in_flight = {args.in_flight}

[redis]
url = "{store.url}"
{REDIS_WITH_WINDOWS if getattr(args, "with_windows_mode", False) else ""}\
{f"windows_lease_shards = {args.lease_shards}" if args.lease_shards else ""}

[features.card]
key = "{views.key}"
fields = {json.dumps(views.fields)}
layout = "{views.layout}"

[model]
dir = "{model_dir.parents[1]}"
name = "reference"
reload_poll_s = 3600
nthread = {args.nthread}
backend = "{args.backend}"

[observability]
http_host = "127.0.0.1"
http_port = {server_ports(args.workers + 1)}

[tracing]
enabled = {"true" if args.tracing else "false"}
{"".join(WINDOWS[g] for g in args.window_groups) if getattr(args, "windows", False) else ""}""")
    return path


def produce(broker: Broker, topic: str, encoded: list[bytes]) -> None:
    config = {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20,
              "batch.size": 1_000_000, "compression.type": "lz4"}
    keyed = ((json.loads(e)["card_id"].encode(), e) for e in encoded)
    produce_stream(config, topic, keyed)


def run_service(args: argparse.Namespace, broker: Broker, config: Path, topic: str,
                run_id: str, others: dict[str, int], gaps: CeilingGaps | None
                ) -> dict[str, Any]:
    port = int(re.search(r"http_port = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    # several workers: the supervisor answers on http_port, worker i on http_port + 1 + i
    ports = [port + 1 + i for i in range(args.workers)] if args.workers > 1 else [port]
    service = subprocess.Popen([sys.executable, "-m", "stream_infer", "--log-level", "WARNING",
                                "run", "--config", str(config), "--workers", str(args.workers)])
    try:
        wait(lambda: all(ready(p) for p in ports), 60, "workers never became ready")
        if args.rate is None:
            processes = {"workers": workers(service.pid), **{k: [v] for k, v in others.items()}}
            figures = watch_throughput(ports, args.events, processes, gaps,
                                       counted_by(args))
        else:
            figures = offer_load(args, broker, topic, ports, run_id)
        figures["max_rss_mb"] = max_rss_mb(service.pid)
        if getattr(args, "with_windows_mode", False):
            figures["window_events"] = window_events(ports)
            figures["window_log_bytes_per_event"] = window_log_bytes(
                ports, figures["window_events"])
            figures["window_retries"] = summed(ports, "stream_infer_window_retries_total",
                                               "group")
            waits = summed(ports, "stream_infer_window_wait_seconds_total", "group")
            figures["window_wait_share"] = {
                group: round(seconds / (len(ports) * figures["elapsed_s"]), 3)
                for group, seconds in waits.items()} if "elapsed_s" in figures else {}
            figures["degraded_events"] = sum(
                metric(p, "stream_infer_degraded_events_total") for p in ports)
        figures["stage_share"] = stage_shares(ports)
        batches = sum(metric(p, "stream_infer_batch_size_count") for p in ports)
        figures["mean_batch"] = round(
            sum(metric(p, "stream_infer_batch_size_sum") for p in ports) / max(batches, 1))
        return figures
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)


class CeilingGaps:
    """Bare ``inplace_predict`` measured in gaps of the service's run: the workers are
    stopped (SIGSTOP: every thread, so neither fetching nor scoring goes on) while the next
    ``rows_per_gap`` rows are scored on every core, then resumed (SIGCONT)."""

    def __init__(self, model_dir: Path, rows: np.ndarray, batch: int, slice_s: float,
                 rows_per_gap: int) -> None:
        self.model = XGBoostModel.load(model_dir, nthread=CORES, backend="xgboost")
        self.batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
        self.slice_s, self.rows_per_gap = slice_s, rows_per_gap
        self.next = 0
        self.rows = 0
        self.predict_s = 0.0
        self.paused_s = 0.0
        self.count = 0
        self.others_cpu_s: dict[str, float] = {}

    def gap(self, workers: list[int], others: dict[str, list[int]]) -> None:
        """Stop the workers, score one gap's rows, resume them (also on an error)."""
        stopped = time.perf_counter()
        before = {name: cpu_seconds(pids) for name, pids in others.items()}
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            done, started = 0, time.perf_counter()
            while done < self.rows_per_gap:
                chunk = self.batches[self.next % len(self.batches)]
                self.model.predict(chunk)
                done += len(chunk)
                self.next += 1
            self.predict_s += time.perf_counter() - started
            self.rows += done
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        for name, pids in others.items():
            self.others_cpu_s[name] = (self.others_cpu_s.get(name, 0.0)
                                       + cpu_seconds(pids) - before[name])
        self.paused_s += time.perf_counter() - stopped
        self.count += 1

    def figures(self) -> dict[str, Any]:
        return {"predict_interleaved_rows_per_s": round(self.rows / self.predict_s)
                if self.predict_s else None,
                "interleave": {"gaps": self.count, "rows": self.rows,
                               "paused_s": round(self.paused_s, 2),
                               "others_cores_in_gaps": {
                                   name: round(cpu / self.paused_s, 2) if self.paused_s else 0.0
                                   for name, cpu in self.others_cpu_s.items()}}}


def counted_by(args: argparse.Namespace) -> str:
    """The counter throughput is read from: events consumed; with ``--windows`` events
    scored, with and without windows alike (consumed runs ahead of the windows by the
    batches in flight, a third of a short run)."""
    if getattr(args, "with_windows_mode", False):
        return "stream_infer_events_scored_total"
    return "stream_infer_events_consumed_total"


def watch_throughput(ports: list[int], total: int, processes: dict[str, list[int]],
                     gaps: CeilingGaps | None = None,
                     counter: str = "stream_infer_events_consumed_total") -> dict[str, Any]:
    """Events/s over the window from the first consumed batch to the last, and the CPU
    (cores) each group of processes used in that window; with ``gaps``, the window's
    running time only (the gaps' own time and the other processes' CPU in them left out).

    A scrape of ``/metrics`` costs a worker about a millisecond of the GIL, so the counter
    is read every 250 ms while the end is far, and more often as it nears (the window's end
    is known to within about 1% of its length).
    """
    start = None
    pause = 0.02
    others = {name: pids for name, pids in processes.items() if name != "workers"}
    while True:
        consumed = sum(metric(p, counter) for p in ports)
        now = time.perf_counter()
        if consumed and start is None:
            start, first, resumed = now, consumed, now
            cpu_before = {name: cpu_seconds(pids) for name, pids in processes.items()}
            queued_before = {name: run_queue_seconds(pids) for name, pids in processes.items()}
            steal_before = steal_seconds()
        paused = gaps.paused_s if gaps else 0.0
        if consumed >= total:
            assert start is not None
            wall = now - start - paused
            if consumed == first:
                raise SystemExit("e2e: every event was consumed before the first scrape; "
                                 "offer more --events")
            gap_cpu = gaps.others_cpu_s if gaps else {}
            cores = {name: round((cpu_seconds(pids) - cpu_before[name]
                                  - gap_cpu.get(name, 0.0)) / wall, 2)
                     for name, pids in processes.items()}
            return {"events": total, "events_per_s": round((total - first) / wall),
                    "elapsed_s": round(now - start, 2),
                    "events_per_worker": [int(metric(p, counter)) for p in ports],
                    "counted_by": counter,
                    "cpu_cores": cores,
                    "run_queue_cores": {
                        name: round((run_queue_seconds(pids) - queued_before[name]) / wall, 2)
                        for name, pids in processes.items()},
                    "worker_cpu_us_per_event": round(
                        cores["workers"] * wall / (total - first) * 1e6, 1),
                    "steal_cores": round((steal_seconds() - steal_before) / (now - start), 2),
                    **(gaps.figures() if gaps else {})}
        if start is not None and consumed > first:
            left_s = (total - consumed) * (now - start - paused) / (consumed - first)
            pause = min(0.25, max(0.005, left_s / 2, (now - start - paused) / 100))
            if gaps and now - resumed >= gaps.slice_s and left_s > gaps.slice_s / 2:
                gaps.gap(processes["workers"], others)
                resumed = time.perf_counter()
                continue
        time.sleep(pause)


def workers(pid: int) -> list[int]:
    """The worker processes of ``stream-infer run --workers N`` (the process itself if 1)."""
    try:
        children = [int(c) for c in
                    Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return children or [pid]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (from /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_queue_seconds(pids: list[int]) -> float:
    """Seconds the threads of these processes have waited, runnable, for a core
    (``/proc/PID/task/TID/schedstat``, its second field), summed over the threads alive
    now: a thread that exits between two readings takes its share with it. The workers'
    threads live for the whole run; Linux keeps no process-wide sum of the waits."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError):
                continue
    return total / 1e9


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests so far, over every core (/proc/stat).

    On a shared virtual machine this is what makes one run slower than the next: the
    workers' CPU per event rises with it, the code unchanged.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def offer_load(args: argparse.Namespace, broker: Broker, topic: str,
               ports: list[int], run_id: str) -> dict[str, Any]:
    count = int(args.rate * args.seconds)
    source = reference.events(count, seed=5)

    def timed() -> Any:
        for event in source:
            event["event_time"] = time.time_ns() // 1_000_000
            yield event["card_id"].encode(), msgspec.json.encode(event)

    floor: list[float] = []
    reader = threading.Thread(target=broker_floor, args=(broker, topic, count, args, floor))
    reader.start()
    time.sleep(1.0)  # the floor reader is assigned before the first record
    produce_stream({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 1},
                   topic, timed(), rate_per_s=args.rate)
    wait(lambda: sum(metric(p, "stream_infer_events_consumed_total") for p in ports) >= count,
         120, "the service did not consume everything")
    reader.join(timeout=60)
    latencies = alert_latencies(broker, f"alerts-{run_id}")
    within, acked = (sum(metric(p, f"stream_infer_event_to_alert_seconds_{name}") for p in ports)
                     for name in ('bucket{le="0.015"}', "count"))
    return {"events": count, "offered_per_s": args.rate, "alerts": len(latencies),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "max_ms": round(float(np.max(latencies)), 1),
            "acked_within_15ms": round(within / acked, 4) if acked else None,
            "broker_floor_p50_ms": round(float(np.percentile(floor, 50)), 1),
            "broker_floor_p99_ms": round(float(np.percentile(floor, 99)), 1)}


def broker_floor(broker: Broker, topic: str, count: int, args: argparse.Namespace,
                 out: list[float]) -> None:
    """Produce -> consume latency of the same records through the same broker, no service."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers,
                         "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": args.fetch_wait_ms})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
    deadline = time.monotonic() + args.seconds + 60
    while len(out) < count and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.005):
            if message.error() is None:
                now = time.time_ns() // 1_000_000
                out.append(now - json.loads(message.value())["event_time"])
    consumer.close()


def alert_latencies(broker: Broker, topic: str) -> list[float]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "e2e-read",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    pending, out = set(parts), []
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue
            alert = json.loads(message.value())
            out.append(message.timestamp()[1] - alert["event_time"])
    consumer.close()
    return out


def naive_loop(broker: Broker, client: Any, topic: str, model_dir: Path,
               count: int) -> float:
    """The per-event loop: decode, HMGET, predict one row, produce; events/s."""
    model = XGBoostModel.load(model_dir, nthread=1, backend="xgboost")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers,
                         "group.id": f"naive-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    done, started = 0, time.perf_counter()
    while done < count:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        event = json.loads(message.value())
        values = client.hmget(f"card:{event['card_id']}", reference.FIELDS)
        row = np.array([[event["amount"], *(float(v) for v in values)]], dtype=np.float32)
        if model.predict(row)[0] >= model.threshold:
            producer.produce("naive-alerts", message.value())
        producer.poll(0)
        done += 1
    producer.flush(30)
    elapsed = time.perf_counter() - started
    consumer.close()
    return done / elapsed


def predict_only(model_dir: Path, rows: np.ndarray, batch: int, backend: Backend = "xgboost"
                 ) -> float:
    """Rows/s of the model alone on every core: bare ``inplace_predict`` by default."""
    model = XGBoostModel.load(model_dir, nthread=CORES, backend=backend)
    batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for chunk in batches:
            model.predict(chunk)
        best = min(best, time.perf_counter() - started)
    return len(rows) / best


def metric(port: int, name: str) -> float:
    text = scrape(port)
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def stage_shares(ports: list[int]) -> dict[str, float]:
    totals = summed(ports, "stream_infer_stage_seconds_sum", "stage")
    whole = sum(totals.values()) or 1.0
    return {stage: round(seconds / whole, 3) for stage, seconds in sorted(totals.items())}


def window_events(ports: list[int]) -> dict[str, float]:
    """``stream_infer_window_events_total`` summed over the workers, by group and outcome."""
    return summed(ports, "stream_infer_window_events_total", "group", "outcome")


def window_log_bytes(ports: list[int], events: dict[str, float]) -> dict[str, float]:
    """``stream_infer_window_log_bytes_total`` summed over the workers, by group and
    direction, per event the group computed."""
    totals = summed(ports, "stream_infer_window_log_bytes_total", "group", "direction")
    return {name: round(total / max(events.get(f"{name.split('.')[0]}.computed", 0.0), 1.0))
            for name, total in totals.items()}


def summed(ports: list[int], name: str, *labels: str) -> dict[str, float]:
    """The samples of ``name`` summed over the workers, keyed by the values of ``labels``
    joined with dots (in any order of the exposition's labels)."""
    totals: dict[str, float] = {}
    for port in ports:
        for text, value in re.findall(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", scrape(port),
                                      re.M):
            found = dict(re.findall(r'(\w+)="([^"]*)"', text))
            key = ".".join(found[label] for label in labels)
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()  # type: ignore[no-any-return]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def max_rss_mb(pid: int) -> float:
    """The largest peak RSS among the process and its children (the workers)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    peak = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        peak = max(peak, int(found.group(1)) if found else 0)
    return round(peak / 1024, 1)


def wait(condition: Any, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"e2e: {message}")


if __name__ == "__main__":
    main()
