"""Replay scores, dead-letters and orders every record exactly as the live pipeline does.

The replay loop reads files in chunks, keeps no wrapper per record and scores on a worker
thread; these tests hold it to :meth:`Pipeline.process` on the same bytes (scores bit for
bit, the same dead-letter reasons, the same alerts) and to ``inplace_predict`` offline.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost

from stream_infer.adapters.memory import FunctionModel, MemoryFeatureStore, Record
from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.config import FeatureView
from stream_infer.decode import JsonDecoder
from stream_infer.offline.tables import parquet_json_rows, read_lines
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.registry import write_model
from stream_infer.replay import collect as replay_collect
from stream_infer.replay.collect import ReplayCounts, write_results
from stream_infer.replay.run import replay
from stream_infer.replay.sources import file_chunks, in_time_range, topic_chunks
from stream_infer.score import ModelSet
from tests.support.events import HISTORY_FEATURES, HISTORY_FIELDS, history, write_lines

FIELDS = HISTORY_FIELDS
FEATURES = HISTORY_FEATURES
TOPICS = Topics("alerts", "dlq", "scores")


@pytest.fixture(scope="module")
def booster_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[xgboost.Booster, Path]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, len(FEATURES))).astype(np.float32)
    x[:, 0] = rng.lognormal(3, 1, 2000)
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (x[:, 1] + x[:, 2] * x[:, 3] > 0.3).astype(int)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 5, "nthread": 1},
                            xgboost.DMatrix(x, label=y, feature_names=FEATURES), 40)
    root = tmp_path_factory.mktemp("models")
    write_model(root, "replayed", "1", bytes(booster.save_raw("json")), features=FEATURES,
                threshold=0.6)
    return booster, root / "replayed" / "1"


def pipeline(model: Any, *, clock: int = 0, reasons: int = 0) -> Pipeline:
    return Pipeline(decoder=JsonDecoder(max_payload_bytes=2000),
                    models=ModelSet.build(model, {}, features_in_events=True),
                    store=MemoryFeatureStore(), topics=TOPICS,
                    encoder=msgspec.json.Encoder().encode, clock=lambda: clock,
                    reasons_top_k=reasons)


def live(pipe: Pipeline, lines: list[bytes], batch: int = 16
         ) -> tuple[dict[str, np.float32], Counter[str], list[bytes]]:
    """Scores by event id, dead-letter reasons and alerts of the live pipeline."""
    scores, reasons, alerts = {}, Counter[str](), []
    records = [Record(line, _topic="events.jsonl", _offset=i) for i, line in enumerate(lines)]
    for start in range(0, len(records), batch):
        for out in pipe.process(records[start:start + batch]).outputs:
            if out.topic == TOPICS.scores:
                record = json.loads(out.value or b"")
                scores[record["event_id"]] = np.float32(record["score"])
            elif out.topic == TOPICS.dead_letter:
                reasons[dict(out.headers)["dlq.reason"].decode()] += 1  # type: ignore[union-attr]
            else:
                alerts.append(out.value or b"")
    return scores, reasons, alerts


@pytest.mark.parametrize(("batch", "decode_batch"), [(32, 256), (300, 7), (64, 64)])
def test_replay_scores_and_dead_letters_every_record_as_the_live_pipeline(
        booster_dir: tuple[xgboost.Booster, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, batch: int, decode_batch: int) -> None:
    booster, model_dir = booster_dir
    model = XGBoostModel.load(model_dir, nthread=1)
    lines = history(300)
    path = write_lines(tmp_path / "events.jsonl", lines)
    monkeypatch.setattr(replay_collect, "DECODE_BATCH", decode_batch)

    results, counts = replay(file_chunks(path, batch=batch, timed=False), pipeline(model))
    columns = results.columns()
    scores, reasons, _ = live(pipeline(model), lines)

    assert counts.dlq_reasons == reasons == {"undecodable": 2, "schema": 3, "oversized": 1}
    assert counts.consumed == 300 and counts.dead_lettered == 6
    assert counts.scored == len(scores) == 294
    assert columns["event_id"].tolist() == list(scores)  # input order
    assert columns["offset"].tolist() == [i for i in range(300) if f"e{i}" in scores]
    replayed = columns["score:replayed:1"]
    assert np.array_equal(replayed, np.array(list(scores.values()), dtype=np.float32))
    matrix = np.column_stack([columns[f"feature:{f}"] for f in FEATURES])
    assert np.isnan(matrix).any()  # the missing features went through the fallback
    assert np.array_equal(replayed, booster.inplace_predict(matrix))
    labels = columns["label"]
    assert set(labels.tolist()) == {-1, 0, 1}


def test_alerts_sent_by_replay_are_the_live_pipelines(
        booster_dir: tuple[xgboost.Booster, Path], tmp_path: Path) -> None:
    model = XGBoostModel.load(booster_dir[1], nthread=1)
    lines = history(200, seed=8)
    path = write_lines(tmp_path / "events.jsonl", lines)
    sent: list[bytes] = []

    replay(file_chunks(path, batch=25, timed=False), pipeline(model, clock=7, reasons=2),
           send=lambda outputs: sent.extend(o.value or b"" for o in outputs))
    _, _, alerts = live(pipeline(model, clock=7, reasons=2), lines)

    assert len(alerts) > 5 and sent == alerts  # same ids, scores, reasons, bytes


def test_topic_chunks_from_interleaved_partitions_come_out_in_offset_order() -> None:
    lines = history(60, seed=4)
    records = [Record(line, _topic="tx", _partition=n % 3, _offset=100 + n // 3,
                      _timestamp=n) for n, line in enumerate(lines)]
    batches = [records[n:n + 7] for n in range(0, len(records), 7)]
    model = FunctionModel(lambda m: m[:, 0] / 1000, tuple(FEATURES), name="amount")

    results, counts = replay(topic_chunks("tx", batches), pipeline(model))
    columns = results.columns()
    scores, reasons, _ = live(pipeline(model), lines)

    assert counts.dlq_reasons == reasons and counts.scored == len(scores)
    order = list(zip(columns["partition"].tolist(), columns["offset"].tolist(), strict=True))
    assert order == sorted(order) and len(order) == len(scores)
    at = {(r.partition(), r.offset()): r.value() or b"" for r in records}
    assert [json.loads(at[place])["event_id"] for place in order] == columns["event_id"].tolist()
    assert [scores[e] for e in columns["event_id"]] == columns["score:amount:1"].tolist()
    assert set(columns["topic"].tolist()) == {"tx"}


def event_time_ms(line: bytes) -> int | None:
    """The oracle for time ranges: an event's time by the json module, None if unreadable."""
    try:
        when = json.loads(line)["event_time"]
        return when if isinstance(when, int) else int(
            dt.datetime.fromisoformat(when).timestamp() * 1000)
    except (ValueError, KeyError, TypeError):
        return None


def test_a_time_range_keeps_its_records_and_those_without_a_readable_time(
        tmp_path: Path) -> None:
    lines = history(50, seed=6)
    lines[7] = b'{"event_time": "not a time"}'
    path = write_lines(tmp_path / "events.jsonl", lines)
    low, high = 1_767_225_610_000, 1_767_225_630_000
    counts = ReplayCounts()

    chunks = list(in_time_range(file_chunks(path, batch=8), counts, low, high))

    times = [event_time_ms(line) for line in lines]
    expected = [i for i, t in enumerate(times) if t is None or low <= t < high]
    assert {4, 7, 9, 31} <= set(expected) and 13 in expected and 39 not in expected
    assert np.concatenate([c.offsets for c in chunks]).tolist() == expected
    assert [v for c in chunks for v in c.values] == [lines[i] for i in expected]
    assert counts.out_of_range == counts.consumed == 50 - len(expected)


def test_read_lines_gives_every_line_whatever_the_block_size(tmp_path: Path) -> None:
    text = b'{"a": 1}\r\n\n{"b": 2}\r\r\n x \r y \n\r\n{"c": 3}\r'
    path = tmp_path / "lines.jsonl"
    path.write_bytes(text)
    with open(path, "rb") as fh:
        expected = [line.rstrip(b"\r\n") for line in fh]  # the reference: line iteration
    for size in (1, 2, 3, 5, 8, 13, 64, 1 << 22):
        assert [line for block in read_lines(path, size) for line in block] == expected
    path.write_bytes(b"")
    assert list(read_lines(path)) == []


def test_a_parquet_event_file_replays_like_its_json_lines_twin(
        booster_dir: tuple[xgboost.Booster, Path], tmp_path: Path) -> None:
    model = XGBoostModel.load(booster_dir[1], nthread=1)
    events = [json.loads(line) for line in history(120, seed=9) if line.startswith(b'{"')]
    rows = [{**e, "attributes": e["attributes"] if len(e["attributes"]) == 6 else None}
            for e in events if isinstance(e["event_time"], int)]  # one type per column
    names = list(dict.fromkeys(k for r in rows for k in r))
    pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in names}),
                   tmp_path / "events.parquet")
    twin = write_lines(tmp_path / "events.jsonl", [
        json.dumps({k: v for k, v in r.items() if v is not None}).encode() for r in rows])

    from_parquet, counts = replay(file_chunks(tmp_path / "events.parquet", batch=50,
                                              timed=False), pipeline(model))
    from_lines, _ = replay(file_chunks(twin, batch=50, timed=False), pipeline(model))

    a, b = from_parquet.columns(), from_lines.columns()
    assert counts.dlq_reasons == {"schema": 2, "oversized": 1}
    assert counts.scored == len(rows) - 3 > 100
    assert a["event_id"].tolist() == b["event_id"].tolist()
    assert np.array_equal(a["score:replayed:1"], b["score:replayed:1"])


def test_a_model_failure_fails_the_replay_and_leaves_no_thread(tmp_path: Path) -> None:
    calls = []

    def failing(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        if len(calls) == 3:
            raise RuntimeError("model exploded")
        return np.zeros(len(matrix), dtype=np.float32)

    path = write_lines(tmp_path / "events.jsonl", history(200))
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="model exploded"):
        replay(file_chunks(path, batch=20, timed=False),
               pipeline(FunctionModel(failing, tuple(FEATURES))))
    assert threading.active_count() == before
    assert len(calls) <= 4  # stopped early, not after the whole file


def test_the_results_file_is_deterministic_and_keeps_unlabelled_rows_null(
        booster_dir: tuple[xgboost.Booster, Path], tmp_path: Path) -> None:
    model = XGBoostModel.load(booster_dir[1], nthread=1)
    path = write_lines(tmp_path / "events.jsonl", history(150))
    digests = []
    for name in ("a.parquet", "b.parquet"):
        results, _ = replay(file_chunks(path, batch=40, timed=False), pipeline(model))
        digests.append(write_results(results.columns(), tmp_path / name))
    assert digests[0] == digests[1]
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    table = pq.read_table(tmp_path / "a.parquet").to_pydict()
    labelled = {json.loads(line)["event_id"]: json.loads(line).get("label")
                for line in history(150) if line.startswith(b'{"')}
    assert table["label"] == [labelled[e] for e in table["event_id"]]
    assert None in table["label"] and 1 in table["label"]


def test_features_from_a_store_take_one_round_trip_per_chunk_and_match_live(
        booster_dir: tuple[xgboost.Booster, Path], tmp_path: Path) -> None:
    model = XGBoostModel.load(booster_dir[1], nthread=1)
    lines = history(600, seed=12)
    hashes = {f"card:c{n}": {f.removeprefix("card."): repr(0.1 * n - j).encode()
                             for j, f in enumerate(FIELDS) if (n + j) % 7}
              for n in range(35)}  # cards c35..c39 are unknown: their features are NaN

    def from_store() -> Pipeline:
        views = {"card": FeatureView(key="card:{card_id}",
                                     fields=[f.removeprefix("card.") for f in FIELDS])}
        return Pipeline(decoder=JsonDecoder(max_payload_bytes=2000),
                        models=ModelSet.build(model, views),
                        store=MemoryFeatureStore(hashes=hashes), topics=TOPICS,
                        encoder=msgspec.json.Encoder().encode)

    replayed = from_store()
    results, counts = replay(file_chunks(write_lines(tmp_path / "e.jsonl", lines), batch=300,
                                         timed=False), replayed)
    scores, reasons, _ = live(from_store(), lines)

    assert replayed.store.round_trips == 2  # type: ignore[attr-defined]
    assert counts.dlq_reasons == reasons
    columns = results.columns()
    assert [scores[e] for e in columns["event_id"]] == columns["score:replayed:1"].tolist()
    assert np.isnan(columns["feature:card.f1"]).any()


def test_parquet_rows_become_json_objects_without_their_null_cells(tmp_path: Path) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=dt.UTC)
    table = pa.table({
        "event_id": ["a", "b", None],
        "event_time": pa.array([when, None, when], type=pa.timestamp("ms", tz="UTC")),
        "amount": [1.5, None, 2.0],
        "attributes": [{"x": 1.0}, None, {"x": None}],
    })
    pq.write_table(table, tmp_path / "rows.parquet")

    rows = [row for part in parquet_json_rows(tmp_path / "rows.parquet", batch=2)
            for row in part]

    assert rows == [msgspec.json.encode({k: v for k, v in row.items() if v is not None})
                    for row in table.to_pylist()]
    assert json.loads(rows[0]) == {"event_id": "a", "event_time": "2026-01-02T03:04:05.678000Z",
                                   "amount": 1.5, "attributes": {"x": 1.0}}
    assert json.loads(rows[1]) == {"event_id": "b"}


def test_snapshot_views_sharing_a_key_template_keep_their_own_values(tmp_path: Path) -> None:
    """Snapshots are held packed per view: two views keyed alike must not overwrite each
    other, and the matrix holds exactly the files' values (float32)."""
    from stream_infer.config import Settings
    from stream_infer.replay.wiring import replay_pipeline

    rng = np.random.default_rng(8)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                            xgboost.DMatrix(x, label=x[:, 1] > x[:, 2]), 5)
    write_model(tmp_path / "models", "twin", "1", bytes(booster.save_raw("json")),
                features=["amount", "risk.score", "velocity.count"], threshold=0.5)
    (tmp_path / "risk.csv").write_text("card_id,score\nc1,0.25\nc2,-1.5\n")
    (tmp_path / "velocity.csv").write_text("card_id,count\nc1,7\nc3,0.1\n")
    settings = Settings(model={"dir": tmp_path / "models", "name": "twin"}, features={
        "risk": FeatureView(key="card:{card_id}", fields=["score"]),
        "velocity": FeatureView(key="card:{card_id}", fields=["count"])})
    pipe = replay_pipeline(settings, [("twin", "1")], features="snapshot", snapshots={
        "risk": tmp_path / "risk.csv", "velocity": tmp_path / "velocity.csv"})
    events = [json.dumps({"event_id": f"e{i}", "event_time": 1, "card_id": card,
                          "merchant_id": "m", "amount": 10.0 + i, "currency": "EUR"}).encode()
              for i, card in enumerate(["c1", "c2", "c3", "c4"])]
    batch = pipe.features(events)
    np.testing.assert_array_equal(batch.matrix, np.float32([
        [10, 0.25, 7], [11, -1.5, np.nan], [12, np.nan, 0.1], [13, np.nan, np.nan]]))
    scored = pipe.score(batch.matrix)
    expected = booster.inplace_predict(batch.matrix)
    assert np.array_equal(scored.scores.view(np.int32), expected.view(np.int32))
