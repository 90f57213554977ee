"""``topics publish`` and the Handbook publisher against the broker's time limits, without a
broker: a history older than the topic's ``retention.ms`` is refused (it would be deleted
soon after it is written), a record stamped over an hour ahead is refused before anything is
created, the topics created keep their records forever, and a broker that cannot describe a
topic is a warning."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from stream_infer.adapters import kafka as kafka_adapter
from stream_infer.config import KafkaSettings, Settings
from stream_infer.errors import BrokerError, ConfigError
from stream_infer.offline import handbook
from stream_infer.offline.publish import (
    AHEAD_LIMIT_MS,
    KEEP_FOREVER,
    Span,
    ahead_problem,
    parse_retention,
    prepare_topics,
    publish,
    retention_problem,
    scan,
)

NOW = 1_796_256_000_000  # 2026-12-03T00:00:00Z
DAY = 86_400_000
WEEK = 7 * DAY


def span(oldest: int, newest: int | None = None) -> Span:
    out = Span()
    out.add(oldest, "h.jsonl line 1")
    out.add(oldest if newest is None else newest, "h.jsonl line 9")
    return out


def test_a_span_keeps_the_oldest_and_newest_and_where_they_are() -> None:
    found = Span()
    for ms, at in [(5, "a"), (3, "b"), (9, "c"), (3, "d"), (9, "e")]:
        found.add(ms, at)
    assert (found.oldest_ms, found.oldest_at, found.newest_ms, found.newest_at) == \
        (3, "b", 9, "c")


@pytest.mark.parametrize(("value", "ms"), [
    ("604800000", WEEK), ("-1", -1), ("-2", -1), ("0", 0), (None, None), ("", None),
    ("forever", None),
])
def test_retention_ms_is_read_as_milliseconds_or_forever_or_unknown(value: str | None,
                                                                    ms: int | None) -> None:
    assert parse_retention(value) == ms


def test_a_history_older_than_the_retention_is_a_problem_that_names_the_fix() -> None:
    problem = retention_problem("history", WEEK, span(NOW - 30 * DAY), NOW,
                                bootstrap="127.0.0.1:9092")
    assert problem is not None
    assert "topic 'history' deletes records older than 7.0 days (retention.ms=604800000)" \
        in problem
    assert "oldest to publish (h.jsonl line 1, 2026-11-03T00:00:00.000Z) is 30.0 days old" \
        in problem
    assert ("kafka-configs --bootstrap-server 127.0.0.1:9092 --alter --entity-type topics "
            "--entity-name history --add-config retention.ms=-1") in problem


@pytest.mark.parametrize(("retention", "oldest"), [
    (WEEK, NOW - WEEK + 1),  # within the retention
    (WEEK, NOW - WEEK),      # exactly at its edge
    (-1, 1),                 # kept forever
    (None, 1),               # unknown: a warning elsewhere, not a refusal
    (WEEK, NOW + DAY),       # ahead of now: another check's business
])
def test_a_history_the_retention_keeps_is_no_problem(retention: int | None,
                                                     oldest: int) -> None:
    assert retention_problem("t", retention, span(oldest), NOW) is None


def test_an_empty_history_has_no_problem() -> None:
    assert retention_problem("t", WEEK, Span(), NOW) is None
    assert ahead_problem(Span(), NOW) is None


def test_a_record_over_an_hour_ahead_is_a_problem_naming_where_it_is() -> None:
    assert ahead_problem(span(NOW - DAY, NOW + AHEAD_LIMIT_MS), NOW) is None
    problem = ahead_problem(span(NOW - DAY, NOW + AHEAD_LIMIT_MS + 1), NOW)
    assert problem is not None
    assert problem.startswith("h.jsonl line 9: timestamp 2026-12-03T01:00:00.001Z is 1.0 h "
                              "ahead of now (2026-12-03T00:00:00.000Z)")
    assert "more than 1.0 h ahead (log.message.timestamp.after.max.ms)" in problem
    assert "Nothing was written" in problem


class FakeAdmin:
    """``ensure_topics`` and ``topic_configs`` of a broker holding ``existing`` topics with
    their configs (``None``: the broker cannot describe it); records the calls."""

    def __init__(self, existing: Mapping[str, Mapping[str, str] | None]) -> None:
        self.existing = dict(existing)
        self.created: list[tuple[str, dict[str, str]]] = []
        self.described: list[str] = []

    def ensure_topics(self, config: Mapping[str, Any], topics: Sequence[str], *, create: bool,
                      partitions: int, replication_factor: int,
                      topic_config: Mapping[str, str] | None = None, **_: Any) -> list[str]:
        missing = [t for t in topics if t not in self.existing]
        for topic in missing:
            self.created.append((topic, dict(topic_config or {})))
            self.existing[topic] = dict(topic_config or {})
        return missing

    def topic_configs(self, config: Mapping[str, Any], topic: str, timeout_s: float = 10.0
                      ) -> dict[str, str]:
        self.described.append(topic)
        found = self.existing[topic]
        if found is None:
            raise BrokerError(f"cannot describe topic {topic!r}: Broker: Unsupported version")
        return dict(found)


Install = Callable[[Mapping[str, Mapping[str, str] | None]], FakeAdmin]


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> Install:
    def install(existing: Mapping[str, Mapping[str, str] | None]) -> FakeAdmin:
        fake = FakeAdmin(existing)
        monkeypatch.setattr(kafka_adapter, "ensure_topics", fake.ensure_topics)
        monkeypatch.setattr(kafka_adapter, "topic_configs", fake.topic_configs)
        return fake
    return install


def kafka() -> KafkaSettings:
    return Settings().kafka.model_copy(update={"bootstrap_servers": "broker:9092"})


def test_a_missing_topic_is_created_to_keep_its_records_forever(admin: Install) -> None:
    fake = admin({})
    done = prepare_topics(kafka(), {"history": span(NOW - 400 * DAY)}, now_ms=NOW)
    assert fake.created == [("history", {"retention.ms": "-1"})] and KEEP_FOREVER == \
        {"retention.ms": "-1"}
    assert done.created == ["history"] and done.warnings == []
    assert fake.described == []  # created here: its retention is the one asked for


def test_an_existing_topic_whose_retention_would_delete_the_history_is_refused(
    admin: Install
) -> None:
    fake = admin({"history": {"retention.ms": str(WEEK)}})
    with pytest.raises(ConfigError, match=r"--add-config retention\.ms=-1; or pass --force"):
        prepare_topics(kafka(), {"history": span(NOW - 30 * DAY)}, now_ms=NOW)
    assert fake.described == ["history"]

    done = prepare_topics(kafka(), {"history": span(NOW - 30 * DAY)}, now_ms=NOW, force=True)
    assert len(done.warnings) == 1 and "(publishing anyway, as forced)" in done.warnings[0]
    assert "retention.ms=604800000" in done.warnings[0] and done.created == []


def test_an_existing_topic_that_keeps_the_history_passes(admin: Install) -> None:
    admin({"forever": {"retention.ms": "-1"}, "month": {"retention.ms": str(40 * DAY)}})
    spans = {"forever": span(NOW - 900 * DAY), "month": span(NOW - 30 * DAY)}
    done = prepare_topics(kafka(), spans, now_ms=NOW)
    assert (done.created, done.warnings) == ([], [])


@pytest.mark.parametrize("configs", [None, {}], ids=["cannot-describe", "no-retention-ms"])
def test_a_topic_the_broker_cannot_describe_is_a_warning_not_a_refusal(
    admin: Install, configs: dict[str, str] | None
) -> None:
    admin({"history": configs})
    done = prepare_topics(kafka(), {"history": span(NOW - 30 * DAY)}, now_ms=NOW)
    assert len(done.warnings) == 1
    assert "cannot tell whether its time retention would delete records as old as " \
           "2026-11-03T00:00:00.000Z; publishing anyway" in done.warnings[0]


def test_a_record_over_an_hour_ahead_is_refused_before_any_topic_is_created(
    admin: Install
) -> None:
    fake = admin({})
    with pytest.raises(ConfigError, match=r"h\.jsonl line 9: timestamp .* 2\.0 h ahead"):
        prepare_topics(kafka(), {"history": span(NOW, NOW + 2 * 3_600_000)}, now_ms=NOW)
    assert fake.created == [] and fake.described == []

    done = prepare_topics(kafka(), {"history": span(NOW, NOW + 2 * 3_600_000)}, now_ms=NOW,
                          force=True)
    assert done.created == ["history"] and "as forced" in done.warnings[0]


def test_without_a_force_flag_the_refusal_names_only_the_command(admin: Install) -> None:
    admin({"labels": {"retention.ms": str(WEEK)}})
    with pytest.raises(ConfigError) as refused:
        prepare_topics(kafka(), {"labels": span(NOW - 30 * DAY)}, now_ms=NOW, force_flag=None)
    assert "--force" not in str(refused.value)
    assert str(refused.value).endswith("--add-config retention.ms=-1")


def history_file(tmp_path: Path, times: Sequence[int | str]) -> Path:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps({"event_id": f"e{i}", "card_id": "c", "event_time": t})
                            + "\n" for i, t in enumerate(times)))
    return path


def test_scan_spans_the_file_and_skips_unreadable_lines_only_when_asked(tmp_path: Path
                                                                        ) -> None:
    path = history_file(tmp_path, [NOW - DAY, "2026-11-03T00:00:00Z", "no time", NOW])
    with pytest.raises(ConfigError, match=r"history\.jsonl line 3"):
        scan(path)
    found = scan(path, skip_unreadable=True)
    assert (found.oldest_ms, found.oldest_at) == (NOW - 30 * DAY, "history.jsonl line 2")
    assert (found.newest_ms, found.newest_at) == (NOW, "history.jsonl line 4")


def test_a_publish_ahead_of_now_is_refused_before_the_broker_is_asked(tmp_path: Path) -> None:
    path = history_file(tmp_path, [NOW, NOW + 3 * 3_600_000])
    nowhere = Settings().kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    with pytest.raises(ConfigError, match=r"history\.jsonl line 2: .* 3\.0 h ahead.*--force"):
        publish(path, "t", nowhere, now_ms=NOW)  # never reaches the (unreachable) broker


def test_the_handbook_publisher_checks_its_events_and_labels_topics(admin: Install) -> None:
    fake = admin({"labels": {"retention.ms": str(WEEK)}})
    events = [{"event_id": "hb-0-0", "card_id": 1, "event_time": NOW - 30 * DAY},
              {"event_id": "hb-0-1", "card_id": 2, "event_time": NOW - 29 * DAY}]
    labels = [{"event_id": "hb-0-0", "card_id": 1, "label_time": NOW - 23 * DAY}]
    encode = handbook.encoders()[0]
    with pytest.raises(ConfigError) as refused:
        handbook.publish(kafka(), events, "events", labels, "labels", encode, encode,
                         now_ms=NOW)
    assert "topic 'labels' deletes records older than 7.0 days" in str(refused.value)
    assert "the label_time of event hb-0-0" in str(refused.value)
    assert fake.created == [("events", {"retention.ms": "-1"})]  # created, nothing written

    late = [{**labels[0], "label_time": NOW + 2 * DAY}]
    with pytest.raises(ConfigError, match=r"the label_time of event hb-0-0: .* 2\.0 days "
                                          r"ahead"):
        handbook.publish(kafka(), events, "events", late, "more-labels", encode, encode,
                         now_ms=NOW)
    assert "more-labels" not in fake.existing
