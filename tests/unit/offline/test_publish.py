"""``topics publish`` without a broker: what a history record's key and timestamp are, and
that a record without a readable event time stops the publish before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_infer.config import Settings
from stream_infer.errors import ConfigError
from stream_infer.offline.publish import PublishReport, check, history, publish, stamp

EVENT = {"event_id": "e1", "card_id": "card-7", "merchant_id": "m", "amount": 1.0,
         "currency": "EUR"}


def line(**fields: object) -> bytes:
    return json.dumps({**EVENT, **fields}).encode()


@pytest.mark.parametrize(("value", "ms"), [
    (line(event_time=1_767_225_600_123), 1_767_225_600_123),
    (line(event_time="2026-01-01T00:00:00.123Z"), 1_767_225_600_123),
    (line(event_time="2026-01-01T01:00:00.123+01:00"), 1_767_225_600_123),
    (line(event_time=1, amount=-5, currency="no"), 1),  # a bad record: still history
])
def test_a_record_is_keyed_by_card_and_stamped_with_its_event_time(value: bytes,
                                                                   ms: int) -> None:
    record = stamp(1, value)
    assert (record.key, record.value, record.timestamp_ms) == (b"card-7", value, ms)


@pytest.mark.parametrize(("value", "why"), [
    (b"", "empty"),
    (b"{not json", "malformed"),
    (b"[1, 2]", "object"),
    (line(), "event_time"),
    (line(event_time="2026-01-01T00:00:00"), "no UTC offset"),
    (line(event_time="yesterday"), "datetime"),
    (line(event_time=1.5), "event_time"),
    (line(event_time=0), "not after 1970"),
    (line(event_time="1969-12-31T23:59:59Z"), "not after 1970"),
])
def test_an_unreadable_event_time_is_no_timestamp_and_says_why(value: bytes, why: str) -> None:
    record = stamp(1, value)
    assert record.timestamp_ms is None and why in record.why


def test_a_record_without_a_card_id_has_no_key() -> None:
    assert stamp(1, line(event_time=5, card_id=None)).key is None
    assert stamp(1, line(event_time=5, card_id=42)).key is None


def test_the_file_is_refused_at_the_first_unreadable_line_before_any_broker_is_asked(
    tmp_path: Path
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join([line(event_time=1000), line(event_time=2000), b"{oops",
                                 line(event_time="2026-01-01T00:00:00")]) + b"\n")
    with pytest.raises(ConfigError, match=r"history\.jsonl line 3: event_time cannot be read"):
        check(path)
    nowhere = Settings().kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    with pytest.raises(ConfigError, match=r"line 3.*--skip-unreadable"):
        publish(path, "t", nowhere)  # never reaches the (unreachable) broker


def test_parquet_rows_are_numbered_and_stamped(tmp_path: Path) -> None:
    path = tmp_path / "history.parquet"
    pq.write_table(pa.table({"event_id": ["a", "b"], "card_id": ["c1", "c2"],
                             "event_time": ["2026-01-01T00:00:00Z", "2026-01-01"]}), path)
    records = list(history(path))
    assert [(r.position, r.key, r.timestamp_ms) for r in records] == [
        (1, b"c1", 1_767_225_600_000), (2, None, None)]
    with pytest.raises(ConfigError, match=r"history\.parquet row 2"):
        check(path)


def test_the_summary_counts_what_was_skipped_unkeyed_and_out_of_order() -> None:
    report = PublishReport(source="h.jsonl", topic="t", seconds=2.0)
    for position, key, ts, previous in [(1, b"a", 2000, None), (2, None, 1000, 2000)]:
        report.count(stamp(position, line(event_time=ts, card_id=key and key.decode())),
                     ts, previous)
    report.skip("h.jsonl line 3")
    text = "\n".join(report.lines())
    assert "published 2 records from h.jsonl to t" in text
    assert "event times 1970-01-01T00:00:01.000Z to 1970-01-01T00:00:02.000Z" in text
    assert "skipped 1 whose event_time could not be read (the first at h.jsonl line 3)" in text
    assert "1 without a card_id" in text and "1 earlier than the record before them" in text
