"""The assignment watch: how long a member waits for its group, and one warning when stuck."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from stream_infer.adapters.kafka import AssignmentWatch, KafkaSource

LOGGER = "stream_infer.adapters.kafka"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_member_waits_from_the_start_and_warns_once_past_three_session_timeouts(
    caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    watch = AssignmentWatch("fraud", 45.0, clock=clock)
    clock.now += 134
    watch.check()
    assert watch.unassigned_for() == 134 and watch.stalled() is None
    clock.now += 2
    with caplog.at_level(logging.INFO, logger=LOGGER):
        watch.check()
        watch.check()
        assert watch.stalled() == ("no assignment from group 'fraud' for 136s "
                                   "(over 3 session timeouts)")
        assert warnings(caplog) == ["no assignment from group 'fraud' for 136s (over 3 session "
                                    "timeouts): is the group stuck in a rebalance?"]
        watch.settled()
        assert "group 'fraud' assigned this member again after 136s" in caplog.text
    assert watch.unassigned_for() is None and watch.stalled() is None


def test_it_warns_again_only_after_a_recovery_and_a_new_stall(
    caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    watch = AssignmentWatch("fraud", 6.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        clock.now += 20
        watch.check()
        watch.rebalancing()  # still the same wait: it started when the member subscribed
        assert watch.unassigned_for() == 20
        watch.settled()
        clock.now += 100
        watch.check()  # assigned all along: no wait
        watch.rebalancing()
        clock.now += 17
        watch.check()
        assert len(warnings(caplog)) == 1
        clock.now += 1
        watch.check()
    assert len(warnings(caplog)) == 2 and "for 18s" in warnings(caplog)[1]


def test_an_idle_member_assigned_no_partitions_is_not_waiting() -> None:
    clock = Clock()
    source = kafka_source(clock, {"session.timeout.ms": 6000})
    source._on_assign(source.consumer, [])  # more members than partitions: this one idles
    clock.now += 3600
    assert source.assigned == set() and source.watch.unassigned_for() is None


class QuietConsumer:
    """Stands in for librdkafka's consumer: nothing to consume, commits accepted."""

    def consume(self, max_records: int, timeout_s: float) -> list[Any]:
        return []

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return []

    def commit(self, asynchronous: bool) -> None:
        pass


def kafka_source(clock: Clock, config: dict[str, Any]) -> KafkaSource:
    source = KafkaSource({"test.mock.num.brokers": 1, "group.id": "fraud", "log_level": 0,
                          **config}, ["t"], clock=clock)
    source.consumer.close()
    fake: Any = QuietConsumer()
    source.consumer = fake
    return source


def stats(join_state: str) -> str:
    return json.dumps({"name": "rdkafka#consumer-1", "cgrp": {"state": "up",
                                                            "join_state": join_state}})


def test_the_source_reads_the_session_timeout_from_its_config() -> None:
    assert kafka_source(Clock(), {"session.timeout.ms": 6000}).watch.after_s == 18
    assert kafka_source(Clock(), {}).watch.after_s == 135  # librdkafka's default, 45 s


def test_the_source_counts_a_rebalance_that_never_ends_though_it_keeps_its_partitions(
    caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    source = kafka_source(clock, {"session.timeout.ms": 6000})
    tps = [TopicPartition("t", 0), TopicPartition("t", 1)]
    source._on_assign(source.consumer, tps)
    source._on_stats(stats("steady"))
    clock.now += 60
    assert source.watch.unassigned_for() is None
    source._on_stats(stats("wait-join"))  # the group rebalances; the member keeps both
    clock.now += 10
    source._on_stats(stats("wait-sync"))
    clock.now += 9
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert source.consume(100, 0.1) == []
    assert source.assigned == {("t", 0), ("t", 1)}
    assert warnings(caplog) == ["no assignment from group 'fraud' for 19s (over 3 session "
                                "timeouts): is the group stuck in a rebalance?"]
    source._on_stats(stats("steady"))
    assert source.watch.stalled() is None


def test_the_source_waits_from_a_revocation_or_a_loss_until_the_next_assignment() -> None:
    clock = Clock()
    source = kafka_source(clock, {})
    tps = [TopicPartition("t", 0), TopicPartition("t", 1)]
    source._on_assign(source.consumer, tps)
    source._on_revoke(source.consumer, tps[1:])
    clock.now += 5
    assert source.watch.unassigned_for() == 5
    source._on_assign(source.consumer, [])  # the rebalance ended: nothing more for it
    assert source.watch.unassigned_for() is None
    source._on_lost(source.consumer, tps[:1])
    clock.now += 7
    assert source.watch.unassigned_for() == 7
