"""``stream-infer topics publish``: a history file into a topic, read back from the broker:
every record once, keyed by its card, with its event time as the Kafka timestamp; a history
a month old still all there after the broker's time retention ran, and the histories a
broker would delete or refuse turned away before anything is written."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stream_infer.demo.apache_kafka import ApacheKafka
from stream_infer.demo.embedded import EmbeddedBroker
from stream_infer.offline import simulate
from stream_infer.records import epoch_ms
from tests.support.brokers import Broker
from tests.support.events import history, write_lines
from tests.support.population import population
from tests.support.service import cli
from tests.support.topics import stamped_records

pytestmark = pytest.mark.integration
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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


def publish(broker: Broker, path: Path, topic: str, *args: str, check: bool = True
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


DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
RETENTION_CHECK = {"log.retention.check.interval.ms": "500", "log.initial.task.delay.ms": "0"}
"""Apache Kafka's retention check every half second from the start (by default every 5 min,
the first 30 s after start), all else the broker's defaults."""


@pytest.fixture(scope="module")
def defaults_broker(broker_kind: str, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's Tansu, or an Apache Kafka of this module's own with the default time
    limits (``log.retention.ms`` 7 days, records at most 1 h ahead), unlike the session's,
    and its retention check every half second."""
    if broker_kind == "tansu":
        yield request.getfixturevalue("tansu")
        return
    with ApacheKafka(broker_config=RETENTION_CHECK) as running:
        yield running


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def history_file(tmp_path: Path, *, start_ms: int, count: int = 300) -> tuple[Path, list[Any]]:
    """``count`` simulated events from ``start_ms``, one about every 2 s of event time."""
    rows = list(simulate.transactions(population(), count=count, seed=8, start_ms=start_ms,
                                      rate_per_s=0.5))
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def retention_ms(bootstrap: str, topic: str) -> str | None:
    """The topic's ``retention.ms`` as DescribeConfigs reports it (None when not listed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource], request_timeout=10)[resource].result(timeout=15)
    entry = entries.get("retention.ms")
    return None if entry is None else str(entry.value)


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "publish-watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def create(bootstrap: str, topic: str, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=config or {})],
                                      request_timeout=10).values():
        future.result(timeout=15)


def deleted_by_retention(broker: Broker, rows: list[Any]) -> str:
    """A topic of the broker's default retention holding ``rows`` as raw records, once the
    broker's retention check deleted them all: the proof that it has run since they were
    written (Apache Kafka only)."""
    control = f"control-{uuid.uuid4().hex[:8]}"
    create(broker.bootstrap_servers, control)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for row in rows:
        producer.produce(control, json.dumps(row).encode(), timestamp=event_ms(row["event_time"]))
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 60
    while (marks := watermarks(broker.bootstrap_servers, control)) != (len(rows), len(rows)):
        assert time.monotonic() < deadline, f"retention never deleted {control}: {marks}"
        time.sleep(0.25)
    return control


def test_a_month_old_history_is_all_there_after_the_retention_check_ran(
    defaults_broker: Broker, broker_kind: str, tmp_path: Path
) -> None:
    path, rows = history_file(tmp_path, start_ms=now_ms() - 30 * DAY_MS)
    topic = f"published-{uuid.uuid4().hex[:8]}"

    out = publish(defaults_broker, path, topic).stdout

    assert f"published 300 records from history.jsonl to {topic}" in out
    assert f"created {topic} with retention.ms=-1" in out
    assert retention_ms(defaults_broker.bootstrap_servers, topic) == "-1"
    if broker_kind == "kafka":  # the same records in a default topic are gone by now
        deleted_by_retention(defaults_broker, rows)
    else:
        time.sleep(2)
    read = stamped_records(defaults_broker.bootstrap_servers, topic)
    assert len(read) == len(rows)
    assert sorted((key, ts) for key, _, ts in read) == expected(rows)


def test_a_topic_whose_retention_would_delete_the_history_is_refused_unless_forced(
    defaults_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = defaults_broker.bootstrap_servers
    path, _ = history_file(tmp_path, start_ms=now_ms() - 30 * DAY_MS)
    topic = f"week-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, {"retention.ms": str(WEEK_MS)})

    refused = publish(defaults_broker, path, topic, check=False)

    assert refused.returncode == 2, refused.stderr
    assert f"topic '{topic}' deletes records older than 7.0 days (retention.ms=604800000)" \
        in refused.stderr
    assert (f"kafka-configs --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topic} --add-config retention.ms=-1; or pass --force") \
        in refused.stderr
    assert watermarks(bootstrap, topic) == (0, 0)  # nothing written

    forced = publish(defaults_broker, path, topic, "--force")
    assert f"published 300 records from history.jsonl to {topic}" in forced.stdout
    assert "warning: " in forced.stderr and "as forced" in forced.stderr
    assert "created" not in forced.stdout


def test_a_record_over_an_hour_ahead_is_refused_before_anything_is_created(
    defaults_broker: Broker, tmp_path: Path
) -> None:
    path, _ = history_file(tmp_path, start_ms=now_ms() - 600_000, count=4000)  # ~2.2 h on
    topic = f"ahead-{uuid.uuid4().hex[:8]}"

    refused = publish(defaults_broker, path, topic, check=False)

    assert refused.returncode == 2, refused.stderr
    assert "history.jsonl line 4000: timestamp" in refused.stderr
    assert "Kafka 4 refuses records stamped more than 1.0 h ahead" in refused.stderr
    admin = AdminClient({"bootstrap.servers": defaults_broker.bootstrap_servers})
    assert topic not in admin.list_topics(timeout=10).topics
