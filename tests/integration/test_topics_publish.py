"""``stream-infer topics publish``: a history file into a topic, read back from the broker:
every record once, keyed by its card, with its event time as the Kafka timestamp."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_infer.demo.embedded import EmbeddedBroker
from stream_infer.offline import simulate
from stream_infer.records import epoch_ms
from tests.support.events import history, write_lines
from tests.support.population import population
from tests.support.service import cli

pytestmark = pytest.mark.integration
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def stamped_records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes, int]]:
    """(key, value, timestamp ms) of every record of ``topic``, read to partition EOF."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "publish-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending, out = set(parts), []
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                out.append((m.key(), m.value(), m.timestamp()[1]))
        assert not pending, f"no EOF on {topic} partitions {pending}"
        return out
    finally:
        consumer.close()


def events(count: int) -> list[dict[str, Any]]:
    """Simulated events, every third with an RFC 3339 event_time in another offset."""
    out = list(simulate.transactions(population(), count=count, seed=5, rate_per_s=0.5))
    plus_two = dt.timezone(dt.timedelta(hours=2))
    for event in out[::3]:
        when = EPOCH + dt.timedelta(milliseconds=event["event_time"])
        event["event_time"] = when.astimezone(plus_two).isoformat()
    return out


def event_ms(when: int | str) -> int:
    return when if isinstance(when, int) else epoch_ms(dt.datetime.fromisoformat(when))


def expected(rows: list[dict[str, Any]]) -> list[tuple[bytes, int]]:
    return sorted((r["card_id"].encode(), event_ms(r["event_time"])) for r in rows)


def publish(broker: EmbeddedBroker, path: Path, topic: str, *args: str, check: bool = True
            ) -> Any:
    return cli("topics", "publish", str(path), "--topic", topic,
               "--bootstrap-servers", broker.bootstrap_servers, *args, check=check)


def test_a_jsonl_history_lands_keyed_by_card_with_event_times_as_timestamps(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rows = events(600)
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    topic = f"published-{uuid.uuid4().hex[:8]}"

    out = publish(broker, path, topic).stdout

    assert f"published 600 records from history.jsonl to {topic}" in out
    read = stamped_records(broker.bootstrap_servers, topic)
    assert len(read) == 600
    assert {value: (key, ts) for key, value, ts in read} == {  # each value as it was read
        json.dumps(r).encode(): (r["card_id"].encode(), event_ms(r["event_time"])) for r in rows}


@pytest.mark.parametrize("time_type", [pa.int64(), pa.timestamp("ms", tz="UTC")],
                         ids=["epoch-ms", "timestamp"])
def test_a_parquet_history_is_published_row_by_row(broker: EmbeddedBroker, tmp_path: Path,
                                                    time_type: pa.DataType) -> None:
    rows = list(simulate.transactions(population(), count=200, seed=6, rate_per_s=0.5))
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "attributes"}
                                  for r in rows])
    table = table.set_column(table.schema.get_field_index("event_time"), "event_time",
                             table.column("event_time").cast(time_type))
    path = tmp_path / "history.parquet"
    pq.write_table(table, path)
    topic = f"published-{uuid.uuid4().hex[:8]}"

    publish(broker, path, topic)

    read = stamped_records(broker.bootstrap_servers, topic)
    assert sorted((key, ts) for key, _, ts in read) == expected(rows)


def test_an_unreadable_event_time_refuses_the_file_or_is_skipped_and_counted(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    lines = history(60)  # a tombstone at line 5, "{not json" at 10, "[1, 2]" at 32
    path = write_lines(tmp_path / "history.jsonl", lines)
    topic = f"published-{uuid.uuid4().hex[:8]}"

    refused = publish(broker, path, topic, check=False)
    assert refused.returncode == 2
    assert "history.jsonl line 5: event_time cannot be read" in refused.stderr
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    assert topic not in admin.list_topics(timeout=10).topics  # nothing created or produced

    out = publish(broker, path, topic, "--skip-unreadable").stdout
    assert f"published 57 records from history.jsonl to {topic}" in out
    assert "skipped 3 whose event_time could not be read (the first at history.jsonl line 5)" \
        in out
    read = stamped_records(broker.bootstrap_servers, topic)
    assert len(read) == 57
    kept = [line for line in lines if line and line[:1] == b"{" and line != b"{not json"]
    assert sorted(value for _, value, _ in read) == sorted(kept)
