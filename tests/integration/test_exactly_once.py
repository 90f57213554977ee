"""``processing_guarantee = "exactly_once"``: the transactional adapter on real protocol peers.

Two peers, because neither does everything: librdkafka's in-process mock cluster runs the
transaction protocol (init, commit, abort) but does not apply transactional offset commits;
Tansu applies them and fences a stale producer. Neither hides aborted records from
``read_committed`` readers, so what is tested is what this project controls: an aborted
batch's offsets are never committed, and the batch is delivered again in a transaction
that commits.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream_infer.adapters.kafka import KafkaTransactions, ensure_topics
from stream_infer.errors import BrokerError, DeliveryError
from stream_infer.records import Output
from tests.support.configs import service_config, write_config
from tests.support.service import cli
from tests.support.topics import committed, ends, produce, read_all
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def joined_consumer(bootstrap: str, topic: str, group: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])

    def joined() -> bool:
        consumer.poll(0.2)
        return bool(consumer.assignment())

    wait_until(joined, 30, f"a consumer to join group {group}", poll_s=0)
    return consumer


def test_mock_cluster_commit_then_abort_then_commit_again() -> None:
    seed = Producer({"test.mock.num.brokers": 3, "log_level": 0})
    brokers = seed.list_topics(timeout=10).brokers.values()
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
    seed.produce("in", b"x")
    seed.flush(10)
    consumer = joined_consumer(bootstrap, "in", "eos-mock")
    try:
        txn = KafkaTransactions({"bootstrap.servers": bootstrap, "transactional.id": "t-mock",
                                 "enable.idempotence": True, "acks": "all"}, consumer, 10)
        txn.commit([Output("out", b"k", b"first")], {("in", 0): 1})
        with pytest.raises(DeliveryError, match="aborted"):  # the second record is refused
            txn.commit([Output("out", b"k", b"never"), Output("out", b"k", b"x" * 2_000_000)],
                       {("in", 0): 1})
        txn.commit([Output("out", b"k", b"second")], {("in", 0): 1})  # usable after abort
        txn.close()
    finally:
        consumer.close()
    values = {r.value for r in read_all(bootstrap, "out")}
    assert {b"first", b"second"} <= values  # the mock shows aborted records too: not checked


def test_tansu_commits_offsets_in_the_transaction_and_fences_a_stale_producer(
    broker: Any,
) -> None:
    topic, group = f"in-{uuid.uuid4().hex[:6]}", f"eos-{uuid.uuid4().hex[:6]}"
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [topic, f"{topic}-out"],
                  create=True, partitions=2, replication_factor=1)
    produce(broker.bootstrap_servers, topic, [(None, b"a")], partition=0)
    consumer = joined_consumer(broker.bootstrap_servers, topic, group)
    config = {"bootstrap.servers": broker.bootstrap_servers, "transactional.id": f"t-{group}",
              "enable.idempotence": True, "acks": "all"}
    try:
        first = KafkaTransactions(config, consumer, 10)
        first.commit([Output(f"{topic}-out", None, b"one")], {(topic, 0): 1, (topic, 1): 0})
        offsets = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert offsets[0].offset == 1

        KafkaTransactions(config, consumer, 10)  # a newer instance with the same id
        with pytest.raises(BrokerError, match="fenced"):
            first.commit([Output(f"{topic}-out", None, b"zombie")], {(topic, 0): 1})
    finally:
        consumer.close()
    assert b"zombie" not in {r.value for r in read_all(broker.bootstrap_servers,
                                                       f"{topic}-out")}


def test_the_service_in_exactly_once_mode_scores_everything_and_commits_in_transactions(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url,
        kafka={"processing_guarantee": "exactly_once"}))
    cli("simulate", "--config", str(config), "--count", "1500", "--cards", "300",
        "--merchants", "40", "--seed", "6")
    result = cli("run", "--config", str(config), "--max-events", "1500")
    assert "stopped: 1500 consumed" in result.stderr
    ids = [json.loads(r.value)["event_id"]
           for r in read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(ids) == len(set(ids)) == 1500
    inputs = read_all(broker.bootstrap_servers, f"tx-{run_id}")
    assert committed(broker.bootstrap_servers, f"g-{run_id}", f"tx-{run_id}", 2) == ends(
        (r.partition, r.offset) for r in inputs)
