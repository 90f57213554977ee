"""The Faust engine against the native one: same input, same outputs, offsets after delivery.

Both engines run as users run them (``stream-infer run --engine ...`` subprocesses) on the
same input topic, each with its own consumer group and output topics; the records read back
are compared field by field (everything but ``scored_at``), with the partition they landed on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_infer.adapters.kafka import ensure_topics, produce_stream
from stream_infer.demo.embedded import free_port
from stream_infer.offline import simulate

from .kafka_io import Read, produce, read_all
from .test_cli import write_config
from .test_observability import get, metric, wait_until
from .test_service import bad_records, good_events, population  # noqa: F401  (module fixture)
from .test_tracing import spans_on

pytestmark = pytest.mark.integration
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


USER_APP = """
import os, signal
import faust
from stream_infer.config import load_settings
from stream_infer.service.faust import attach

app = faust.App(os.environ["STREAM_INFER_KAFKA__GROUP_ID"],
                broker="kafka://" + os.environ["BOOTSTRAP"], web_enabled=False)
engine = attach(app, load_settings(os.environ["CONFIG"]), max_events=int(os.environ["LIMIT"]))
engine.on_limit = lambda: os.kill(os.getpid(), signal.SIGTERM)
"""


class Service:
    """``stream-infer run`` in a subprocess, its log in a file, its own group and outputs.

    ``engine="user-app"`` runs :data:`USER_APP`, a Faust app of its own that the engine is
    attached to, with Faust's command line (``faust -A user_app worker``).
    """

    def __init__(self, config: Path, tmp_path: Path, engine: str, name: str,
                 max_events: int | None = None, **env: str) -> None:
        self.name, self.port = name, free_port()
        self.log = tmp_path / f"{name}-{uuid.uuid4().hex[:4]}.log"
        self.env = {
            "STREAM_INFER_KAFKA__GROUP_ID": f"g-{name}",
            "STREAM_INFER_KAFKA__ALERT_TOPIC": f"alerts-{name}",
            "STREAM_INFER_KAFKA__SCORES_TOPIC": f"scores-{name}",
            "STREAM_INFER_KAFKA__DLQ_TOPIC": f"dlq-{name}",
            "STREAM_INFER_KAFKA__CONSUMER": json.dumps({"fetch.wait.max.ms": 10}),
            "STREAM_INFER_DECODE__MAX_PAYLOAD_BYTES": "2048",
            "STREAM_INFER_TRACING__KAFKA_TOPIC": f"traces-{name}",
            "STREAM_INFER_TRACING__SCHEDULE_DELAY_MS": "100",
            "STREAM_INFER_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
            "STREAM_INFER_OBSERVABILITY__HTTP_PORT": str(self.port),
            **env,
        }
        limit = ["--max-events", str(max_events)] if max_events else []
        argv = ["stream_infer", "run", "--engine", engine, "--config", str(config), *limit]
        if engine == "user-app":
            (tmp_path / "user_app.py").write_text(USER_APP)
            argv = ["faust", "-A", "user_app", "worker", "--without-web", "--loglevel", "info"]
            self.env.update(CONFIG=str(config), LIMIT=str(max_events))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, cwd=tmp_path)

    def metrics(self) -> str:
        return get(self.port, "/metrics")[1]

    def up(self) -> bool:
        try:
            return get(self.port, "/healthz")[0] in (200, 503)
        except OSError:
            return False

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM (if still running); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def logged(self) -> str:
        return self.log.read_text()


@pytest.fixture
def config(tmp_path: Path, broker: Any, redis_server: Any,
           population: simulate.Population) -> tuple[Path, str]:  # noqa: F811
    """A config file (2 input partitions, features loaded) and its input topic."""
    run_id = uuid.uuid4().hex[:8]
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [f"tx-{run_id}"],
                  create=True, partitions=2, replication_factor=1)
    return write_config(tmp_path, broker, redis_server, run_id), f"tx-{run_id}"


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


Placed = tuple[int, bytes | None, dict[str, Any]]


def by_content(records: list[Read], key: str) -> dict[str, Placed]:
    """Records by a field of their JSON value: (partition, key, value without scored_at)."""
    out = {}
    for record in records:
        doc = json.loads(record.value or b"")
        doc.pop("scored_at")
        assert doc[key] not in out, f"duplicate {key} {doc[key]}"
        out[doc[key]] = (record.partition, record.key, doc)
    return out


def test_the_faust_engine_emits_what_the_native_engine_emits(
    tmp_path: Path, broker: Any, config: tuple[Path, str],
    population: simulate.Population,  # noqa: F811
) -> None:
    (path, topic), bootstrap = config, broker.bootstrap_servers
    events = good_events(population, 1200, seed=41)
    pairs = [(e["card_id"].encode(), json.dumps(e).encode()) for e in events]
    pairs[50:50] = [(b"bad", raw) for _, raw in bad_records()]
    headers: list[Any] = [None] * len(pairs)
    for i in range(0, len(pairs), 7):
        headers[i] = [("traceparent", f"00-{TRACE_ID}-{i + 1:016x}-01".encode())]
    headers[50] = [("source", b"gateway-7")]  # a dead letter keeps its input's headers
    placed = produce(bootstrap, topic, pairs, headers=headers)
    ends = {p: max(o for q, o in placed if q == p) + 1 for p, _ in placed}

    run_id = uuid.uuid4().hex[:6]
    native = Service(path, tmp_path, "native", f"native-{run_id}", max_events=len(pairs))
    faust = Service(path, tmp_path, "faust", f"faust-{run_id}")
    try:
        wait_until(lambda: faust.up() and metric(
            faust.metrics(), "stream_infer_events_consumed_total") == len(pairs), 60)
        text = faust.metrics()
        assert metric(text, "stream_infer_events_scored_total") == len(events)
        assert metric(text, "stream_infer_dead_letters_total", reason="schema") == 3
        assert metric(text, "stream_infer_model_info", name="demo", version="1",
                      role="champion") == 1
        assert metric(text, "stream_infer_stage_seconds_count", stage="emit") >= 1
        assert get(faust.port, "/healthz")[0] == 200
        status, body = get(faust.port, "/readyz")
        assert status == 200 and "partitions: ok 2 assigned" in body and "redis: ok" in body
        wait_until(lambda: committed(bootstrap, f"g-{faust.name}", topic, 2) == ends, 20)
    finally:
        assert faust.stop() == 0, faust.logged()
        assert native.stop(60) == 0, native.logged()
    assert f"stopped: {len(pairs)} consumed" in faust.logged()
    assert committed(bootstrap, f"g-{native.name}", topic, 2) == ends

    outputs = {}
    for engine in (native, faust):
        outputs[engine] = (
            by_content(read_all(bootstrap, f"alerts-{engine.name}"), "alert_id"),
            by_content(read_all(bootstrap, f"scores-{engine.name}"), "event_id"),
            sorted((r.partition, r.key, r.value, sorted(r.headers.items()))
                   for r in read_all(bootstrap, f"dlq-{engine.name}")),
        )
    (native_alerts, native_scores, native_dlq) = outputs[native]
    (faust_alerts, faust_scores, faust_dlq) = outputs[faust]
    assert len(native_scores) == len(events) and len(native_dlq) == len(bad_records())
    assert 0 < len(native_alerts) < len(events)
    assert faust_alerts == native_alerts  # ids, scores, reasons, keys and partitions
    assert faust_scores == native_scores
    assert [d[:3] for d in faust_dlq] == [d[:3] for d in native_dlq]
    for (*_, native_headers), (*_, faust_headers) in zip(native_dlq, faust_dlq, strict=True):
        assert dict(faust_headers) == dict(native_headers)
    assert sum(dict(h).get("source") == b"gateway-7" for *_, h in faust_dlq) == 1

    spans = spans_on(bootstrap, f"traces-{faust.name}")
    batches = {s.span_id: s for s in spans if s.name == "batch"}
    kids = {s.name for s in spans if s.parent_span_id in batches}
    assert batches and {"decode", "enrich", "score", "emit"} <= kids
    assert {link.trace_id.hex() for b in batches.values() for link in b.links} == {TRACE_ID}
    traced = {b.trace_id.hex() for b in batches.values()}
    for alert in read_all(bootstrap, f"alerts-{faust.name}"):
        assert alert.headers["traceparent"].decode().split("-")[1] in traced


def test_offsets_are_committed_only_after_the_outputs_are_delivered(
    tmp_path: Path, broker: Any, config: tuple[Path, str],
    population: simulate.Population,  # noqa: F811
) -> None:
    """Three runs of one group over the same events (lz4-compressed, as the native producer).

    1. Redis down under ``pause``: the first batch cannot be scored. SIGTERM: the worker exits
       promptly, having committed and emitted nothing.
    2. Redis back, but the first batch waits 2.5 s between producing its outputs and flushing
       them (a fail point), the second 1 s, and the process is SIGKILLed at the third: nothing
       is committed during the first wait, and every offset committed was delivered.
    3. The engine attached to a Faust app of its own (``faust worker``) resumes from the
       committed offsets: every event is scored.
    """
    (path, topic), bootstrap = config, broker.bootstrap_servers
    events = good_events(population, 300, seed=43)
    lz4 = {"bootstrap.servers": bootstrap, "compression.type": "lz4"}
    produce_stream(lz4, topic, [(e["card_id"].encode(), json.dumps(e).encode()) for e in events])
    name = f"faust-{uuid.uuid4().hex[:6]}"
    group, scores_topic = f"g-{name}", f"scores-{name}"
    down = {"STREAM_INFER_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
            "STREAM_INFER_REDIS__ON_ERROR": "pause"}
    paused = Service(path, tmp_path, "faust", name, **down)
    try:
        wait_until(lambda: paused.up() and metric(paused.metrics(), "stream_infer_paused") == 1)
        status, body = get(paused.port, "/readyz")
        assert status == 503 and "redis: FAIL" in body
    finally:
        assert paused.stop(20) == 0, paused.logged()
    assert committed(bootstrap, group, topic, 2) == {}
    assert read_all(bootstrap, scores_topic) == []

    slow = Service(path, tmp_path, "faust", name,
                   STREAM_INFER_FAILPOINT="after_produce=1*sleep(2500)->1*sleep(1000)->kill")
    wait_until(lambda: "sleeping 2500 ms" in slow.logged(), 30)
    time.sleep(1.5)  # three commit intervals
    assert committed(bootstrap, group, topic, 2) == {}
    assert slow.process.wait(30) == -signal.SIGKILL
    done = committed(bootstrap, group, topic, 2)
    delivered = set(by_content(read_all(bootstrap, scores_topic), "event_id"))
    inputs = [(r.partition, r.offset, json.loads(r.value or b"")["event_id"])
              for r in read_all(bootstrap, topic)]
    assert 0 < sum(done.values()) < len(events)
    assert all(event_id in delivered for p, offset, event_id in inputs if offset < done.get(p, 0))

    rest = len(events) - sum(done.values())
    restarted = Service(path, tmp_path, "user-app", name, max_events=rest, BOOTSTRAP=bootstrap)
    assert restarted.process.wait(60) == 0, restarted.logged()
    scores = {json.loads(r.value or b"")["event_id"] for r in read_all(bootstrap, scores_topic)}
    assert scores == {e["event_id"] for e in events}
    assert sum(committed(bootstrap, group, topic, 2).values()) == len(events)
