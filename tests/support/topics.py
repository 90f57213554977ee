"""Test topics over real sockets: produce, read back to the end, committed offsets, spans.

Robust to Tansu's short high watermarks: reads go to partition EOF, not to a watermark.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .wait import wait_until

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp: int
    """The record's timestamp (ms)."""


def wait_for_topic(bootstrap: str, topic: str, *, timeout_s: float) -> None:
    """Until the broker lists ``topic`` (a metadata request for every topic, which never
    creates one)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_until(lambda: topic in admin.list_topics(timeout=10).topics, timeout_s,
               f"topic {topic} to exist (create it before producing to it)")


def produce(bootstrap: str, topic: str, pairs: Sequence[tuple[bytes | None, bytes | None]],
            partition: int | None = None,
            headers: Sequence[Headers | None] | None = None) -> list[tuple[int, int]]:
    """Produce ``(key, value)`` pairs (with ``headers[i]``, if given); wait until each is
    acknowledged; return each record's (partition, offset), in order.

    The topic must exist first (created by the test or by the service it started, waited
    for up to 30 s): a broker would otherwise create it on the first record with its
    default partition count (one on Apache Kafka), silently changing the test."""
    wait_for_topic(bootstrap, topic, timeout_s=30)
    placed: list[tuple[int, int] | None] = [None] * len(pairs)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})

    def on_delivery(i: int) -> Any:
        def done(err: KafkaError | None, msg: Any) -> None:
            assert err is None, err
            placed[i] = (msg.partition(), msg.offset())
        return done

    for i, (key, value) in enumerate(pairs):
        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        if headers and headers[i]:
            kwargs["headers"] = headers[i]
        producer.produce(topic, value, key, on_delivery=on_delivery(i), **kwargs)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert all(p is not None for p in placed)
    return placed  # type: ignore[return-value]


def read_all(bootstrap: str, topic: str, timeout_s: float = 30.0, *,
             isolation: str = "read_committed") -> list[Read]:
    """Every record of every partition, from the beginning to partition EOF; ``isolation``
    is the reader's ``isolation.level`` (librdkafka's default, ``read_committed``: without
    aborted records, on a broker that hides them)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": isolation})
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
                                dict(m.headers() or []), m.timestamp()[1]))
        assert not pending, f"no EOF on {topic} partitions {pending}"
        return out
    finally:
        consumer.close()


def stamped_records(bootstrap: str, topic: str, timeout_s: float = 30.0
                    ) -> list[tuple[bytes | None, bytes | None, int]]:
    """``(key, value, timestamp ms)`` of every record of ``topic`` (:func:`read_all`)."""
    return [(r.key, r.value, r.timestamp) for r in read_all(bootstrap, topic, timeout_s)]


def wait_for_records(bootstrap: str, topic: str, at_least: int, timeout_s: float = 60) -> None:
    """Wait until ``topic`` holds ``at_least`` records (it may not exist yet)."""
    wait_until(lambda: len(read_all(bootstrap, topic, timeout_s=5)) >= at_least, timeout_s,
               f"{at_least} records on {topic}", poll_s=0.5, ignoring=(AssertionError, KeyError))


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic``'s partitions, read without joining the
    group; partitions without a commit are left out."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


def ends(placed: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Per partition, the offset after the last of ``placed`` (partition, offset) pairs."""
    out: dict[int, int] = {}
    for partition, offset in placed:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out


def spans(bootstrap: str, topic: str) -> list[Any]:
    """The spans exported to ``topic`` (OTLP protobuf), each batch's resource checked to be
    the service's."""
    found = []
    for record in read_all(bootstrap, topic):
        request = ExportTraceServiceRequest()
        request.ParseFromString(record.value or b"")
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "stream-infer"
            for scope in resource.scope_spans:
                found.extend(scope.spans)
    return found
