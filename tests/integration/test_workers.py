"""``stream-infer run --workers N``: N processes in one group share the partitions; and two
services in one group hand partitions over (cooperative-sticky) when one leaves."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.offline import simulate
from stream_infer.service.ports import server_ports
from tests.support.brokers import Broker
from tests.support.configs import service_config, write_config
from tests.support.events import good_events, keyed
from tests.support.metrics import get
from tests.support.service import Service, cli
from tests.support.topics import produce, read_all, wait_for_records
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def holds_partitions(port: int) -> bool:
    """True once the worker answering on ``port`` has partitions assigned."""
    return re.search(r"partitions: ok [1-9]", get(port, "/readyz")[1]) is not None


def test_two_workers_split_the_partitions_and_score_everything_once(
    tmp_path: Path, broker: Broker, redis_server: Any
) -> None:
    """The events are produced once both workers hold partitions: on Apache Kafka the first
    worker to join would otherwise score them all before the second joins."""
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url, kafka={"topic_partitions": 4}))
    with Service(config, "supervisor", "--workers", "2") as supervisor:
        wait_until(lambda: all(holds_partitions(supervisor.port + w) for w in (1, 2)), 60,
                   "both workers to hold partitions", poll_s=0.5, ignoring=(OSError,))
        cli("simulate", "--config", str(config), "--count", "3000", "--cards", "300",
            "--merchants", "40", "--seed", "8")
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=3000,
                         timeout_s=90)
        time.sleep(0.5)
        per_worker = [supervisor.metrics(worker).value("stream_infer_events_consumed_total")
                      for worker in (1, 2)]
        assert supervisor.stop() == 0, supervisor.log_tail()
    assert supervisor.log().count("SIGTERM received") == 2  # forwarded to both workers

    ids = [json.loads(r.value)["event_id"]
           for r in read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(ids) == len(set(ids)) == 3000
    assert sum(per_worker) >= 3000 and all(n > 0 for n in per_worker), per_worker


def test_a_worker_that_dies_takes_the_unit_down_with_its_exit_code(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url, model={"name": "no-such-model"},
        observability={"http_port": server_ports(3)}))  # not the default 9464 another may hold
    result = cli("run", "--config", str(config), "--workers", "2", check=False)
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "a worker exited with 2" in result.stderr


def test_a_member_that_leaves_hands_its_partitions_over_and_nothing_is_lost(
    tmp_path: Path, broker: Broker, redis_server: Any, population: simulate.Population
) -> None:
    """Two services in one cooperative-sticky group, on the broker's group coordinator: the
    second to join takes half the partitions, the first keeping its other half throughout;
    the second stops (SIGTERM: it commits, then leaves the group) and the first takes its
    partitions over. Every event is scored exactly once."""
    run_id = uuid.uuid4().hex[:8]
    bootstrap, topic = broker.bootstrap_servers, f"tx-{run_id}"
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], create=True, partitions=4,
                  replication_factor=1)
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, bootstrap, redis_server.url,
        kafka={"topic_partitions": 4, "consumer": {"fetch.wait.max.ms": 10}}))
    events = good_events(population, 2000, seed=12)
    every = {f"{topic}[{p}]" for p in range(4)}

    with Service(config, "first") as first:
        wait_until(lambda: first.assignment() == every, 60, "the first member to own every "
                   "partition", poll_s=0.5)
        produce(bootstrap, topic, keyed(events[:1000]))
        with Service(config, "second") as second:
            wait_until(lambda: len(first.assignment()) == len(second.assignment()) == 2, 60,
                       "the two members to share the partitions", poll_s=0.5)
            kept, handed = first.assignment(), second.assignment()
            assert kept | handed == every
            assert second.stop() == 0, second.log_tail()
        assert second.revoked() == handed and second.assignment() == set()
        wait_until(lambda: first.assignment() == every, 60, "the first member to take the "
                   "partitions over", poll_s=0.5)
        produce(bootstrap, topic, keyed(events[1000:]))
        wait_for_records(bootstrap, f"scores-{run_id}", at_least=len(events))
        assert first.revoked() == handed, "the first member gave up a partition it kept"
        assert first.stop() == 0, first.log_tail()

    ids = [json.loads(r.value or b"")["event_id"]
           for r in read_all(bootstrap, f"scores-{run_id}")]
    assert sorted(ids) == sorted(e["event_id"] for e in events)
