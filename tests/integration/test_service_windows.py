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
import signal
from pathlib import Path
from typing import Any

import pytest

from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.failpoints import ENV
from stream_infer.features.definition import STATE_FORMAT
from stream_infer.features.labels import Label
from stream_infer.records import Transaction
from tests.support.brokers import Broker
from tests.support.service import Service
from tests.support.topics import read_all
from tests.support.windows import (
    DAY,
    SERVICE_WINDOWS,
    T0,
    check,
    config_for,
    definition,
    expected,
    labels_of,
    send_events,
    send_labels,
    served,
    wait_scored,
    week,
    weeks,
)

pytestmark = pytest.mark.integration


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


def test_a_redis_restart_that_empties_the_window_state_shows_on_the_metrics_and_the_log(
        tmp_path: Path, broker: Broker) -> None:
    """Redis restarts without persistence between two weeks: the service goes on scoring,
    and says on its ``/metrics`` and in its log, once per group, that the window state went
    back."""
    all_weeks = weeks(seed=11)
    with EmbeddedRedis() as redis_server:
        config, run_id = config_for(tmp_path, broker, redis_server.url)
        with Service(config, "lost") as service:
            week(broker, run_id, all_weeks, 0)
            before = service.metrics()
            redis_server.restart()
            send_events(broker, run_id, all_weeks[1])
            wait_scored(broker, run_id, 240)
            after = service.metrics()
            assert service.stop() == 0, service.log_tail()
    groups = ("customer", "terminal")
    assert [before.value("stream_infer_window_state_lost_total", group=g) for g in groups] \
        == [0, 0]
    assert [after.value("stream_infer_window_state_lost_total", group=g) for g in groups] \
        == [1, 1]
    log = service.log()
    assert all(log.count(f"window state of group {g} went back") == 1 for g in groups), log


def test_an_event_stamped_decades_ahead_gets_no_window_features_and_the_rest_are_served(
        tmp_path: Path, broker: Broker, redis_server: Any, redis_client: Any) -> None:
    """A payment stamped 80 years ahead of the clock arrives in the middle of the second
    week: it is scored without window features and counted ``ahead``, and every other
    event, those after it included, gets the engine's values (none too late). A label
    stamped as far ahead is a dead letter."""
    all_weeks = weeks(seed=12)
    wrong = Transaction(event_id="ahead", event_time=T0 + 80 * 365 * DAY, card_id="card1",
                        merchant_id="m1", amount=10.0, currency="EUR", customer_id="cust1",
                        terminal_id="term1")
    config, run_id = config_for(tmp_path, broker, redis_server.url)
    with Service(config, "ahead") as service:
        week(broker, run_id, all_weeks, 0)
        send_events(broker, run_id, [*all_weeks[1][:60], wrong, *all_weeks[1][60:]])
        wait_scored(broker, run_id, 241)
        send_labels(broker, run_id, [Label("w1-0", 1, T0 + 80 * 365 * DAY)], bad=3)
        scrape = service.metrics()
        assert service.stop() == 0, service.log_tail()
    dead = [r for r in read_all(broker.bootstrap_servers, f"dlq-{run_id}")
            if b"ahead of this worker's clock" in r.headers["dlq.error"]]
    assert [(r.headers["dlq.reason"], json.loads(r.value or b"")["event_id"]) for r in dead] \
        == [(b"schema", "w1-0")]  # the label stamped ahead: a dead letter, not a label
    got = served(broker, run_id)
    windows = [n for w in definition(SERVICE_WINDOWS).windows for n in w.names]
    assert all(vector[n] is None for vector in got.pop("ahead") for n in windows)
    check(got, expected(all_weeks[:2]))
    for group in ("customer", "terminal"):
        assert scrape.value("stream_infer_window_events_total", group=group,
                            outcome="ahead") == 1
        assert scrape.value("stream_infer_window_events_total", group=group,
                            outcome="too_late") == 0


def canonical_state(client: Any) -> dict[str, Any]:
    """The window state as values: each entity's kept events (their values, labels and the
    features served to them), the directory, the pending labels and the watermarks;
    without the logs' versions (which count writes) and the pending labels' arrival order
    (which count the interleaving of partitions and labels, free to differ between runs)."""
    state: dict[str, Any] = {}
    for key in sorted(client.keys(f"win{STATE_FORMAT}:*")):
        name = key.decode()
        if name.endswith(":pending:order"):
            continue
        kind = client.type(key)
        if kind == b"zset":
            state[name] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            state[name] = sorted(client.hgetall(key).items())
        elif name.endswith("}"):
            state[name] = client.get(key)[8:]
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
        scrape = restarted.metrics()
        again = scrape.value("stream_infer_window_events_total", group="customer",
                             outcome="duplicate")
        retried = scrape.series("stream_infer_window_retries_total", group="terminal")
        assert [r.value for r in retried] == [0]  # one worker: no race to lose
        for group in ("customer", "terminal"):  # week 1's logs read, week 2's written
            moved = {r.labels["direction"]: r.value for r in scrape.series(
                "stream_infer_window_log_bytes_total", group=group)}
            assert moved.keys() == {"read", "written"} and min(moved.values()) > 0, moved
        send_labels(broker, run_id, labels_of(all_weeks[1], T0 + 14 * DAY), bad=2)
        week(broker, run_id, all_weeks, 2)
        assert restarted.stop() == 0, restarted.log_tail()
    return run_id, again


def test_a_kill_after_the_window_state_write_serves_the_same_features_and_state_again(
        tmp_path: Path, broker: Broker, redis_server: Any, redis_client: Any) -> None:
    all_weeks = weeks(seed=9)
    clean_id, _ = killed_run(tmp_path / "clean", broker, redis_server.url, all_weeks, False)
    clean = canonical_state(redis_client)
    assert sum(key.endswith("}") for key in clean) == 12 + 5  # every customer and terminal
    redis_client.flushall()
    run_id, again = killed_run(tmp_path / "killed", broker, redis_server.url, all_weeks, True)
    assert again >= 1  # the killed batch's events were in the state: served what they were
    want = expected(all_weeks)
    check(served(broker, clean_id), want)
    check(served(broker, run_id), want)
    assert canonical_state(redis_client) == clean
