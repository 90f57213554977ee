"""The native engine and the Faust engine, end to end on the embedded broker and Redis.

One command, both engines, the same input: for each engine a child process runs it in-process
(``build_runner`` + ``serve``, or ``faust_app.run_worker``) with the demo's settings, its own
consumer group and output topics, until it has consumed ``--events``. Both report through the
same :class:`RunStats`: events/s from the first batch consumed to the last one acknowledged,
event-to-alert latency from the input record's timestamp to the alert's acknowledgement, and
the child's CPU seconds per 1,000 events.

    python bench/faust_engine.py --events 50000 --rate 0 --json      # a backlog: throughput
    python bench/faust_engine.py --events 20000 --rate 2000 --json   # live traffic: latency

With ``--rate 0`` every event is produced before the engine starts; with a rate the child
produces at that rate from the moment ``/readyz`` says its partitions are assigned.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from stream_infer.adapters.kafka import ensure_topics, produce_stream
from stream_infer.adapters.redis import connect
from stream_infer.config import Settings
from stream_infer.demo.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from stream_infer.demo.run import demo_settings, encode_events
from stream_infer.offline import simulate
from stream_infer.offline.features import load_features
from stream_infer.runner import RunStats
from stream_infer.service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s offered (0: backlog)")
    parser.add_argument("--engine", nargs="+", choices=["native", "faust"],
                        default=["native", "faust"])
    parser.add_argument("--max-wait-ms", type=int, default=10,
                        help="batch.max_wait_ms (the demo's 10 by default)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "BOOTSTRAP", "REDIS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        print(json.dumps(child(*args.child, args.run_id, args.events, args.rate,
                               args.max_wait_ms)))
        return
    results = parent(args.events, args.rate, args.engine, args.max_wait_ms)
    if args.json:
        print(json.dumps(results))
    else:
        for engine, result in results["engines"].items():
            print(engine, " ".join(f"{k}={v}" for k, v in result.items()))


def parent(events: int, rate: float, engines: list[str], max_wait_ms: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker, EmbeddedRedis() as rds:
        pop = simulate.make_population(seed=7)
        base = demo_settings(broker.bootstrap_servers, rds.url, ROOT / "models")
        client = connect(base.redis)
        for path in simulate.write_feature_csvs(pop, Path(tmp)):
            view = path.name.split("_")[0]
            load_features(client, path, view, base.features[view])
        for engine in engines:
            run_id = uuid.uuid4().hex[:8]
            settings = bench_settings(broker.bootstrap_servers, rds.url, run_id, 0, max_wait_ms)
            if rate == 0:
                _create_topics(settings)
                produce_stream(settings.kafka.producer_config(), settings.kafka.input_topics[0],
                               encode_events(_events(pop, events)))
            out = subprocess.run(
                [sys.executable, __file__, "--child", engine, broker.bootstrap_servers, rds.url,
                 "--run-id", run_id, "--events", str(events), "--rate", str(rate),
                 "--max-wait-ms", str(max_wait_ms)],
                capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{engine} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
            results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"events": events, "rate": rate, "max_wait_ms": max_wait_ms, "engines": results,
            "machine": f"{platform.machine()} python {platform.python_version()}"}


def bench_settings(bootstrap: str, redis_url: str, run_id: str, port: int,
                   max_wait_ms: int) -> Settings:
    """The demo's settings (4 partitions, batches of up to 1,000), topics of this run."""
    base = demo_settings(bootstrap, redis_url, ROOT / "models")
    kafka = base.kafka.model_copy(update={
        "group_id": f"bench-{run_id}", "input_topics": [f"tx-{run_id}"],
        "alert_topic": f"alerts-{run_id}", "dlq_topic": f"dlq-{run_id}"})
    web = base.observability.model_copy(update={"http_host": "127.0.0.1", "http_port": port})
    tracing = base.tracing.model_copy(update={"enabled": False})
    batch = base.batch.model_copy(update={"max_wait_ms": max_wait_ms})
    return base.model_copy(update={"kafka": kafka, "observability": web, "tracing": tracing,
                                   "batch": batch})


def child(engine: str, bootstrap: str, redis_url: str, run_id: str, events: int,
          rate: float, max_wait_ms: int) -> dict[str, Any]:
    """Run one engine until ``events`` are consumed; its RunStats as a dict."""
    port = free_port()
    settings = bench_settings(bootstrap, redis_url, run_id, port, max_wait_ms)
    if rate > 0:
        threading.Thread(target=_produce_when_ready, daemon=True,
                         args=(settings, port, events, rate)).start()
    started = time.monotonic()
    stats = _run_faust(settings, events) if engine == "faust" else _run_native(settings, events)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return summary(stats, usage.ru_utime + usage.ru_stime, time.monotonic() - started)


def _run_native(settings: Settings, events: int) -> RunStats:
    from stream_infer.service.app import build_service, start_endpoints

    metrics = ServiceMetrics()
    service = build_service(settings, metrics)
    runner = service.runner
    endpoints = start_endpoints(settings, service, metrics)
    try:
        return runner.run(max_events=events)
    finally:
        if endpoints:
            endpoints.stop()


def _run_faust(settings: Settings, events: int) -> RunStats:
    from stream_infer.service.faust import run_worker

    return run_worker(settings, ServiceMetrics(), max_events=events)


def summary(stats: RunStats, cpu_s: float, wall_s: float) -> dict[str, Any]:
    c = stats.counts
    p50, p99 = stats.latency_ms.percentile(50), stats.latency_ms.percentile(99)
    return {
        "consumed": c.consumed, "alerts": c.alerted, "batches": stats.batches,
        "events_per_s": round(stats.events_per_s()),
        "mean_batch": round(c.consumed / max(stats.batches, 1)),
        "alert_p50_ms": round(p50, 1) if p50 is not None else None,
        "alert_p99_ms": round(p99, 1) if p99 is not None else None,
        "cpu_ms_per_1k_events": round(1e6 * cpu_s / max(c.consumed, 1)),
        "wall_s": round(wall_s, 1),
    }


def _produce_when_ready(settings: Settings, port: int, events: int, rate: float) -> None:
    while not _ready(port):
        time.sleep(0.05)
    pop = simulate.make_population(seed=7)
    produce_stream(settings.kafka.producer_config(), settings.kafka.input_topics[0],
                   encode_events(_events(pop, events)), rate_per_s=rate)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _events(pop: simulate.Population, count: int) -> list[dict[str, Any]]:
    return list(simulate.transactions(pop, count=count, seed=3, start_ms=time.time_ns() // 10**6))


def _create_topics(settings: Settings) -> None:
    kafka = settings.kafka
    ensure_topics(kafka.common_config(), [*kafka.input_topics, *kafka.output_topics()],
                  create=True, partitions=kafka.topic_partitions, replication_factor=1)


if __name__ == "__main__":
    main()
