"""A real Apache Kafka 4 broker: what Tansu cannot show (transactions, record-level time lookup).

The session's ``kafka`` (tests/conftest.py); each test makes its own topic. Without Java the
tests skip (fail, in CI).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from stream_infer.adapters.kafka import ensure_topics, resolve_range
from stream_infer.demo.apache_kafka import ApacheKafka
from stream_infer.errors import BrokerError

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(kafka: ApacheKafka) -> str:
    name = f"apache-{uuid.uuid4().hex[:8]}"
    ensure_topics(client(kafka), [name], create=True, partitions=1, replication_factor=1)
    return name


def client(kafka: ApacheKafka) -> dict[str, str | int]:
    return {"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0}


def produce(kafka: ApacheKafka, topic: str, values: Sequence[bytes], *,
            timestamps: Sequence[int] | None = None) -> None:
    producer = Producer({**client(kafka), "linger.ms": 50})
    for i, value in enumerate(values):
        producer.produce(topic, value, timestamp=timestamps[i] if timestamps else 0)
    assert producer.flush(10) == 0


def read_to_end(kafka: ApacheKafka, topic: str, isolation: str = "read_uncommitted"
                ) -> list[Message]:
    """Every record of partition 0 up to the end of log this isolation level sees."""
    consumer = Consumer({**client(kafka), "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.partition.eof": True, "isolation.level": isolation,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records: list[Message] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                return records
            assert error is None, error
            records.append(message)
        raise AssertionError(f"no end of {topic} within 20 s after {len(records)} records")
    finally:
        consumer.close()


def watermarks(kafka: ApacheKafka, topic: str) -> tuple[int, int]:
    consumer = Consumer({**client(kafka), "group.id": "watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def test_a_record_round_trips(kafka: ApacheKafka, topic: str) -> None:
    produce(kafka, topic, [b"one", b"two"])
    assert [m.value() for m in read_to_end(kafka, topic)] == [b"one", b"two"]
    assert watermarks(kafka, topic) == (0, 2)


def test_read_committed_skips_an_aborted_transaction(kafka: ApacheKafka, topic: str) -> None:
    producer = Producer({**client(kafka), "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    aborted, committed = [b"aborted-1", b"aborted-2"], [b"committed-1", b"committed-2"]
    for values, end in ((aborted, producer.abort_transaction),
                        (committed, producer.commit_transaction)):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value)
        producer.flush(10)
        end(30)

    assert [m.value() for m in read_to_end(kafka, topic, "read_committed")] == committed
    assert [m.value() for m in read_to_end(kafka, topic)] == aborted + committed
    assert watermarks(kafka, topic) == (0, 6), "four records and two transaction markers"


def test_offsets_for_times_finds_the_first_record_at_or_after_a_time(
    kafka: ApacheKafka, topic: str
) -> None:
    start = int(time.time() * 1000) - 86_400_000
    stamps = [start + 1000 * i for i in range(30)]
    for batch in range(3):
        produce(kafka, topic, [f"r{i}".encode() for i in range(batch * 10, batch * 10 + 10)],
                timestamps=stamps[batch * 10: batch * 10 + 10])

    consumer = Consumer({**client(kafka), "group.id": "times"})
    try:
        def offset_at(when_ms: int) -> int:
            (found,) = consumer.offsets_for_times([TopicPartition(topic, 0, when_ms)], timeout=10)
            return int(found.offset)

        assert [offset_at(t) for t in stamps] == list(range(30))
        assert [offset_at(t - 999) for t in stamps] == list(range(30))
        assert offset_at(stamps[-1] + 1) == -1
    finally:
        consumer.close()
    assert watermarks(kafka, topic) == (0, 30)
    assert resolve_range(client(kafka), topic, from_ms=stamps[12] - 1, to_ms=stamps[25]) == {
        0: (12, 25)}


def test_a_port_in_use_fails_before_another_broker_answers_for_it(kafka: ApacheKafka) -> None:
    second = ApacheKafka(kafka.port)
    with pytest.raises(BrokerError, match=f"{kafka.bootstrap_servers} is already in use"):
        second.start()
    assert second.process is None
    assert second.workdir is None


def test_stop_ends_the_process_group_and_removes_the_directory(kafka_available: None) -> None:
    with ApacheKafka() as running:
        assert running.process is not None and running.workdir is not None
        pid, workdir = running.process.pid, running.workdir
        assert (workdir / "kafka.log").is_file()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
