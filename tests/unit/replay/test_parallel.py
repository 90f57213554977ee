"""``replay --jobs``: decoding on child processes changes nothing but the speed.

The results file of a parallel replay is the single-process one byte for byte (so is its
digest), dead letters and their reasons included; every line of the file is accounted for
once; the byte ranges the children read are exactly the lines ``read_lines`` gives.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import xgboost

from stream_infer.config import Settings
from stream_infer.decode import make_decoder
from stream_infer.errors import ConfigError
from stream_infer.offline import backtest
from stream_infer.offline.tables import read_lines
from stream_infer.registry import write_model
from stream_infer.replay import parallel as replay_jobs
from stream_infer.replay.collect import ReplayCounts
from stream_infer.replay.options import ReplayOptions
from stream_infer.replay.parallel import DecodePool, Spec, byte_ranges, parallel_jobs, read_range
from stream_infer.replay.run import ReplayRun, run_replay
from tests.support.events import HISTORY_FEATURES as FEATURES
from tests.support.events import history, write_lines

SMALL_PARTS = 700
"""Bytes per child task in these tests: a few lines each, so a file makes many parts."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1500, len(FEATURES))).astype(np.float32)
    x[:, 0] = rng.lognormal(3, 1, 1500)
    root = tmp_path_factory.mktemp("models")
    for name, columns in [("champ", list(range(len(FEATURES)))), ("shadow", [2, 0])]:
        names = [FEATURES[c] for c in columns]  # the shadow has columns of its own
        booster = xgboost.train(
            {"objective": "binary:logistic", "max_depth": 4, "nthread": 1},
            xgboost.DMatrix(x[:, columns], label=x[:, 1] + x[:, 2] > 0.5, feature_names=names),
            30)
        write_model(root, name, "1", bytes(booster.save_raw("json")), features=names,
                    threshold=0.5)
    return root


def settings(models: Path) -> Settings:
    return Settings(model={"dir": models, "name": "champ", "shadows": ["shadow"],
                           "nthread": 1}, decode={"max_payload_bytes": 2000})


def both(models: Path, path: Path, tmp_path: Path, **options: object
         ) -> tuple[ReplayRun, ReplayRun]:
    """The same replay in one process and on two children."""
    runs = []
    for jobs in (1, 2):
        runs.append(run_replay(settings(models), ReplayOptions(
            out=tmp_path / f"jobs{jobs}.parquet", input=path, jobs=jobs, **options)))  # type: ignore[arg-type]
    return runs[0], runs[1]


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_jobs, "part_bytes", lambda path: SMALL_PARTS)


def recorded_pools(monkeypatch: pytest.MonkeyPatch, *, wait: bool) -> list[DecodePool]:
    """The pools ``run_replay`` makes; with ``wait``, each waits for its children before
    decoding (so every part is theirs)."""
    pools: list[DecodePool] = []
    enter = DecodePool.__enter__

    def entered(pool: DecodePool) -> DecodePool:
        pools.append(enter(pool))
        assert not wait or pool.wait_started(60)
        return pool

    monkeypatch.setattr(DecodePool, "__enter__", entered)
    return pools


def counted(run: ReplayRun) -> tuple[object, ...]:
    c = run.counts
    return (c.consumed, c.scored, c.dead_lettered, c.out_of_range, list(c.dlq_reasons.items()))


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize("decoder", ["children", "this process while they start"])
def test_a_parallel_replay_writes_the_single_process_results_file_byte_for_byte(
        models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str) -> None:
    path = write_lines(tmp_path / "events.jsonl", history(400, seed=21))
    if decoder != "children":  # children that never start in time
        monkeypatch.setattr(DecodePool, "_start", lambda pool: None)
    pools = recorded_pools(monkeypatch, wait=decoder == "children")

    alone, parallel = both(models, path, tmp_path)

    assert parallel.digest == alone.digest
    assert (tmp_path / "jobs2.parquet").read_bytes() == (tmp_path / "jobs1.parquet").read_bytes()
    assert counted(parallel) == counted(alone)
    assert alone.counts.dlq_reasons == {"undecodable": 2, "schema": 3, "oversized": 1}
    assert alone.counts.scored == 394 and alone.counts.accounted() == 400
    assert (alone.context["decoding_processes"], parallel.context["decoding_processes"]) == (1, 2)
    report = json.dumps(backtest.as_json(alone.reports, {
        **alone.context, "results": "", "dead_letters_file": ""}))
    assert json.dumps(backtest.as_json(parallel.reports, {
        **parallel.context, "results": "", "dead_letters_file": "",
        "decoding_processes": 1})) == report
    assert [r.model for r in alone.reports] == ["champ:1", "shadow:1"]
    assert len(pools) == 1
    ranges = len(list(byte_ranges(path, SMALL_PARTS)))
    assert pools[0].decoded_here == (0 if decoder == "children" else ranges) and ranges > 100


@pytest.mark.usefixtures("small_parts")
def test_a_parallel_time_range_keeps_and_counts_the_same_records(
        models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = history(300, seed=22)
    lines[40] = b'{"event_time": "not a time"}'  # kept (unknown time), then dead-lettered
    path = write_lines(tmp_path / "events.jsonl", lines)

    pools = recorded_pools(monkeypatch, wait=True)

    alone, parallel = both(models, path, tmp_path, from_ms=1_767_225_650_000,
                           to_ms=1_767_225_800_000)

    assert parallel.digest == alone.digest
    assert counted(parallel) == counted(alone)
    assert 0 < alone.counts.out_of_range < 300 - alone.counts.scored
    assert alone.counts.accounted() == alone.counts.consumed == 300
    assert pools[0].decoded_here == 0


def test_every_line_is_scored_dead_lettered_or_out_of_range_exactly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = history(250, seed=23)
    path = write_lines(tmp_path / "events.jsonl", lines)
    spec = Spec(path.name, Settings().decode.model_dump(mode="json"), FEATURES,
                from_ms=1_767_225_620_000)
    counts = ReplayCounts()
    gate = threading.Event()
    start = DecodePool._start
    monkeypatch.setattr(DecodePool, "_start", lambda pool: (gate.wait(), start(pool)))
    monkeypatch.setattr(replay_jobs, "part_bytes", lambda path: 900)
    with DecodePool(2) as pool:
        decoding = pool.parts(path, spec, counts)
        parts = [next(decoding) for _ in range(3)]  # here: the children have not started
        gate.set()
        assert pool.wait_started(60)
        parts += decoding  # theirs

    assert pool.decoded_here == 3
    scored = np.concatenate([p.offsets for p in parts]).tolist()
    rejected = [row.offset for p in parts for row in p.rejected]
    assert len(parts) > 10 and scored == sorted(scored)
    assert rejected and counts.dead_lettered == len(rejected)
    assert set(scored).isdisjoint(rejected)
    assert counts.consumed == 250 == len(scored) + len(rejected) + counts.out_of_range
    at = {row: json.loads(lines[row])["event_id"] for row in scored}
    assert [at[row] for row in scored] == [e for p in parts for e in p.event_ids]


@pytest.mark.parametrize("text", [
    b'{"a": 1}\r\n\n{"b": 2}\r\r\n x \r y \n\r\n{"c": 3}\r',
    b"one\ntwo\nthree\n",
    b"\n\n\n",
    b"no ending",
    b"x" * 50 + b"\nshort\n" + b"y" * 30,
])
def test_byte_ranges_hold_exactly_the_lines_read_lines_gives(tmp_path: Path,
                                                              text: bytes) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(text)
    expected = [line for block in read_lines(path) for line in block]
    for size in (1, 2, 3, 7, 16, 1 << 20):
        ranges = list(byte_ranges(path, size))
        assert [b for _, b in ranges[:-1]] == [a for a, _ in ranges[1:]]  # contiguous
        assert ranges[0][0] == 0 and ranges[-1][1] == len(text)
        assert all(text[end - 1:end] == b"\n" for _, end in ranges[:-1])
        assert [line for a, b in ranges for line in read_range(str(path), a, b)] == expected


def test_jobs_apply_to_json_lines_of_events_carrying_their_features(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = write_lines(tmp_path / "events.jsonl", history(40))
    config = Settings()

    def jobs(**options: object) -> int:
        return parallel_jobs(config, ReplayOptions(out=tmp_path / "r.parquet", **options))  # type: ignore[arg-type]

    assert jobs(input=path, jobs=3) == 3 and jobs(input=path, jobs=1) == 1
    assert jobs(input=path) == 1  # auto: a small file decodes here
    monkeypatch.setattr(replay_jobs, "AUTO_MIN_BYTES", path.stat().st_size)
    assert jobs(input=path) == replay_jobs.cores()
    with caplog.at_level(logging.WARNING, logger="stream_infer.replay.parallel"):
        assert jobs(input=path, features="snapshot", jobs=2) == 1
        assert jobs(input=path, output_topic="replay-alerts", jobs=2) == 1
        assert jobs(input=tmp_path / "events.parquet", jobs=2) == 1
        assert jobs(topic="tx", jobs=2) == 1
    assert len(caplog.records) == 4 and "--features event" in caplog.records[0].getMessage()
    with pytest.raises(ConfigError, match="at least 1"):
        jobs(input=path, jobs=0)


def test_a_failing_model_stops_the_children_and_leaves_no_thread(
        models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_lines(tmp_path / "events.jsonl", history(300))
    from stream_infer.replay import run as replay

    def exploding(*args: object) -> object:
        raise RuntimeError("model exploded")

    monkeypatch.setattr(replay_jobs, "part_bytes", lambda path: SMALL_PARTS)
    monkeypatch.setattr(replay, "_score", exploding)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="model exploded"):
        run_replay(settings(models), ReplayOptions(out=tmp_path / "r.parquet", input=path,
                                                   jobs=2))
    assert threading.active_count() == before
    assert not (tmp_path / "r.parquet").exists()


def test_dead_letters_are_written_beside_the_results_with_reason_and_error(
        models: Path, tmp_path: Path, small_parts: None) -> None:
    lines = history(300)
    path = write_lines(tmp_path / "events.jsonl", lines)
    one, two = both(models, path, tmp_path)
    decoder = make_decoder(settings(models).decode)
    expected = {}
    for offset, line in enumerate(lines):
        _, failures = decoder.many([line])
        if failures:
            expected[offset] = failures[0][1].reason
    assert expected, "the history holds records the decoder refuses"
    files = [Path(run.context["dead_letters_file"]) for run in (one, two)]
    assert files == [tmp_path / "jobs1.dead-letters.jsonl", tmp_path / "jobs2.dead-letters.jsonl"]
    rows = [[json.loads(line) for line in f.read_bytes().splitlines()] for f in files]
    assert rows[0] == rows[1]
    assert {r["offset"]: r["reason"] for r in rows[0]} == expected
    assert [r["offset"] for r in rows[0]] == sorted(expected)
    assert all(r["topic"] == "events.jsonl" and r["error"] for r in rows[0])
    assert one.counts.dead_lettered == len(expected)
    text = files[0].read_text()
    assert "4111" not in text and "[redacted]" in text  # a card number is never written


def test_known_compromised_cards_leave_card_precision_rankings(models: Path,
                                                               tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.jsonl", history(300))
    known = tmp_path / "known.csv"
    known.write_text("card_id,known_from\nc0,\nc10,2026-01-01T00:00:00Z\n")  # frauds
    plain = run_replay(settings(models), ReplayOptions(out=tmp_path / "a.parquet", input=path,
                                                       jobs=1, k=40))
    run = run_replay(settings(models), ReplayOptions(out=tmp_path / "b.parquet", input=path,
                                                     jobs=1, k=40, known_compromised=known))
    assert run.context["known_compromised_cards"] == 2 and run.context["warnings"] == []
    columns = run.columns
    labelled = columns["label"] >= 0
    expected = backtest.card_precision_at_k(
        columns["score:champ:1"][labelled], columns["label"][labelled].astype(float),
        columns["card_id"][labelled], columns["event_time"][labelled] // backtest.DAY_MS, 40,
        excluding_known=True, known_compromised={"c0": -(2**63), "c10": 1_767_225_600_000})
    assert run.reports[0].card_precision_at_k_excluding_known == expected
    assert plain.reports[0].card_precision_at_k_excluding_known != expected  # the file counts
    assert plain.reports[0].card_precision_at_k == run.reports[0].card_precision_at_k
