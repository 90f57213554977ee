"""Replay over a topic selects exactly the records in time and proves what it read, whatever
the broker says: a fake broker here under-reports its end, answers ``offsets_for_times``
wrongly, reports its end of log early or never (the real-broker twin of these tests is
``tests/integration/test_replay_ranges.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xgboost
from confluent_kafka import KafkaError, TopicPartition

from stream_infer.adapters import kafka
from stream_infer.cli import main
from stream_infer.errors import AccountingError, BrokerError
from stream_infer.registry import write_model
from stream_infer.replay.collect import ReplayCounts
from stream_infer.replay.sources import ReplayInput, topic_input

BASE = 1_600_000_000_000
FEATURES = ["amount", "card.f0", "card.f1"]
Log = list[tuple[int, bytes]]
"""A partition: (timestamp, value) at each offset."""


class Message:
    """A ``confluent_kafka.Message`` look-alike: a record, or an end-of-partition event."""

    def __init__(self, partition: int, offset: int, stamp: int = 0, value: bytes = b"",
                 error: KafkaError | None = None) -> None:
        self._partition, self._offset, self._stamp = partition, offset, stamp
        self._value, self._error = value, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return "tx"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._stamp)

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


@dataclass
class FakeBroker:
    """Topic ``tx`` in memory, and what the broker says of it.

    ``reported_high``: the high watermark it reports (default: the true end);
    ``at_time(partition, when)``: its answer to ``offsets_for_times`` (default: the first
    offset whose timestamp is at or after ``when``, -1 if none, as Apache Kafka answers);
    ``eof_at``: the offset at which it reports the end of a partition (default: the true
    end; None: never).
    """

    logs: dict[int, Log]
    reported_high: dict[int, int] = field(default_factory=dict)
    at_time: Callable[[int, int], int] | None = None
    eof_at: dict[int, int | None] = field(default_factory=dict)

    def offset_for(self, partition: int, when: int) -> int:
        if self.at_time is not None:
            return self.at_time(partition, when)
        return next((o for o, (t, _) in enumerate(self.logs[partition]) if t >= when), -1)


class FakeConsumer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.positions: dict[int, int] = {}
        self.ended: set[int] = set()

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(error=None, partitions=dict.fromkeys(self.broker.logs))
        return SimpleNamespace(topics={"tx": meta})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        log = self.broker.logs[tp.partition]
        return 0, self.broker.reported_high.get(tp.partition, len(log))

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float
                          ) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.broker.offset_for(tp.partition,
                                                                             tp.offset))
                for tp in tps]

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = {tp.partition: max(tp.offset, 0) for tp in tps}  # BEGINNING: 0

    def consume(self, count: int, timeout: float) -> list[Message]:
        out = []
        for p, position in self.positions.items():
            log = self.broker.logs[p]
            eof = self.broker.eof_at.get(p, len(log))
            upto = len(log) if eof is None else min(eof, len(log))
            taken = log[position:min(upto, position + count)]
            out += [Message(p, position + i, t, v) for i, (t, v) in enumerate(taken)]
            self.positions[p] = position = position + len(taken)
            if position == eof and p not in self.ended:
                self.ended.add(p)
                out.append(Message(p, position, error=KafkaError(KafkaError._PARTITION_EOF)))
        if not out:
            time.sleep(min(timeout, 0.01))
        return out

    def close(self) -> None:
        pass


def out_of_order_logs(partitions: int = 3, count: int = 3000, seed: int = 1) -> dict[int, Log]:
    """Event-time stamps 10 ms apart, each up to 50 ms early or late: not in offset order."""
    rng = np.random.default_rng(seed)
    return {p: [(BASE + 10 * i + int(j), b"") for i, j in
                enumerate(rng.integers(-50, 51, count))] for p in range(partitions)}


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeBroker], FakeBroker]:
    """``use(broker)``: every replay reader of the Kafka adapter talks to ``broker``."""
    def install(broker: FakeBroker) -> FakeBroker:
        monkeypatch.setattr(kafka, "_reader", lambda config: FakeConsumer(broker))
        return broker
    return install


def replayed(**bounds: Any) -> tuple[ReplayInput, set[tuple[int, int]]]:
    """The records replay selects, as (partition, offset), after proving its accounting (the
    selected ones are counted as scored)."""
    counts = ReplayCounts()
    source = topic_input({}, "tx", counts, **bounds)
    selected = set()
    for chunk in source.chunks:
        selected.update(zip(chunk.partitions.tolist(), chunk.offsets.tolist(), strict=True))
        counts.consumed += len(chunk)
        counts.scored += len(chunk)
    source.check(counts)
    assert counts.accounted() == source.records_read
    return source, selected


def in_time(logs: Mapping[int, Log], from_ms: int | None, to_ms: int | None
            ) -> set[tuple[int, int]]:
    low, high = from_ms or -(2**63), to_ms or 2**63
    return {(p, o) for p, log in logs.items() for o, (t, _) in enumerate(log) if low <= t < high}


BOUNDS = [(None, None), (BASE + 12_345, None), (None, BASE + 17_000),
          (BASE + 12_345, BASE + 17_000)]


@pytest.mark.parametrize(("from_ms", "to_ms"), BOUNDS)
def test_from_and_to_select_exactly_the_records_in_time_though_stamps_are_out_of_order(
        use: Callable[[FakeBroker], FakeBroker], from_ms: int | None, to_ms: int | None
) -> None:
    broker = use(FakeBroker(out_of_order_logs()))
    source, selected = replayed(from_ms=from_ms, to_ms=to_ms)

    assert selected == in_time(broker.logs, from_ms, to_ms)
    assert source.partitions is not None
    for p, part in source.partitions.items():
        hint = broker.offset_for(p, from_ms) if from_ms is not None else 0
        assert hint > 1000 or from_ms is None
        assert part.start == (hint if from_ms is not None else kafka.BEGINNING)
        assert part.records == 3000 - hint and part.end_of_log == 3000
        if from_ms is not None:
            assert "the 1,000 records before it are all earlier" in part.why


@pytest.mark.parametrize(("from_ms", "to_ms"), BOUNDS)
def test_a_short_high_watermark_never_shortens_the_read(
        use: Callable[[FakeBroker], FakeBroker], from_ms: int | None, to_ms: int | None
) -> None:
    broker = use(FakeBroker(out_of_order_logs(), reported_high={0: 1800, 1: 2999, 2: 1}))
    source, selected = replayed(from_ms=from_ms, to_ms=to_ms)

    assert selected == in_time(broker.logs, from_ms, to_ms)
    assert source.partitions is not None
    assert {p: (r.end_of_log, r.last, r.reported_end) for p, r in source.partitions.items()} == {
        0: (3000, 2999, 1800), 1: (3000, 2999, 2999), 2: (3000, 2999, 1)}


@pytest.mark.parametrize("answer", [
    lambda p, when: 2500,  # too late: by append time
    lambda p, when: -1,  # "no record at or after it"
    lambda p, when: 1200 + 17 * p,  # too late by a little: by batch
])
def test_a_wrong_offset_for_from_is_caught_and_the_partition_read_from_its_beginning(
        use: Callable[[FakeBroker], FakeBroker], answer: Callable[[int, int], int]
) -> None:
    from_ms = BASE + 11_000  # offset ~1100
    broker = use(FakeBroker(out_of_order_logs(), at_time=answer))
    source, selected = replayed(from_ms=from_ms)

    assert selected == in_time(broker.logs, from_ms, None)
    assert source.partitions is not None
    for part in source.partitions.values():
        assert part.start == kafka.BEGINNING and part.records == 3000
        assert "is wrong: offset" in part.why and "not before --from" in part.why


def test_an_offset_for_from_too_early_is_safe_and_a_window_reaching_the_beginning_reads_it(
        use: Callable[[FakeBroker], FakeBroker]
) -> None:
    from_ms = BASE + 25_000
    broker = use(FakeBroker(out_of_order_logs(), at_time=lambda p, when: 800 * p))
    source, selected = replayed(from_ms=from_ms)

    assert selected == in_time(broker.logs, from_ms, None)
    assert source.partitions is not None
    starts = {p: (r.start, r.records) for p, r in source.partitions.items()}
    assert starts == {0: (kafka.BEGINNING, 3000), 1: (kafka.BEGINNING, 3000), 2: (1600, 1400)}


def test_an_end_of_log_below_the_end_the_broker_reported_fails_naming_both(
        use: Callable[[FakeBroker], FakeBroker]
) -> None:
    use(FakeBroker(out_of_order_logs(), eof_at={1: 2000}))
    with pytest.raises(AccountingError, match=r"tx\[1\]: reading ended at offset 2,000, below "
                                              r"the end the broker reported, 3,000"):
        replayed(to_ms=BASE + 5000)


def test_offsets_asked_past_the_end_of_the_log_fail_naming_both(
        use: Callable[[FakeBroker], FakeBroker]
) -> None:
    use(FakeBroker(out_of_order_logs()))
    source, selected = replayed(offsets={0: (10, 20), 2: (2990, 3000)})
    assert selected == {(0, o) for o in range(10, 20)} | {(2, o) for o in range(2990, 3000)}
    assert source.origin == "tx offsets [0]:10-19, [2]:2990-2999"

    with pytest.raises(AccountingError, match=r"tx\[2\] ends at offset 3,000 \(read to its end "
                                              r"of log\), but the offsets asked run to 3,099"):
        replayed(offsets={0: (10, 20), 2: (2990, 3100)})


def test_a_partition_whose_end_never_comes_fails_after_the_idle_timeout(
        use: Callable[[FakeBroker], FakeBroker]
) -> None:
    use(FakeBroker(out_of_order_logs(count=50), eof_at={0: None}, reported_high={0: 40}))
    parts = {p: kafka.PartitionRead(p) for p in range(3)}
    with pytest.raises(BrokerError, match=r"unfinished: \[0\] read to offset 49, the broker's "
                                          r"high watermark 40"):
        for _ in kafka.read_range({}, "tx", parts, idle_timeout_s=0.3):
            pass


def test_counts_that_do_not_add_up_to_the_records_read_fail() -> None:
    parts = {0: kafka.PartitionRead(0, records=10), 1: kafka.PartitionRead(1, records=5)}
    source = ReplayInput([], "tx", parts)
    source.check(ReplayCounts(consumed=15, scored=11, dead_lettered=1, out_of_range=3))
    with pytest.raises(AccountingError, match="15 records read but 14 accounted for"):
        source.check(ReplayCounts(consumed=14, scored=11, out_of_range=3))
    with pytest.raises(AccountingError, match="15 records read but 16 accounted for"):
        source.check(ReplayCounts(consumed=15, scored=12, dead_lettered=1, out_of_range=3))


def events(count: int) -> list[bytes]:
    """Transactions with the model's features, one in 97 of them malformed."""
    rng = np.random.default_rng(5)
    return [b"{not json" if n % 97 == 5 else json.dumps({
        "event_id": f"e{n}", "event_time": BASE + n, "card_id": f"c{n % 40}",
        "merchant_id": "m", "currency": "EUR", "amount": float(rng.lognormal(3, 1)),
        "attributes": {"card.f0": float(rng.normal()), "card.f1": float(rng.normal())}}).encode()
        for n in range(count)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, len(FEATURES))).astype(np.float32)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            xgboost.DMatrix(x, label=x[:, 1] > 0,
                                            feature_names=FEATURES), 5)
    root = tmp_path_factory.mktemp("models")
    write_model(root, "champ", "1", bytes(booster.save_raw("json")),
                features=FEATURES, threshold=0.5)
    return root


def test_the_cli_prints_what_it_read_of_each_partition_and_exits_2_when_it_cannot_prove_it(
        use: Callable[[FakeBroker], FakeBroker], models: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {"MODEL__DIR": str(models), "MODEL__NAME": "champ",
                        "MODEL__NTHREAD": "1", "DECODE__MAX_PAYLOAD_BYTES": "2000"}.items():
        monkeypatch.setenv(f"STREAM_INFER_{name}", value)
    values = events(400)
    logs = {p: [(BASE + 1000 * i, values[2 * i + p]) for i in range(200)] for p in range(2)}
    use(FakeBroker(logs, reported_high={0: 150, 1: 200}))
    replay = ["replay", "--topic", "tx", "--out", str(tmp_path / "r.parquet"),
              "--json", str(tmp_path / "r.json")]

    assert main([*replay, "--from", str(BASE + 10_000)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["records_read"], report["out_of_range"]) == (400, 20)
    assert (report["scored"], report["dead_lettered"]) == (376, 4)
    assert report["partitions"]["0"]["end_of_log"] == 200
    assert report["partitions"]["0"]["broker_reported_end"] == 150
    assert ("partition 0: 200 records read (offsets 0-199), from the beginning (the broker's "
            "offset for --from, 10, is close to the beginning) to its end of log at 200 (the "
            "broker reported 150)") in printed
    assert ("records read 400, accounted for 400 (scored + dead-lettered + outside the time "
            "range)") in printed

    assert main([*replay, "--offsets", "0:0-9,1:190-209"]) == 2
    assert ("tx[1] ends at offset 200 (read to its end of log), but the offsets asked run to "
            "209") in capsys.readouterr().err
