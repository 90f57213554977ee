"""``processing_guarantee = "exactly_once"``: the transactional adapter on real protocol peers.

Three peers. librdkafka's in-process mock cluster runs the transaction protocol (init,
commit, abort) but does not apply transactional offset commits. Tansu applies them and
fences a stale producer, but shows aborted records to ``read_committed`` readers. Apache
Kafka does all of it, so there the tests also assert what a reader of the outputs relies
on: a ``read_committed`` reader never sees an aborted record. On Tansu, what is asserted is
what this project controls: an aborted batch's offsets are never committed, and the batch
is delivered again in a transaction that commits.
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
from tests.support.brokers import Broker
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


def test_offsets_commit_in_the_transaction_and_a_stale_producer_is_fenced(
    broker: Broker,
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


class FencedMidway:
    """The consumer a zombie's transaction sees: asked for its group metadata (after the
    outputs were produced, before the offsets are sent), it first waits until the outputs
    are in the log, then starts a newer instance of the producer, which fences the zombie
    and aborts its open transaction."""

    def __init__(self, consumer: Consumer, zombie: Producer, config: dict[str, Any]) -> None:
        self.consumer, self.zombie, self.config = consumer, zombie, config
        self.newer: KafkaTransactions | None = None

    def consumer_group_metadata(self) -> Any:
        assert self.zombie.flush(10) == 0, "the zombie's outputs never reached the log"
        self.newer = KafkaTransactions(self.config, self.consumer, 30)
        return self.consumer.consumer_group_metadata()


def test_a_fenced_zombies_outputs_are_aborted_and_its_offsets_never_committed(
    broker: Broker, broker_kind: str
) -> None:
    """A zombie's outputs reach the log inside a transaction, which a newer instance with the
    same ``transactional.id`` aborts as it starts; the zombie's commit fails as fenced.

    On Apache Kafka a ``read_committed`` reader never sees the aborted outputs, although a
    ``read_uncommitted`` reader finds them in the log. Tansu shows them to both (README, "The
    embedded broker's limits"), so there the readers are not compared: what is asserted on
    both is the client's part, the fencing and the offsets the zombie never committed."""
    topic, group = f"in-{uuid.uuid4().hex[:6]}", f"eos-{uuid.uuid4().hex[:6]}"
    out, bootstrap = f"{topic}-out", broker.bootstrap_servers
    ensure_topics({"bootstrap.servers": bootstrap}, [topic, out], create=True, partitions=1,
                  replication_factor=1)
    produce(bootstrap, topic, [(None, b"a"), (None, b"b")], partition=0)
    consumer = joined_consumer(bootstrap, topic, group)
    config = {"bootstrap.servers": bootstrap, "transactional.id": f"t-{group}",
              "enable.idempotence": True, "acks": "all"}
    zombies = [b"zombie-1", b"zombie-2"]
    try:
        zombie = KafkaTransactions(config, consumer, 10)
        zombie.commit([Output(out, None, b"committed")], {(topic, 0): 1})
        midway = FencedMidway(consumer, zombie.producer, config)
        zombie.consumer = midway  # type: ignore[assignment]
        with pytest.raises(BrokerError, match="fenced"):
            zombie.commit([Output(out, None, value) for value in zombies], {(topic, 0): 2})
        assert midway.newer is not None
        assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 1
        midway.newer.commit([Output(out, None, b"redone")], {(topic, 0): 2})
        assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 2
    finally:
        consumer.close()
    in_log = [r.value for r in read_all(bootstrap, out, isolation="read_uncommitted")]
    assert set(zombies) <= set(in_log), "the zombie's outputs never reached the log"
    if broker_kind == "kafka":
        assert [r.value for r in read_all(bootstrap, out)] == [b"committed", b"redone"]


def test_the_service_in_exactly_once_mode_scores_everything_and_commits_in_transactions(
    tmp_path: Path, broker: Broker, redis_server: Any
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
