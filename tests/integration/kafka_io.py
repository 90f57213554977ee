"""Reading and writing test topics over real sockets, robust to Tansu's short watermarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def produce(bootstrap: str, topic: str, pairs: list[tuple[bytes | None, bytes]],
            partition: int | None = None,
            headers: list[list[tuple[str, bytes]] | None] | None = None) -> list[tuple[int, int]]:
    """Produce and return each record's (partition, offset), in order."""
    placed: list[tuple[int, int] | None] = [None] * len(pairs)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})

    def on_delivery(i: int):
        def done(err: KafkaError | None, msg) -> None:
            assert err is None, err
            placed[i] = (msg.partition(), msg.offset())
        return done

    for i, (key, value) in enumerate(pairs):
        kwargs: dict = {} if partition is None else {"partition": partition}
        if headers and headers[i]:
            kwargs["headers"] = headers[i]
        producer.produce(topic, value, key, on_delivery=on_delivery(i), **kwargs)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert all(p is not None for p in placed)
    return placed  # type: ignore[return-value]


def read_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Read]:
    """Every record of every partition, from the beginning to partition EOF."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending, out = set(parts), []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                out.append(Read(m.partition(), m.offset(), m.key(), m.value(),
                                dict(m.headers() or [])))
        assert not pending, f"no EOF on {topic} partitions {pending}"
        return out
    finally:
        consumer.close()
