"""Window features through the running service, as users see them on the scores topic.

Events keyed by customer on four partitions, labels on their own topic, a model that reads
window features. The stream comes in three weeks; each week's labels come after it. Every
feature the service served equals the in-memory engine (what backfill runs) fed the same
weeks: customer windows depend only on each customer's own events (one partition each) and
terminal windows, delayed a week, only on weeks before, so the order in which the workers
interleave a week cannot change a value. Then a SIGKILL after the window state is written
and before anything is committed: the restarted service serves the same values again, and
the window state ends as a run without the kill leaves it.
"""

from __future__ import annotations

import json
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.failpoints import ENV
from stream_infer.features import WindowEngine
from stream_infer.features.labels import Label
from stream_infer.records import Transaction
from tests.support.brokers import Broker
from tests.support.configs import service_config, write_config
from tests.support.service import Service
from tests.support.topics import produce, read_all, wait_for_records
from tests.support.wait import wait_until
from tests.support.windows import definition, train_on_noise

pytestmark = pytest.mark.integration
DAY = 86_400_000
T0 = 1_760_000_000_000
WINDOWS = {
    "customer": {"key": "customer_id", "lengths": ["1d", "7d"], "allowed_lateness": "30d",
                 "aggregates": ["count", "mean:amount"]},
    "terminal": {"key": "terminal_id", "lengths": ["1d", "7d"], "delay": "7d",
                 "allowed_lateness": "30d", "aggregates": ["count", "rate:label"]},
}
"""A lateness of 30 days: the workers may be days apart within a week (a partition's
events more than the lateness behind the newest seen would get no window features)."""


def weeks(seed: int = 5) -> list[list[Transaction]]:
    rng = random.Random(seed)
    out = []
    for week in range(3):
        times = sorted(rng.randrange(T0 + week * 7 * DAY, T0 + (week + 1) * 7 * DAY)
                       for _ in range(120))
        out.append([Transaction(event_id=f"w{week}-{i}", event_time=t, card_id=f"card{i % 20}",
                                merchant_id="m1", amount=round(rng.uniform(1, 300), 2),
                                currency="EUR", customer_id=f"cust{rng.randrange(12)}",
                                terminal_id=f"term{rng.randrange(5)}")
                    for i, t in enumerate(times)])
    return out


def labels_of(events: list[Transaction], when: int) -> list[Label]:
    return [Label(e.event_id, int(e.amount > 200), when) for e in events]


def config_for(tmp_path: Path, broker: Broker, redis_url: str) -> tuple[Path, str]:
    """A run's config (its Redis emptied by the ``redis_client`` fixture: window state is
    shared by every run of one definition)."""
    run_id = uuid.uuid4().hex[:8]
    train_on_noise(tmp_path / "models", [*definition(WINDOWS).names, "amount"], first_time=T0)
    sections = service_config(
        run_id, broker.bootstrap_servers, redis_url,
        kafka={"topic_partitions": 4, "labels_topic": f"labels-{run_id}"},
        model={"dir": str(tmp_path / "models"), "name": "win"}, windows=WINDOWS)
    sections["features"] = {}
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [f"labels-{run_id}"],
                  create=True, partitions=1, replication_factor=1)
    return write_config(tmp_path / "config.toml", sections), run_id


def send_events(broker: Broker, run_id: str, events: list[Transaction]) -> None:
    encode = msgspec.json.encode
    produce(broker.bootstrap_servers, f"tx-{run_id}",
            [(e.customer_id.encode() if e.customer_id else None, encode(e)) for e in events])


def send_labels(broker: Broker, run_id: str, labels: list[Label], bad: int) -> None:
    """The labels, then a bad one: its dead letter says every label before it was applied
    (one partition: in order)."""
    records = [(None, json.dumps({"event_id": label.event_id, "label": label.label,
                                  "label_time": label.label_time}).encode())
               for label in labels]
    produce(broker.bootstrap_servers, f"labels-{run_id}",
            [*records, (None, b'{"event_id": "x", "label": 7, "label_time": 1}')])
    wait_for_records(broker.bootstrap_servers, f"dlq-{run_id}", at_least=bad, timeout_s=60)


def served(broker: Broker, run_id: str) -> dict[str, list[dict[str, float | None]]]:
    """Each event's served feature vectors (one per time it was scored)."""
    out: dict[str, list[dict[str, float | None]]] = {}
    for record in read_all(broker.bootstrap_servers, f"scores-{run_id}"):
        score = json.loads(record.value or b"{}")
        out.setdefault(score["event_id"], []).append(score["features"])
    return out


def expected(all_weeks: list[list[Transaction]]) -> dict[str, dict[str, float | None]]:
    engine = WindowEngine(definition(WINDOWS))
    out: dict[str, dict[str, float | None]] = {}
    for n, week in enumerate(all_weeks):
        rows = engine.apply(week)
        for event, row in zip(week, rows, strict=True):
            out[event.event_id] = {name: None if np.isnan(v) else float(v)
                                   for name, v in zip(engine.names, row.tolist(), strict=True)}
        engine.apply([], labels_of(week, T0 + (n + 1) * 7 * DAY))
    return out


def check(got: dict[str, list[dict[str, float | None]]],
          want: dict[str, dict[str, float | None]]) -> None:
    assert set(got) == set(want)
    for event_id, vectors in got.items():
        for vector in vectors:
            assert {k: vector[k] for k in want[event_id]} == want[event_id], event_id


def wait_scored(broker: Broker, run_id: str, events: int) -> None:
    """Wait until ``events`` distinct events were scored (a re-served one counts once)."""
    wait_until(lambda: len(served(broker, run_id)) >= events, 90,
               f"{events} events scored", poll_s=0.5, ignoring=(AssertionError, KeyError))


def week(broker: Broker, run_id: str, all_weeks: list[list[Transaction]], n: int) -> None:
    """Week ``n``: its events, scored, then its labels, applied."""
    send_events(broker, run_id, all_weeks[n])
    wait_scored(broker, run_id, sum(len(w) for w in all_weeks[:n + 1]))
    send_labels(broker, run_id, labels_of(all_weeks[n], T0 + (n + 1) * 7 * DAY), bad=n + 1)


def test_two_workers_serve_the_window_features_the_engine_computes(
        tmp_path: Path, broker: Broker, redis_server: Any, redis_client: Any) -> None:
    config, run_id = config_for(tmp_path, broker, redis_server.url)
    all_weeks = weeks()
    with Service(config, "windows", "--workers", "2") as service:
        for n in range(len(all_weeks)):
            week(broker, run_id, all_weeks, n)
        metrics = [service.metrics(worker) for worker in (1, 2)]
        assert service.stop() == 0, service.log_tail()
    got = served(broker, run_id)
    check(got, expected(all_weeks))
    assert all(len(v) == 1 for v in got.values())
    assert sum(m.value("stream_infer_labels_total") for m in metrics) == 360
    dead = [r for r in read_all(broker.bootstrap_servers, f"dlq-{run_id}")]
    assert len(dead) == 3
    assert {r.headers["dlq.source.topic"] for r in dead} == {f"labels-{run_id}".encode()}
    assert all(r.headers["dlq.reason"] == b"schema" for r in dead), [r.headers for r in dead]


def canonical_state(client: Any) -> dict[str, Any]:
    """The window state as values: each kept event's values and labels, the pending labels
    and the watermarks; without arrival numbers (which count the interleaving of partitions
    and labels, free to differ between two runs) and the saved served features (a cache)."""
    state: dict[str, Any] = {}
    for key in sorted(client.keys("win1:*")):
        name = key.decode()
        if name.endswith((":seq", ":memo", ":pending:order")):
            continue
        kind = client.type(key)
        if kind == b"zset":
            state[name] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            values = client.hgetall(key)
            if name.endswith(":ev"):
                values = {k: v.split(b"|", 1)[1:] for k, v in values.items()}
            elif name.endswith(":lab"):
                values = {k: [e.split(b",", 1)[1] for e in v.split(b";")]
                          for k, v in values.items()}
            state[name] = sorted(values.items())
        else:
            state[name] = client.get(key)
    return state


def killed_run(tmp_path: Path, broker: Broker, redis_url: str,
               all_weeks: list[list[Transaction]], kill: bool) -> tuple[str, float]:
    """The three weeks on one service, killed after the window state write of the second
    week's second batch (``kill``); the run id and how many events the restarted service
    found already in the state."""
    tmp_path.mkdir()
    config, run_id = config_for(tmp_path, broker, redis_url)
    with Service(config, "first") as first:
        week(broker, run_id, all_weeks, 0)
        assert first.stop() == 0, first.log_tail()
    if kill:
        with Service(config, "victim", env={ENV: "after_window_state=1*off->kill"}) as victim:
            send_events(broker, run_id, all_weeks[1])  # over 100 events: two batches at least
            assert victim.wait(60) == -signal.SIGKILL, victim.log_tail()
        assert "fail point after_window_state: SIGKILL" in victim.log()
    else:
        send_events(broker, run_id, all_weeks[1])
    with Service(config, "restarted") as restarted:
        wait_scored(broker, run_id, 240)
        again = restarted.metrics().value("stream_infer_window_events_total", group="customer",
                                          outcome="duplicate")
        send_labels(broker, run_id, labels_of(all_weeks[1], T0 + 14 * DAY), bad=2)
        week(broker, run_id, all_weeks, 2)
        assert restarted.stop() == 0, restarted.log_tail()
    return run_id, again


def test_a_kill_after_the_window_state_write_serves_the_same_features_and_state_again(
        tmp_path: Path, broker: Broker, redis_server: Any, redis_client: Any) -> None:
    all_weeks = weeks(seed=9)
    clean_id, _ = killed_run(tmp_path / "clean", broker, redis_server.url, all_weeks, False)
    clean = canonical_state(redis_client)
    assert sum(key.endswith(":ev") for key in clean) == 12 + 5  # every customer and terminal
    redis_client.flushall()
    run_id, again = killed_run(tmp_path / "killed", broker, redis_server.url, all_weeks, True)
    assert again >= 1  # the killed batch's events were in the state: served as of then
    want = expected(all_weeks)
    check(served(broker, clean_id), want)
    check(served(broker, run_id), want)
    assert canonical_state(redis_client) == clean
