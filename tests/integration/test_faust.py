"""The Faust engine against the native one: same input, same outputs, offsets after delivery.

Both engines run as users run them (``stream-infer run --engine ...`` subprocesses) on the
same input topic, each with its own consumer group and output topics; the records read back
are compared field by field (everything but ``scored_at``), with the partition they landed on.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.adapters.kafka import ensure_topics, produce_stream
from stream_infer.demo.embedded import free_port
from stream_infer.offline import simulate
from tests.support.configs import service_config, write_config
from tests.support.events import bad_records, good_events, keyed
from tests.support.service import Service
from tests.support.topics import Read, committed, ends, produce, read_all, spans
from tests.support.wait import wait_until

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


def start_engine(config: Path, kind: str, name: str, max_events: int | None = None,
           **env: str) -> Service:
    """``stream-infer run --engine <kind>``, started, with its own group and outputs.

    ``kind="user-app"`` runs :data:`USER_APP`, a Faust app of its own that the engine is
    attached to, with Faust's command line (``faust -A user_app worker``).
    """
    env = {
        "STREAM_INFER_KAFKA__GROUP_ID": f"g-{name}",
        "STREAM_INFER_KAFKA__ALERT_TOPIC": f"alerts-{name}",
        "STREAM_INFER_KAFKA__SCORES_TOPIC": f"scores-{name}",
        "STREAM_INFER_KAFKA__DLQ_TOPIC": f"dlq-{name}",
        "STREAM_INFER_KAFKA__CONSUMER": json.dumps({"fetch.wait.max.ms": 10}),
        "STREAM_INFER_DECODE__MAX_PAYLOAD_BYTES": "2048",
        "STREAM_INFER_TRACING__KAFKA_TOPIC": f"traces-{name}",
        "STREAM_INFER_TRACING__SCHEDULE_DELAY_MS": "100",
        **env,
    }
    limit = ["--max-events", str(max_events)] if max_events else []
    if kind != "user-app":
        return Service(config, name, "--engine", kind, *limit, env=env).start()
    (config.parent / "user_app.py").write_text(USER_APP)
    command = ["-m", "faust", "-A", "user_app", "worker", "--without-web", "--loglevel", "info"]
    env.update(CONFIG=str(config), LIMIT=str(max_events))
    return Service(config, name, env=env, command=command, cwd=config.parent).start()


@pytest.fixture
def config(tmp_path: Path, broker: Any, redis_server: Any,
           population: simulate.Population) -> tuple[Path, str]:
    """A config file (2 input partitions, features loaded) and its input topic."""
    run_id = uuid.uuid4().hex[:8]
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [f"tx-{run_id}"],
                  create=True, partitions=2, replication_factor=1)
    sections = service_config(run_id, broker.bootstrap_servers, redis_server.url)
    return write_config(tmp_path / "config.toml", sections), f"tx-{run_id}"


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
    broker: Any, config: tuple[Path, str], population: simulate.Population
) -> None:
    (path, topic), bootstrap = config, broker.bootstrap_servers
    events = good_events(population, 1200, seed=41)
    pairs = keyed(events)
    pairs[50:50] = [(b"bad", raw) for _, raw in bad_records()]
    headers: list[Any] = [None] * len(pairs)
    for i in range(0, len(pairs), 7):
        headers[i] = [("traceparent", f"00-{TRACE_ID}-{i + 1:016x}-01".encode())]
    headers[50] = [("source", b"gateway-7")]  # a dead letter keeps its input's headers
    placed = produce(bootstrap, topic, pairs, headers=headers)

    run_id = uuid.uuid4().hex[:6]
    with start_engine(path, "native", f"native-{run_id}", max_events=len(pairs)) as native, \
            start_engine(path, "faust", f"faust-{run_id}") as faust:
        wait_until(lambda: faust.up() and faust.metrics().value(
            "stream_infer_events_consumed_total") == len(pairs), 60, "the faust engine to consume")
        metrics = faust.metrics()
        assert metrics.value("stream_infer_events_scored_total") == len(events)
        assert metrics.value("stream_infer_dead_letters_total", reason="schema") == 3
        assert metrics.value("stream_infer_model_info", name="demo", version="1",
                             role="champion") == 1
        assert metrics.value("stream_infer_stage_seconds_count", stage="emit") >= 1
        assert faust.get("/healthz")[0] == 200
        status, body = faust.get("/readyz")
        assert status == 200 and "partitions: ok 2 assigned" in body and "redis: ok" in body
        wait_until(lambda: committed(bootstrap, f"g-{faust.name}", topic, 2) == ends(placed),
                   20, "the faust engine to commit every input")
        assert faust.stop() == 0, faust.log()
        assert native.stop(60) == 0, native.log()
    assert f"stopped: {len(pairs)} consumed" in faust.log()
    assert committed(bootstrap, f"g-{native.name}", topic, 2) == ends(placed)

    outputs = {}
    for service in (native, faust):
        outputs[service] = (
            by_content(read_all(bootstrap, f"alerts-{service.name}"), "alert_id"),
            by_content(read_all(bootstrap, f"scores-{service.name}"), "event_id"),
            sorted((r.partition, r.key, r.value, sorted(r.headers.items()))
                   for r in read_all(bootstrap, f"dlq-{service.name}")),
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

    exported = spans(bootstrap, f"traces-{faust.name}")
    batches = {s.span_id: s for s in exported if s.name == "batch"}
    kids = {s.name for s in exported if s.parent_span_id in batches}
    assert batches and {"decode", "enrich", "score", "emit"} <= kids
    assert {link.trace_id.hex() for b in batches.values() for link in b.links} == {TRACE_ID}
    traced = {b.trace_id.hex() for b in batches.values()}
    for alert in read_all(bootstrap, f"alerts-{faust.name}"):
        assert alert.headers["traceparent"].decode().split("-")[1] in traced


def test_offsets_are_committed_only_after_the_outputs_are_delivered(
    broker: Any, config: tuple[Path, str], population: simulate.Population
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
    produce_stream(lz4, topic, keyed(events))
    name = f"faust-{uuid.uuid4().hex[:6]}"
    group, scores_topic = f"g-{name}", f"scores-{name}"
    down = {"STREAM_INFER_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
            "STREAM_INFER_REDIS__ON_ERROR": "pause"}
    with start_engine(path, "faust", name, **down) as paused:
        wait_until(lambda: paused.up() and paused.metrics().value("stream_infer_paused") == 1,
                   60, "the worker to pause")
        status, body = paused.get("/readyz")
        assert status == 503 and "redis: FAIL" in body
        assert paused.stop(20) == 0, paused.log()
    assert committed(bootstrap, group, topic, 2) == {}
    assert read_all(bootstrap, scores_topic) == []

    with start_engine(path, "faust", name, STREAM_INFER_FAILPOINT=(
            "after_produce=1*sleep(2500)->1*sleep(1000)->kill")) as slow:
        wait_until(lambda: "sleeping 2500 ms" in slow.log(), 30, "the first slow batch")
        time.sleep(1.5)  # three commit intervals
        assert committed(bootstrap, group, topic, 2) == {}
        assert slow.wait(30) == -signal.SIGKILL
    done = committed(bootstrap, group, topic, 2)
    delivered = set(by_content(read_all(bootstrap, scores_topic), "event_id"))
    inputs = [(r.partition, r.offset, json.loads(r.value or b"")["event_id"])
              for r in read_all(bootstrap, topic)]
    assert 0 < sum(done.values()) < len(events)
    assert all(event_id in delivered for p, offset, event_id in inputs if offset < done.get(p, 0))

    rest = len(events) - sum(done.values())
    with start_engine(path, "user-app", name, max_events=rest, BOOTSTRAP=bootstrap) as restarted:
        assert restarted.wait(60) == 0, restarted.log()
    scores = {json.loads(r.value or b"")["event_id"] for r in read_all(bootstrap, scores_topic)}
    assert scores == {e["event_id"] for e in events}
    assert sum(committed(bootstrap, group, topic, 2).values()) == len(events)
