"""The fault machinery without sockets: fail points, the reconciliation itself, and nothing
stored for a partition the consumer no longer owns (the runner with the memory fakes; the
Kafka source's bookkeeping)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from stream_infer import failpoints
from stream_infer.adapters.kafka import KafkaSource
from stream_infer.adapters.memory import MemoryFeatureStore, MemorySink, MemorySource
from stream_infer.retry import Backoff
from stream_infer.runner import Runner, RunnerConfig
from tests.support.pipeline import event, make_pipeline, records

from .harness import Ledger, Observed, reconcile


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    failpoints.configure("")
    yield
    failpoints.configure("")


class Killed(BaseException):
    """Raised where a fail point would SIGKILL the process (not an Exception: nothing in the
    runner may catch it)."""


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (pid, signal) of every kill a fail point asks for; each one raises :class:`Killed`."""
    asked: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        asked.append((pid, sig))
        raise Killed

    monkeypatch.setattr(failpoints.os, "kill", kill)
    return asked


TP = ("transactions", 0)
AT_DEATH = {  # feature round trips, outputs delivered, offsets stored, outputs produced
    "after_decode": (0, 0, {}, 0),
    "after_score": (1, 0, {}, 0),
    "after_produce": (1, 0, {}, 3),
    "after_flush": (1, 3, {}, 3),
    "after_store": (1, 3, {TP: 3}, 3),
}
"""What one batch of three events has done when each point kills the process."""


def one_batch() -> tuple[Runner, MemorySource, MemorySink, MemoryFeatureStore]:
    store = MemoryFeatureStore({"card:c1": {"risk": b"0.2"}})
    source, sink = MemorySource(records([event(i) for i in range(3)])), MemorySink()
    runner = Runner(source, sink, make_pipeline(store),
                    RunnerConfig(max_records=3, max_wait_s=0, backoff=Backoff(0.001, 0.001)))
    return runner, source, sink, store


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_an_armed_point_kills_the_process_exactly_there_and_only_when_armed(
    point: str, kills: list[tuple[int, int]], capfd: pytest.CaptureFixture[str]
) -> None:
    assert list(AT_DEATH) == list(failpoints.POINTS)  # every point, in the order reached
    runner, source, sink, store = one_batch()
    failpoints.configure(point)
    with pytest.raises(Killed):
        runner.step()
    assert kills == [(os.getpid(), signal.SIGKILL)]
    assert capfd.readouterr().err == f"fail point {point}: SIGKILL\n"
    delivered = len(sink.delivered)
    sink.flush(0)  # what had been produced, if not yet flushed
    assert (store.round_trips, delivered, source.stored, len(sink.delivered)) == AT_DEATH[point]
    assert source.committed == {}

    failpoints.configure("")
    runner, source, sink, store = one_batch()
    assert runner.step() == 3  # unarmed, the same batch goes through every point
    assert kills == [(os.getpid(), signal.SIGKILL)] and capfd.readouterr().err == ""
    assert (store.round_trips, len(sink.delivered), source.stored) == (1, 3, {TP: 3})


def test_counted_actions_run_in_turn_then_the_point_goes_quiet() -> None:
    failpoints.configure("after_flush=2*off->1*sleep(200)")
    took = []
    for _ in range(4):
        started = time.perf_counter()
        failpoints.hit("after_flush")
        took.append(time.perf_counter() - started)
    assert took[0] < 0.1 and took[1] < 0.1 and took[2] >= 0.2 and took[3] < 0.1


@pytest.mark.parametrize("spec", ["after_flsh", "after_flush=explode", "after_flush=2*",
                                  "after_flush=sleep(x)"])
def test_a_bad_spec_is_refused_with_the_reason(spec: str) -> None:
    with pytest.raises(ValueError, match="STREAM_INFER_FAILPOINT"):
        failpoints.configure(spec)


def test_kill_is_a_sigkill_announced_on_stderr_and_read_from_the_environment() -> None:
    code = "from stream_infer import failpoints; failpoints.hit('after_store'); print('alive')"
    armed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, failpoints.ENV: "after_store"})
    assert armed.returncode == -9 and armed.stdout == ""
    assert armed.stderr == "fail point after_store: SIGKILL\n"
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    unarmed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env)
    assert (unarmed.returncode, unarmed.stdout) == (0, "alive\n")


class RevokingSink(MemorySink):
    """A rebalance lands while the batch's outputs are being flushed: a partition is revoked."""

    def __init__(self, source: MemorySource, revoke: tuple[str, int]) -> None:
        super().__init__()
        self.source, self.revoke = source, revoke

    def flush(self, timeout_s: float) -> None:
        self.source.assigned.discard(self.revoke)
        super().flush(timeout_s)


def test_offsets_of_a_partition_revoked_while_its_batch_is_in_flight_are_not_stored() -> None:
    source = MemorySource(records([event(i) for i in range(3)], partition=0)
                          + records([event(10 + i) for i in range(3)], partition=1))
    sink = RevokingSink(source, ("transactions", 1))
    r = Runner(source, sink, make_pipeline(),
               RunnerConfig(max_records=6, max_wait_s=0, backoff=Backoff(0.001, 0.001)))
    assert r.step() == 6
    assert source.stored == {("transactions", 0): 3}  # nothing for the revoked partition
    assert len(sink.on("scores")) == 6  # its outputs went out: the new owner replays them
    r.run(max_events=6)
    assert source.committed == {("transactions", 0): 3}


class RecordingConsumer:
    """Stands in for librdkafka's consumer: records stores and commits."""

    def __init__(self) -> None:
        self.stored: list[dict[tuple[str, int], int]] = []
        self.commits = 0

    def store_offsets(self, offsets: Sequence[TopicPartition]) -> None:
        self.stored.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def commit(self, asynchronous: bool) -> None:
        self.commits += 1


def test_the_kafka_source_stores_only_owned_partitions_and_commits_on_revoke_not_on_loss(
) -> None:
    source = KafkaSource({"test.mock.num.brokers": 1, "group.id": "g", "log_level": 0}, ["t"])
    source.consumer.close()
    fake: Any = RecordingConsumer()
    source.consumer = fake
    tps = [TopicPartition("t", p) for p in range(3)]
    source._on_assign(fake, tps)
    source._on_revoke(fake, tps[2:])
    assert fake.commits == 1  # what was stored for t[2] is committed before it goes
    source._on_lost(fake, tps[1:2])
    assert fake.commits == 1  # a lost partition belongs to someone else already
    source.store({("t", 0): 5, ("t", 1): 6, ("t", 2): 7})
    assert fake.stored == [{("t", 0): 5}]


def test_the_reconciliation_sees_every_kind_of_fault() -> None:
    ledger = Ledger()
    for event_id in ("a", "b", "c", "d", "gone"):
        ledger.add(event_id, malformed=False)
    ledger.add("m", malformed=True)
    alert = {"alert_id": "A1", "event_id": "a", "score": 0.9}
    seen = Observed(
        inputs={(0, 0): "a", (0, 1): "b", (0, 2): "c", (1, 0): "m", (1, 1): "d", (1, 2): "d"},
        malformed={(1, 0)},
        scores=[{"event_id": e} for e in ("a", "a", "b", "d", "d", "d", "x")],
        dead=[((1, 0), "m"), ((1, 0), "m"), ((9, 9), "y")],
        alerts=[alert, alert, {**alert, "score": 0.8}, {**alert, "alert_id": "A2"}],
    )
    tally = reconcile(ledger, seen)
    assert tally.inputs == 6
    assert tally.lost == 1              # c: no score
    assert tally.duplicates == 1 + 1 + 1  # a twice, d three times at two offsets, m twice
    assert tally.input_duplicates == 1  # d is stored at two offsets
    assert tally.unknown == 2           # the score of x, the dead letter of (9, 9)
    assert tally.absent == 1            # "gone" was acknowledged but is not in the log
    assert (tally.alerts, tally.alert_duplicates, tally.conflicts) == (2, 2, 1)
    assert tally.after_dedup == 1       # a has two alert ids
    assert seen.missing(ledger) == 2    # c and gone
