"""A replay's window features: the engine ``features backfill`` runs, fed the same arrivals,
so a time-ordered history replays to exactly the rows backfill writes, however the replay
cuts it into batches; its labels file decoded as backfill decodes it, refused lines kept
with their reason; and ``--jobs`` above 1 refused with windows."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.adapters.memory import FunctionModel, MemoryFeatureStore
from stream_infer.config import Settings
from stream_infer.decode import JsonDecoder
from stream_infer.errors import ConfigError
from stream_infer.features import WindowEngine, define
from stream_infer.offline import backfill as bf
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.records import LabelRecord, Transaction
from stream_infer.replay.options import ReplayOptions
from stream_infer.replay.parallel import parallel_jobs
from stream_infer.replay.run import replay
from stream_infer.replay.sources import file_chunks
from stream_infer.replay.windows import LabelsFile, ReplayWindows
from stream_infer.score import ModelSet
from tests.unit.features.support import DAY, HOUR, ISSUE, T0, tx
from tests.unit.offline.test_backfill import messy_stream, same

DEFINITION = define(ISSUE)
NAMES = list(DEFINITION.names)


def backfilled(events: list[Transaction], labels: list[LabelRecord]) -> np.ndarray:
    engine = WindowEngine(DEFINITION, pending_labels=max(len(labels), 1))
    rows, _ = bf.features(engine, events, labels)
    return rows


def replayed(events: list[Transaction], labels: list[LabelRecord], cuts: list[int]
             ) -> np.ndarray:
    """The rows a replay serves, its input cut into batches at ``cuts``."""
    windows = ReplayWindows(DEFINITION, labels)
    bounds = [0, *sorted(set(cuts)), len(events)]
    parts = [windows(events[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    return np.concatenate(parts) if parts else np.empty((0, len(NAMES)), np.float32)


def time_ordered() -> tuple[list[Transaction], list[LabelRecord]]:
    """The backfill tests' messy history (duplicates, events without a terminal, labels
    corrected both ways, before their event, of events not in it, at equal times) in time
    order, as a replay of a history published by event time reads it."""
    events, labels = messy_stream()
    return sorted(events, key=lambda e: e.event_time_ms), labels


@pytest.mark.parametrize("batch", [1, 7, 256, 100_000])
def test_a_replay_serves_what_backfill_writes_whatever_its_batches(batch: int) -> None:
    events, labels = time_ordered()
    expected = backfilled(events, labels)
    got = replayed(events, labels, list(range(batch, len(events), batch)))
    assert same(got, expected)
    rates = expected[:, NAMES.index("terminal.rate_label_7d")]
    assert (rates > 0).any() and np.isnan(expected).any()


def test_a_correction_of_an_earlier_batchs_fraud_applies_before_the_next_event() -> None:
    """A fraud label applied in one batch, then corrected to genuine: the correction counts
    for the next batch's events at or after its time, as in backfill (it must not wait)."""
    events = [tx("a", T0, terminal="t1"), tx("b", T0 + DAY, terminal="t9"),
              tx("c", T0 + 8 * DAY + HOUR, terminal="t1"),
              tx("d", T0 + 8 * DAY + 3 * HOUR, terminal="t1")]
    labels = [LabelRecord("a", 1, T0 + HOUR), LabelRecord("a", 0, T0 + 8 * DAY + 2 * HOUR)]
    expected = backfilled(events, labels)
    rate = NAMES.index("terminal.rate_label_7d")
    assert expected[2, rate] == 1.0 and expected[3, rate] == 0.0
    assert same(replayed(events, labels, [2]), expected)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Transaction], list[LabelRecord], list[int]]:
    count = draw(st.integers(1, 40))
    times = sorted(draw(st.lists(st.integers(0, 20 * DAY // HOUR), min_size=count,
                                 max_size=count)))
    events = [tx(f"e{draw(st.integers(0, 45))}", T0 + t * HOUR,
                 draw(st.sampled_from(["c1", "c2", None])),
                 draw(st.sampled_from(["t1", "t2", None])), amount=float(i))
              for i, t in enumerate(times)]
    labels = [LabelRecord(f"e{draw(st.integers(0, 45))}", draw(st.integers(0, 1)),
                          T0 + draw(st.integers(0, 30 * DAY // HOUR)) * HOUR)
              for _ in range(draw(st.integers(0, 40)))]
    cuts = draw(st.lists(st.integers(1, count), max_size=6))
    return events, labels, cuts


@settings(max_examples=150, deadline=None)
@given(streams())
def test_any_time_ordered_stream_replays_as_it_backfills(
        stream: tuple[list[Transaction], list[LabelRecord], list[int]]) -> None:
    events, labels, cuts = stream
    assert same(replayed(events, labels, cuts), backfilled(events, labels))


def test_labels_apply_once_the_replay_reaches_their_time() -> None:
    windows = ReplayWindows(DEFINITION, [LabelRecord("x", 1, T0 + 5 * DAY),
                                         LabelRecord("y", 1, T0 + DAY),
                                         LabelRecord("z", 0, T0 + 9 * DAY)])
    windows([tx("x", T0)])
    assert windows.applied == 0
    windows([tx("b", T0 + DAY)])
    assert windows.applied == 1
    windows([tx("c", T0 + 2 * DAY), tx("d", T0 + 6 * DAY)])
    assert windows.applied == 2
    assert windows([]).shape == (0, len(NAMES))


def test_a_labels_file_decodes_as_backfill_and_keeps_its_refused_lines(tmp_path: Path) -> None:
    good = [{"event_id": "e1", "label": 1, "label_time": T0},
            {"event_id": "e2", "label": 0, "label_time": "2023-11-15T00:00:00Z"}]
    lines = [json.dumps(good[0]), '{"event_id": "e3", "label": 2, "label_time": 1}',
             json.dumps(good[1]), '{"event_id": "half']
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    found = LabelsFile(path, 2048)
    assert found.read == 4
    assert found.labels == [msgspec.convert(g, LabelRecord) for g in good]
    assert [(r.partition, r.offset, r.reason) for r in found.rejected] == [
        (0, 1, "schema"), (0, 3, "undecodable")]
    assert found.rejected[0].value == lines[1].encode()
    dead = bf.DeadLetters(tmp_path / "backfill.dead-letters.jsonl")
    decoded, _ = bf.decode_file(path, "labels", bf.JsonLabelDecoder(2048), dead)
    dead.close()
    assert decoded == found.labels and dict(dead.reasons["labels"]) == dict(found.reasons)

    table = tmp_path / "labels.parquet"
    pq.write_table(pa.Table.from_pylist([good[0]]), table)
    assert [label.event_id for label in LabelsFile(table, 2048).labels] == ["e1"]
    with pytest.raises(ConfigError, match="labels file not found"):
        LabelsFile(tmp_path / "missing.jsonl", 2048)


def test_jobs_above_one_are_refused_with_windows(tmp_path: Path) -> None:
    history = tmp_path / "events.jsonl"
    history.write_bytes(msgspec.json.encode(tx("e1", T0)) + b"\n")
    windowed = Settings(windows=ISSUE)
    options = ReplayOptions(out=tmp_path / "r.parquet", input=history, jobs=2)
    with pytest.raises(ConfigError, match=r"--jobs 2 .*\[windows\.\*\]"):
        parallel_jobs(windowed, options)
    assert parallel_jobs(windowed, ReplayOptions(out=options.out, input=history)) == 1
    assert parallel_jobs(windowed, ReplayOptions(out=options.out, input=history, jobs=1)) == 1
    assert parallel_jobs(Settings(), options) == 2


def test_a_replayed_file_feeds_the_windows_one_engine_call_per_chunk(tmp_path: Path) -> None:
    """A call of the engine merges the whole log of every entity it touches, so each chunk
    of the file goes to it whole, not a few hundred records at a time: 507 events in
    chunks of 300 take two calls, and are served the backfill's rows."""
    events, _ = time_ordered()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in events))
    windows = ReplayWindows(DEFINITION)
    pipe = Pipeline(decoder=JsonDecoder(max_payload_bytes=2000),
                    models=ModelSet.build(FunctionModel(lambda m: m[:, 0], tuple(NAMES)), {},
                                          windows=NAMES),
                    store=MemoryFeatureStore(), topics=Topics("alerts", "dlq", "scores"),
                    encoder=msgspec.json.Encoder().encode, windows=windows)
    results, counts = replay(file_chunks(path, batch=300, timed=False), pipe)
    assert (counts.scored, windows.calls) == (len(events), 2)
    columns = results.columns()
    served = np.array([columns[f"feature:{name}"] for name in NAMES], np.float32).T
    assert same(served, backfilled(events, []))
