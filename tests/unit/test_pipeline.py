"""The pipeline and the runner's control flow, with the in-memory fakes (no sockets)."""

import json
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_infer.adapters.memory import (
    FunctionModel,
    MemoryFeatureStore,
    MemorySink,
    MemorySource,
    Record,
)
from stream_infer.decode import JsonDecoder, JsonLabelDecoder
from stream_infer.errors import FeatureStoreError
from stream_infer.pipeline import Pipeline, Topics, span_offsets
from stream_infer.records import Alert, LabelRecord, Transaction
from stream_infer.retry import Backoff
from stream_infer.runner import Runner, RunnerConfig
from stream_infer.score import ModelSet, alert_id
from tests.support.pipeline import event, make_pipeline, records


def test_every_record_ends_as_one_score_or_one_dead_letter() -> None:
    batch = records([event(0), b"{not json", event(2, card="c9"), event(3, amount=-1)])
    outcome = make_pipeline().process(batch)
    scores = [o for o in outcome.outputs if o.topic == "scores"]
    dlq = [o for o in outcome.outputs if o.topic == "dlq"]
    assert sorted(json.loads(o.value)["event_id"] for o in scores) == ["e0", "e2"]
    assert [dict(o.headers)["dlq.source.offset"] for o in dlq] == [b"1", b"3"]
    assert outcome.next_offsets == {("transactions", 0): 4}
    assert outcome.first_offsets == {("transactions", 0): 0}
    assert outcome.counts.consumed == 4 and outcome.counts.dead_lettered == 2


def test_offsets_per_partition_of_an_interleaved_batch() -> None:
    """First offset and next offset of every topic-partition, whatever the interleaving and
    whichever records are dead letters."""
    places = [("a", 0, 10), ("b", 0, 500), ("a", 1, 7), ("a", 0, 11), ("a", 1, 8),
              ("b", 0, 501), ("a", 0, 12), ("a", 1, 9)]
    batch = [Record(event(i) if i % 3 else b"{bad", _topic=t, _partition=p, _offset=o)
             for i, (t, p, o) in enumerate(places)]
    outcome = make_pipeline().process(batch)
    assert outcome.first_offsets == {("a", 0): 10, ("a", 1): 7, ("b", 0): 500}
    assert outcome.next_offsets == {("a", 0): 13, ("a", 1): 10, ("b", 0): 502}
    assert outcome.counts.dead_lettered == 3


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3)), max_size=60),
       st.sampled_from(["two topics", "one topic", "one partition"]))
def test_span_offsets_match_a_scan_of_every_record(places: list[tuple[str, int]],
                                                   spread: str) -> None:
    """The batch's bounds per partition equal what reading every record's offset gives, for
    one partition, one topic (told apart by partition alone) and two (by topic and
    partition)."""
    if spread == "one topic":
        places = [("a", p) for _, p in places]
    elif spread == "one partition":
        places = [("a", 2) for _ in places]
    offsets: dict[tuple[str, int], int] = {}
    batch = []
    for topic, partition in places:
        offset = offsets[topic, partition] = offsets.get((topic, partition), 100 * partition) + 1
        batch.append(Record(b"", _topic=topic, _partition=partition, _offset=offset))
    expected_first: dict[tuple[str, int], int] = {}
    expected_next: dict[tuple[str, int], int] = {}
    for r in batch:
        expected_first.setdefault((r.topic(), r.partition()), r.offset())
        expected_next[r.topic(), r.partition()] = r.offset() + 1
    first: dict[tuple[str, int], int] = {}
    nxt: dict[tuple[str, int], int] = {}
    span_offsets(batch, first, nxt)
    assert (first, nxt) == (expected_first, expected_next)


def test_alerts_are_keyed_by_card_with_deterministic_ids() -> None:
    outcome = make_pipeline().process(records([event(0), event(1, card="c9")]))
    (alert_out,) = [o for o in outcome.outputs if o.topic == "alerts"]
    alert = msgspec.json.decode(alert_out.value, type=Alert)
    assert alert_out.key == b"c9"
    assert alert.alert_id == alert_id("e1", "fake", "1")
    assert alert.score == pytest.approx(0.95) and alert.threshold == 0.5
    assert (alert.event_time, alert.scored_at, alert.degraded) == (1_700_000_000_001, 42, False)
    assert outcome.alert_source_ms == [1001]


def test_dead_letter_keeps_raw_bytes_key_and_names_the_reason() -> None:
    raw = b'{"event_id": "x"'
    batch = [Record(raw, _topic="tx", _partition=3, _offset=77, _key=b"key",
                    _headers=[("traceparent", b"00-abc")], _timestamp=5)]
    (dlq,) = make_pipeline().process(batch).outputs
    headers = dict(dlq.headers)
    assert (dlq.topic, dlq.key, dlq.value) == ("dlq", b"key", raw)
    assert headers["traceparent"] == b"00-abc"
    assert headers["dlq.reason"] == b"undecodable"
    source = [headers[f"dlq.source.{k}"] for k in ("topic", "partition", "offset", "timestamp")]
    assert source == [b"tx", b"3", b"77", b"5"]


def test_score_records_carry_the_feature_vector_used() -> None:
    outcome = make_pipeline().process(records([event(0, card="unknown")]))
    (score,) = [json.loads(o.value) for o in outcome.outputs if o.topic == "scores"]
    assert score["features"] == {"amount": 10.0, "card.risk": None}


def test_fail_open_scores_with_nan_features_and_marks_alerts_degraded() -> None:
    fs = MemoryFeatureStore(down=True)
    outcome = make_pipeline(fs).process(records([event(0, amount=500.0)]))
    (alert_out,) = [o for o in outcome.outputs if o.topic == "alerts"]
    assert json.loads(alert_out.value)["degraded"] is True
    assert outcome.counts.degraded == 1


def test_pause_policy_lets_the_outage_reach_the_runner() -> None:
    with pytest.raises(FeatureStoreError):
        make_pipeline(MemoryFeatureStore(down=True), "pause").process(records([event(0)]))


def runner(source: MemorySource, sink: MemorySink, pipeline: Pipeline) -> Runner:
    return Runner(source, sink, pipeline,
                  RunnerConfig(max_records=3, max_wait_s=0, backoff=Backoff(0.001, 0.001)))


def test_runner_stores_offsets_only_after_outputs_are_acknowledged() -> None:
    source = MemorySource(records([event(i) for i in range(5)]))
    sink = MemorySink()
    sink.fail_next = 1
    r = runner(source, sink, make_pipeline())
    assert r.step() == 0  # delivery failed: nothing stored, partition rewound
    assert source.stored == {} and sink.delivered == []
    r.run(max_events=5)
    assert source.committed == {("transactions", 0): 5}
    ids = [json.loads(o.value)["event_id"] for o in sink.on("scores")]
    assert ids == [f"e{i}" for i in range(5)]  # the failed batch was consumed again
    assert r.stats.delivery_failures == 1 and source.closed


def test_runner_pauses_while_the_store_is_down_and_retries_the_same_batch() -> None:
    fs = MemoryFeatureStore({"card:c1": {"risk": b"0.2"}}, down=True)
    source = MemorySource(records([event(i) for i in range(3)]))
    sink = MemorySink()
    r = runner(source, sink, make_pipeline(fs, "pause"))
    original_consume = source.consume
    attempts = []

    def consume(n: int, timeout: float) -> list[Record]:
        if source.paused:
            attempts.append(n)
            if len(attempts) == 3:
                fs.down = False
        return original_consume(n, timeout)

    source.consume = consume  # type: ignore[method-assign]
    assert r.step() == 3
    assert len(attempts) == 3 and not source.paused
    assert source.stored == {("transactions", 0): 3}
    assert all(not json.loads(o.value)["degraded"] for o in sink.on("scores"))
    assert r.stats.outages == 1


def test_runner_drops_records_of_partitions_revoked_during_the_pause() -> None:
    fs = MemoryFeatureStore({}, down=True)
    source = MemorySource(records([event(0)], partition=0) + records([event(1)], partition=1))
    r = runner(source, MemorySink(), make_pipeline(fs, "pause"))
    original_consume = source.consume

    def consume(n: int, timeout: float) -> list[Record]:
        if source.paused:
            source.assigned.discard(("transactions", 1))
            fs.down = False
        return original_consume(n, timeout)

    source.consume = consume  # type: ignore[method-assign]
    r.step()
    assert source.stored == {("transactions", 0): 1}
    assert r.stats.counts.consumed == 1


def test_stop_finishes_the_batch_then_commits_and_closes() -> None:
    source = MemorySource(records([event(i) for i in range(9)]))
    sink = MemorySink()
    r = runner(source, sink, make_pipeline())
    original_consume = source.consume

    def consume(n: int, timeout: float) -> list[Record]:
        r.stop()
        return original_consume(n, timeout)

    source.consume = consume  # type: ignore[method-assign]
    r.run()
    assert source.committed == {("transactions", 0): 3} and source.closed
    assert len(sink.on("scores")) == 3


def test_an_unreachable_schema_registry_pauses_instead_of_dead_lettering() -> None:
    from stream_infer.decode import decode_each
    from stream_infer.errors import RegistryUnavailable

    pipeline = make_pipeline()
    real_decoder, calls = pipeline.features.decoder, []

    class Flaky:
        def __call__(self, value: bytes | None):
            calls.append(value)
            if len(calls) <= 2:
                raise RegistryUnavailable("schema registry unreachable (injected)")
            return real_decoder(value)

        def many(self, values):
            return decode_each(self, values)

    pipeline.features.decoder = Flaky()
    source, sink = MemorySource(records([event(0)])), MemorySink()
    r = runner(source, sink, pipeline)
    assert r.step() == 1
    assert sink.on("dlq") == [] and len(sink.on("scores")) == 1
    assert r.stats.outages == 1 and source.stored == {("transactions", 0): 1}


def test_alerts_carry_reason_codes_only_when_asked() -> None:
    batch = records([event(0, card="c9"), event(1)])
    (plain,) = [o for o in make_pipeline().process(batch).outputs if o.topic == "alerts"]
    assert json.loads(plain.value)["reasons"] == []
    (explained,) = [o for o in make_pipeline(reasons_top_k=1).process(batch).outputs
                    if o.topic == "alerts"]
    (reason,) = json.loads(explained.value)["reasons"]
    assert reason == {"feature": "amount", "value": 10.0, "contribution": 10.0}


class FakeTransactions:
    """Commits outputs and offsets together; ``abort_next`` aborts that many commits."""

    def __init__(self, fatal: bool = False) -> None:
        self.committed: list[tuple[list[str], dict[tuple[str, int], int]]] = []
        self.abort_next = 0
        self.fatal = fatal
        self.closed = False

    def commit(self, outputs, offsets) -> None:  # type: ignore[no-untyped-def]
        from stream_infer.errors import BrokerError, DeliveryError

        if self.fatal:
            raise BrokerError("fenced by a newer instance")
        if self.abort_next:
            self.abort_next -= 1
            raise DeliveryError("transaction aborted (injected)")
        self.committed.append(([json.loads(o.value)["event_id"] for o in outputs
                                if o.topic == "scores"], dict(offsets)))

    def close(self) -> None:
        self.closed = True


def test_exactly_once_commits_outputs_with_offsets_and_retries_an_aborted_batch() -> None:
    source = MemorySource(records([event(i) for i in range(5)]))
    sink = MemorySink()
    transactions = FakeTransactions()
    transactions.abort_next = 1
    r = Runner(source, sink, make_pipeline(), RunnerConfig(max_records=3,
               backoff=Backoff(0.001, 0.001)), transactions=transactions)
    assert r.step() == 0  # aborted: rewound, nothing committed
    assert transactions.committed == [] and source.stored == {}
    r.run(max_events=5)
    assert transactions.committed == [(["e0", "e1", "e2"], {("transactions", 0): 3}),
                                      (["e3", "e4"], {("transactions", 0): 5})]
    assert sink.delivered == [] and source.stored == {}  # nothing outside the transactions
    assert transactions.closed and r.stats.delivery_failures == 1


def test_a_fenced_producer_stops_the_runner() -> None:
    from stream_infer.errors import BrokerError

    source = MemorySource(records([event(i) for i in range(3)]))
    r = Runner(source, MemorySink(), make_pipeline(), transactions=FakeTransactions(fatal=True))
    with pytest.raises(BrokerError, match="fenced"):
        r.run(max_events=3)
    assert source.closed and source.committed == {}


class LabelsSeen:
    """A window features port that keeps the labels each batch hands it."""

    names = ("window.x",)

    def __init__(self) -> None:
        self.labels: list[str] = []

    def __call__(self, events: Sequence[Transaction],
                 labels: Sequence[LabelRecord] = ()) -> np.ndarray:
        self.labels += [label.event_id for label in labels]
        return np.zeros((len(events), 1), np.float32)


def test_a_label_stamped_too_far_ahead_of_the_clock_is_a_dead_letter_not_a_label() -> None:
    """A label_time beyond ``labels_max_ahead_ms`` ahead of the clock would beat every later
    correction of its event: the label goes to the dead-letter topic with why; one exactly
    at the bound is a label. Without a bound (0) both are labels."""
    now, bound = 1_800_000_000_000, 3_600_000

    def run(limit: int) -> tuple[list[str], list[dict[str, bytes]]]:
        seen = LabelsSeen()
        pipeline = Pipeline(
            decoder=JsonDecoder(max_payload_bytes=4096),
            models=ModelSet.build(FunctionModel(lambda m: m[:, 0] * 0, ("amount",)), {}),
            store=MemoryFeatureStore(), topics=Topics("alerts", "dlq", "scores", "labels"),
            encoder=msgspec.json.Encoder().encode, clock=lambda: now, windows=seen,
            label_decoder=JsonLabelDecoder(4096), labels_max_ahead_ms=limit)
        labels = [json.dumps({"event_id": name, "label": 1, "label_time": now + ahead}).encode()
                  for name, ahead in (("edge", bound), ("over", bound + 1))]
        batch = [Record(value, _topic="labels", _offset=i) for i, value in enumerate(labels)]
        outcome = pipeline.process([*batch, *records([event(0)])])
        return seen.labels, [dict(o.headers) for o in outcome.outputs if o.topic == "dlq"]

    kept, dead = run(bound)
    assert kept == ["edge"]
    assert [(d["dlq.reason"], d["dlq.source.offset"]) for d in dead] == [(b"schema", b"1")]
    assert b"ahead of this worker's clock" in dead[0]["dlq.error"]
    assert run(0) == (["edge", "over"], [])
