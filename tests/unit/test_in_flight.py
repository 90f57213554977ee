"""``max_in_flight`` > 1: later batches are processed while earlier ones await their
acknowledgements; offsets are stored in batch order, and a failure rewinds every batch in
flight (at-least-once, nothing lost)."""

import json

import pytest

from stream_infer.adapters.memory import MemorySink, MemorySource, Record
from stream_infer.errors import ConfigError
from stream_infer.retry import Backoff
from stream_infer.runner import Runner, RunnerConfig
from tests.support.pipeline import event, make_pipeline

TP0, TP1 = ("transactions", 0), ("transactions", 1)


def one_partition(count: int) -> MemorySource:
    return MemorySource([Record(event(i), _offset=i, _key=b"k") for i in range(count)])


def pipelined(source: MemorySource, sink: MemorySink, in_flight: int = 3) -> Runner:
    return Runner(source, sink, make_pipeline(),
                  RunnerConfig(max_records=2, max_wait_s=0, backoff=Backoff(0.001, 0.001),
                               max_in_flight=in_flight))


def scored_ids(sink: MemorySink) -> list[str]:
    return [json.loads(o.value)["event_id"] for o in sink.on("scores")]


def test_offsets_wait_for_acknowledgements_and_are_stored_in_batch_order() -> None:
    source, sink = one_partition(10), MemorySink(hold=True)
    r = pipelined(source, sink)
    assert r.step() == 2 and r.step() == 2
    assert source.stored == {} and sink.delivered == []  # two batches sent, none acknowledged
    sink.acknowledge()
    assert r.step() == 2
    assert source.stored == {TP0: 4}  # both stored, in order, before the third batch
    sink.hold = False
    r.run(max_events=10)
    assert source.committed == {TP0: 10}  # closing waits for what is still in flight
    assert scored_ids(sink) == [f"e{i}" for i in range(10)]
    assert r.stats.batches == 5 and r.stats.counts.consumed == 10


def test_a_full_window_waits_for_the_oldest_batch() -> None:
    source, sink = one_partition(6), MemorySink(hold=True)
    r = pipelined(source, sink, in_flight=2)
    r.step()
    assert source.stored == {}
    r.step()  # a second batch in flight fills the window: the step waits for the oldest
    assert source.stored[TP0] >= 2


def test_a_failed_batch_rewinds_every_batch_in_flight_and_nothing_is_lost() -> None:
    source = MemorySource([Record(event(p * 100 + i), _partition=p, _offset=i, _key=b"k")
                           for p in (0, 1) for i in range(6)])
    sink = MemorySink(hold=True)
    r = pipelined(source, sink, in_flight=3)
    r.step()  # p0: 0-1
    r.step()  # p0: 2-3
    sink.fail_next = 1
    sink.acknowledge()  # the first batch fails, the second is delivered
    r.step()  # both rewound to p0:0, then p0: 0-1 consumed again
    assert source.stored == {} and r.stats.delivery_failures == 1
    assert source.position[TP0] == 2
    sink.hold = False  # from now on acknowledged at the next poll
    r.run(max_events=12)  # counted once settled: the two rewound batches count once
    assert source.committed == {TP0: 6, TP1: 6}
    ids = scored_ids(sink)
    assert set(ids) == {f"e{i}" for i in range(6)} | {f"e{100 + i}" for i in range(6)}
    assert ids.count("e0") == 1 and ids.count("e2") == 2  # at least once: e2 delivered twice


def test_a_sink_that_cannot_track_deliveries_is_refused() -> None:
    class PlainSink:
        def send(self, outputs: object) -> None: ...
        def flush(self, timeout_s: float) -> None: ...
        def close(self) -> None: ...

    with pytest.raises(ConfigError, match="tracks each batch"):
        Runner(MemorySource([]), PlainSink(), make_pipeline(), RunnerConfig(max_in_flight=2))
    Runner(MemorySource([]), PlainSink(), make_pipeline(), RunnerConfig(max_in_flight=1))
