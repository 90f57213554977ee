"""``stream-infer replay --topic T --from A --to B`` selects exactly the records whose
timestamp is in ``[A, B)``, and its summary counts what it read, on each broker.

The records carry event times as their (CreateTime) timestamps, far in the past and out of
order, produced in multi-record batches. Tansu answers ``offsets_for_times`` by append time
and at batch granularity, and under-reports its high watermark, so nothing it says about
offsets can be taken on trust. Apache Kafka answers from its time index (ListOffsets): the
first record at or after ``A``, which replay checks and then starts from, as the report
must show.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost
from confluent_kafka import KafkaError, Message, Producer

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.cli import main
from stream_infer.registry import write_model
from stream_infer.replay.sources import CHECKED_BEFORE
from tests.support.brokers import Broker

pytestmark = pytest.mark.integration

BASE = 1_609_459_200_000  # 2021-01-01
FEATURES = ["amount", "card.f0", "card.f1"]


@dataclass
class Produced:
    """A topic as produced: each record's event id (None: a malformed one), timestamp, and
    where it landed."""

    topic: str
    ids: list[str | None]
    stamps: list[int]
    placed: list[tuple[int, int]]

    def ends(self) -> dict[int, int]:
        """Each partition's true end: one past its last offset."""
        ends: dict[int, int] = {}
        for partition, offset in self.placed:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        return ends

    def selected(self, from_ms: int | None, to_ms: int | None) -> tuple[set[str], int]:
        """The event ids in ``[from_ms, to_ms)``, and the malformed records there."""
        low, high = from_ms or -(2**63), to_ms or 2**63
        inside = [i for i, stamp in enumerate(self.stamps) if low <= stamp < high]
        ids = {self.ids[i] for i in inside}
        return {i for i in ids if i is not None}, sum(self.ids[i] is None for i in inside)

    def starts(self, from_ms: int) -> dict[int, int | str]:
        """Where replay must start each partition given Apache Kafka's answer for
        ``from_ms`` (its first offset stamped at or after it): there, or at the beginning
        when fewer than ``CHECKED_BEFORE`` records before it could prove it."""
        first: dict[int, int] = {}
        for (partition, offset), stamp in zip(self.placed, self.stamps, strict=True):
            if stamp >= from_ms:
                first[partition] = min(offset, first.get(partition, offset))
        return {p: offset if offset - CHECKED_BEFORE > 0 else "beginning"
                for p, offset in first.items()}


def produce_batched(bootstrap: str, topic: str, records: list[tuple[bytes, int]],
                    partitions: int) -> list[tuple[int, int]]:
    """Produce (value, timestamp) records round-robin over ``partitions``, lingering so that
    they go in multi-record batches; each record's (partition, offset)."""
    placed: list[tuple[int, int] | None] = [None] * len(records)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.num.messages": 250, "enable.idempotence": True})

    def delivered(i: int) -> Any:
        def done(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            placed[i] = (message.partition() or 0, message.offset() or 0)
        return done

    for i, (value, stamp) in enumerate(records):
        producer.produce(topic, value, partition=i % partitions, timestamp=stamp,
                         on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert all(p is not None for p in placed)
    return placed  # type: ignore[return-value]


def event(n: int, stamp: int, rng: np.random.Generator) -> bytes:
    return json.dumps({
        "event_id": f"ev-{n}", "event_time": stamp, "card_id": f"c{n % 50}",
        "merchant_id": "m", "currency": "EUR", "amount": float(rng.lognormal(3, 1)),
        "attributes": {"card.f0": float(rng.normal()), "card.f1": float(rng.normal())},
    }).encode()


@pytest.fixture(scope="module")
def history(broker: Broker) -> Produced:
    """6,000 records on three partitions, a second of event time apart and up to 20 s early
    or late (not in offset order), one in 97 malformed."""
    rng = np.random.default_rng(22)
    topic = f"replay-ranges-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [topic], create=True,
                  partitions=3, replication_factor=1)
    stamps = [BASE + 1000 * n + int(j) for n, j in enumerate(rng.integers(-20_000, 20_001, 6000))]
    ids = [None if n % 97 == 5 else f"ev-{n}" for n in range(6000)]
    values = [b"{not json" if ids[n] is None else event(n, stamp, rng)
              for n, stamp in enumerate(stamps)]
    placed = produce_batched(broker.bootstrap_servers, topic, list(zip(values, stamps,
                                                                       strict=True)), 3)
    return Produced(topic, ids, stamps, placed)


@pytest.fixture(scope="module")
def config(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replay-ranges")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, len(FEATURES))).astype(np.float32)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            xgboost.DMatrix(x, label=x[:, 1] > 0, feature_names=FEATURES), 5)
    write_model(root / "models", "ranges", "1", bytes(booster.save_raw("json")),
                features=FEATURES, threshold=0.5)
    path = root / "config.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\n\n'
                    f'[model]\ndir = "{root / "models"}"\nname = "ranges"\nnthread = 1\n')
    return path


def replay(config: Path, topic: str, out: Path, *bounds: str
           ) -> Iterator[tuple[dict[str, Any], set[str]]]:
    """Run ``replay`` (it must exit 0); its JSON report and the event ids of its results."""
    code = main(["replay", "--config", str(config), "--topic", topic, *bounds, "--features",
                 "event", "--out", str(out / "results.parquet"), "--json",
                 str(out / "report.json")])
    assert code == 0
    yield (json.loads((out / "report.json").read_text()),
           set(pq.read_table(out / "results.parquet").column("event_id").to_pylist()))


@pytest.mark.parametrize(("from_ms", "to_ms"), [
    (None, None), (BASE + 4_500_000, None), (None, BASE + 4_200_000),
    (BASE + 1_500_000, BASE + 4_200_000)], ids=["neither", "from", "to", "both"])
def test_from_and_to_select_exactly_the_records_whose_event_time_is_in_range(
        history: Produced, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        broker_kind: str, from_ms: int | None, to_ms: int | None) -> None:
    bounds = [*(["--from", str(from_ms)] if from_ms else []),
              *(["--to", str(to_ms)] if to_ms else [])]
    ((report, ids),) = replay(config, history.topic, tmp_path, *bounds)
    printed = capsys.readouterr().out

    expected, malformed = history.selected(from_ms, to_ms)
    assert ids == expected and report["scored"] == len(expected)
    assert report["dead_lettered"] == malformed
    read = report["records_read"]
    assert read == report["scored"] + report["dead_lettered"] + report["out_of_range"]
    assert read == report["records"] == sum(
        p["records_read"] for p in report["partitions"].values())
    assert {int(p): facts["end_of_log"] for p, facts in report["partitions"].items()} == (
        history.ends()), "every partition read to its true end"
    if from_ms is None:
        assert read == len(history.ids)
    assert f"records read {read:,}, accounted for {read:,}" in printed
    for p, facts in report["partitions"].items():
        assert f"partition {p}: {facts['records_read']:,} records read" in printed
    if from_ms is not None and broker_kind == "kafka":  # the broker's offsets, checked, used
        starts = {int(p): facts["start"] for p, facts in report["partitions"].items()}
        assert starts == history.starts(from_ms), report["partitions"]
        assert all("is wrong" not in facts["why"] for facts in report["partitions"].values())
        if from_ms == BASE + 4_500_000:
            assert all(isinstance(start, int) for start in starts.values()), starts


def test_records_stamped_after_from_but_appended_before_it_are_read(
        broker: Broker, broker_kind: str, config: Path, make_topics: Any, tmp_path: Path
) -> None:
    """Records stamped a day ahead, appended before ``--from``. Tansu answers by append time,
    past them: replay sees that the records before its answer are not earlier, and reads the
    partition from its beginning. Apache Kafka answers by timestamp: the first of them."""
    (topic,) = make_topics(1)
    rng = np.random.default_rng(3)
    ahead = int(time.time() * 1000) + 86_400_000
    early = [(event(n, ahead + n, rng), ahead + n) for n in range(1500)]
    produce_batched(broker.bootstrap_servers, topic, early, 1)
    time.sleep(1.0)
    from_ms = int(time.time() * 1000)
    time.sleep(1.0)
    late = [(event(n, BASE + n, rng), BASE + n) for n in range(1500, 2000)]
    produce_batched(broker.bootstrap_servers, topic, late, 1)

    ((report, ids),) = replay(config, topic, tmp_path, "--from", str(from_ms))

    assert ids == {f"ev-{n}" for n in range(1500)}
    assert (report["records_read"], report["out_of_range"]) == (2000, 500)
    facts = report["partitions"]["0"]
    right = "offset for --from, 0, is close to the beginning" if broker_kind == "kafka" else \
        "is wrong"
    assert facts["start"] == "beginning" and right in facts["why"], facts
