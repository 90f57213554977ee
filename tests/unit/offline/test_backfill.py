"""``features backfill``: every event's window features as served on arrival, exactly what
one arrival at a time through the engine gives; the output file, its dead letters, and
``features list``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.cli import main
from stream_infer.config import Settings
from stream_infer.features import Label, WindowEngine, define
from stream_infer.offline import backfill as bf
from stream_infer.offline import handbook as hb
from stream_infer.records import LabelRecord, Transaction
from tests.unit.features.support import DAY, HOUR, ISSUE, T0, tx
from tests.unit.features.test_handbook import by_entity, customer_spending, terminal_risk

SETTINGS = Settings(windows=ISSUE)
NAMES = list(define(ISSUE).names)
ROOT = Path(__file__).resolve().parents[3]


def one_arrival_at_a_time(events: list[Transaction], labels: list[LabelRecord]
                          ) -> np.ndarray:
    """The reference: each arrival alone, labels before events at equal times, each kind in
    file order."""
    engine = WindowEngine(define(ISSUE), pending_labels=10**6)
    arrivals = sorted([(e.event_time_ms, 1, i) for i, e in enumerate(events)]
                      + [(label.label_time_ms, 0, i) for i, label in enumerate(labels)])
    rows = np.empty((len(events), len(NAMES)), np.float32)
    for _, kind, i in arrivals:
        if kind == 0:
            label = labels[i]
            engine.apply([], [Label(label.event_id, label.label, label.label_time_ms)])
        else:
            rows[i] = engine.apply([events[i]])[0]
    return rows


def backfilled(events: list[Transaction], labels: list[LabelRecord], batch: int
               ) -> np.ndarray:
    engine = WindowEngine(define(ISSUE), pending_labels=max(len(labels), 1))
    rows, _ = bf.features(engine, events, labels, batch)
    return rows


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (NaN included)."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def messy_stream(seed: int = 5) -> tuple[list[Transaction], list[LabelRecord]]:
    """Handbook events and 2-day labels, with what a real history has: rows out of time
    order, a duplicate, events without a terminal, labels corrected both ways, labels
    before their event, labels of events not in the history, equal times."""
    pop = hb.make_population(customers=40, terminals=30, seed=seed)
    found = list(hb.events(hb.generate(pop, 45, seed), start=T0, seed=seed))
    labels = hb.labels(found, hb.Delay.parse("1d..3d"), seed)
    events = [msgspec.convert(e, Transaction) for e in found]
    rng = np.random.default_rng(seed)
    events[100:140] = [msgspec.structs.replace(e, terminal_id=None) for e in events[100:140]]
    swap = rng.permutation(len(events))[:200]
    events = [events[i] for i in swap] + [e for i, e in enumerate(events) if i not in set(swap)]
    events.append(events[500])
    records = [msgspec.convert(label, LabelRecord) for label in labels]
    extra = [LabelRecord(e.event_id, 1 - (e.label or 0), e.event_time_ms + 5 * DAY)
             for e in events[::37]]
    extra += [LabelRecord(e.event_id, 1, e.event_time_ms - HOUR) for e in events[::53]]
    extra += [LabelRecord(f"nowhere-{i}", 1, T0 + i * DAY) for i in range(5)]
    extra += [LabelRecord(e.event_id, 1, events[i + 1].event_time_ms)
              for i, e in enumerate(events[:-1:41])]
    return events, records + extra


@pytest.mark.parametrize("batch", [1, 7, 20_000])
def test_backfill_is_exactly_one_arrival_at_a_time(batch: int) -> None:
    events, labels = messy_stream()
    expected = one_arrival_at_a_time(events, labels)
    assert same(backfilled(events, labels, batch), expected)
    assert np.isnan(expected).any() and (expected[:, NAMES.index("terminal.rate_label_7d")]
                                         > 0).any()


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Transaction], list[LabelRecord]]:
    count = draw(st.integers(1, 40))
    times = draw(st.lists(st.integers(0, 20 * DAY // HOUR), min_size=count, max_size=count))
    events = [tx(f"e{draw(st.integers(0, 45))}", T0 + t * HOUR,
                 draw(st.sampled_from(["c1", "c2", None])),
                 draw(st.sampled_from(["t1", "t2", None])), amount=float(i))
              for i, t in enumerate(times)]
    labels = [LabelRecord(f"e{draw(st.integers(0, 45))}", draw(st.integers(0, 1)),
                          T0 + draw(st.integers(0, 30 * DAY // HOUR)) * HOUR)
              for _ in range(draw(st.integers(0, 40)))]
    return events, labels


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 50))
def test_any_stream_backfills_as_one_arrival_at_a_time(
        stream: tuple[list[Transaction], list[LabelRecord]], batch: int) -> None:
    events, labels = stream
    assert same(backfilled(events, labels, batch), one_arrival_at_a_time(events, labels))


def test_a_label_known_at_the_very_time_of_an_event_counts_for_it() -> None:
    """Ties: labels first. A fraud at t0 on terminal t1, labelled at exactly t0 + 7d, is in
    the delayed window (t - 8d, t - 7d] of an event at t0 + 7d, and known to it."""
    fraud = tx("fraud", T0)
    for label_time, rate in ((T0 + 7 * DAY, 1.0), (T0 + 7 * DAY + 1, 0.0)):
        rows = backfilled([fraud, tx("later", T0 + 7 * DAY)],
                          [LabelRecord("fraud", 1, label_time)], 20_000)
        assert rows[1, NAMES.index("terminal.rate_label_1d")] == rate


def test_a_correction_to_genuine_counts_from_its_own_time() -> None:
    """A fraud label corrected to genuine a day later: an event before the correction
    counts the fraud, one after it does not, even in one batch."""
    events = [tx("x", T0), tx("before", T0 + 7 * DAY + 2 * HOUR),
              tx("after", T0 + 8 * DAY + HOUR)]
    labels = [LabelRecord("x", 1, T0 + HOUR), LabelRecord("x", 0, T0 + 8 * DAY)]
    rows = backfilled(events, labels, 20_000)
    assert rows[1:, NAMES.index("terminal.rate_label_7d")].tolist() == [1.0, 0.0]
    assert same(rows, one_arrival_at_a_time(events, labels))


@pytest.mark.parametrize(("delay", "during"), [("1d..3d", False), ("7d", False),
                                              ("8d..9d", True)])
def test_labels_due_at_any_delay_cut_no_batch(delay: str, during: bool) -> None:
    """A label due before an event could hold its event in a rate window (7 days after
    it; at exactly 7 days, labels come first) applies at its batch's start; one due later
    arrives among the batch's events, and counts for those after it only. Either way the
    507 events go in one engine call, the genuine labels due after the last event in
    another, and every value is what one arrival at a time gives."""
    pop = hb.make_population(customers=40, terminals=30, seed=5)
    found = list(hb.events(hb.generate(pop, 45, 5), start=T0, seed=5))
    events = [msgspec.convert(e, Transaction) for e in found]
    labels = [msgspec.convert(label, LabelRecord)
              for label in hb.labels(found, hb.Delay.parse(delay), 5)]
    calls = list(bf.segments(events, labels, WindowEngine(define(ISSUE)), 20_000))
    assert (sum(len(call.during) for call in calls) > 0) == during
    engine = WindowEngine(define(ISSUE), pending_labels=len(labels))
    rows, made = bf.features(engine, events, labels, 20_000)
    assert made == 2
    assert same(rows, one_arrival_at_a_time(events, labels))
    assert (rows[:, NAMES.index("terminal.rate_label_30d")] > 0).sum() > 100


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(r if isinstance(r, bytes) else
                              json.dumps(r).encode() + b"\n" for r in records))
    return path


def event(event_id: str, hours: int, label: int | None = None, **fields: Any
          ) -> dict[str, Any]:
    return {"event_id": event_id, "event_time": T0 + hours * HOUR, "card_id": "tok-1",
            "merchant_id": "m", "amount": 10.0 + hours, "currency": "EUR",
            "customer_id": "c1", "terminal_id": "t1", "label": label, **fields}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    history = write_lines(tmp_path / "history.jsonl", [
        event("late-in-file", 200), event("a", 1, label=0), b"not json\n",
        event("b", 30), event("c", 50, amount=-5), event("d", 400), b"\n",
        event("e", 9 * 24, terminal_id=None),
    ])
    labels = write_lines(tmp_path / "labels.jsonl", [
        {"event_id": "a", "label": 1, "label_time": T0 + 2 * HOUR},
        {"event_id": "b", "label": 1, "label_time": T0 + 40 * HOUR},
        {"event_id": "b", "label": 0, "label_time": T0 + 45 * HOUR},
        {"event_id": "d", "label": 2, "label_time": T0},
        {"event_id": "e", "label": 1, "label_time": "2023-12-30T00:00:00+00:00"},
        {"event_id": "late-in-file", "label": 1, "label_time": T0 + 201 * HOUR},
        {"event_id": "late-in-file", "label": 0, "label_time": T0 + 200 * HOUR},
    ])
    return history, labels


def test_the_output_has_the_events_in_input_order_their_keys_label_and_features(
        files: tuple[Path, Path], tmp_path: Path) -> None:
    report = bf.backfill(files[0], tmp_path / "out.parquet", SETTINGS, files[1])
    table = pq.read_table(report.out)
    assert table.column_names == ["event_id", "event_time", "card_id", "merchant_id",
                                  "customer_id", "terminal_id", "label", "amount", *NAMES]
    rows = table.to_pylist()
    assert [r["event_id"] for r in rows] == ["late-in-file", "a", "b", "d", "e"]
    # the event's own label; else the latest label (fraud on a tie); else none
    assert [r["label"] for r in rows] == [1, 0, 0, None, 1]
    assert rows[3]["event_time"] == T0 + 400 * HOUR and rows[4]["terminal_id"] is None
    assert table.schema.field("customer.count_30d").type == pa.float32()
    late = rows[0]  # arrives at its own time, after a and b: they are in its windows
    assert late["customer.count_30d"] == 3 and late["customer.count_1d"] == 1
    assert late["terminal.count_7d"] == 2 and late["terminal.rate_label_7d"] == 0.5
    assert np.isnan(rows[4]["terminal.count_1d"]) and rows[4]["customer.count_30d"] == 4
    assert rows[4]["event.weekday"] == 3.0  # 2023-11-23, a Thursday


def test_bad_events_and_labels_go_to_the_dead_letters_beside_the_output(
        files: tuple[Path, Path], tmp_path: Path) -> None:
    report = bf.backfill(files[0], tmp_path / "out.parquet", SETTINGS, files[1])
    assert report.dead_letters == tmp_path / "out.dead-letters.jsonl"
    dead = [json.loads(line) for line in report.dead_letters.read_text().splitlines()]
    assert [(d["input"], d["file"], d["position"], d["reason"]) for d in dead] == [
        ("events", "history.jsonl", 3, "undecodable"), ("events", "history.jsonl", 5, "schema"),
        ("events", "history.jsonl", 7, "undecodable"), ("labels", "labels.jsonl", 4, "schema")]
    assert "amount" in dead[1]["error"] and dead[0]["value"] == "not json"
    assert (report.events_read, report.events, report.labels_read, report.labels) == (8, 5, 7, 6)
    assert dict(report.refused["events"]) == {"undecodable": 2, "schema": 1}
    text = "\n".join(report.lines())
    assert "dead-lettered 3 (schema 1, undecodable 2)" in text
    assert "dead-lettered 1 (schema 1)" in text


def test_running_it_twice_gives_the_same_bytes_and_parquet_history_the_same_rows(
        files: tuple[Path, Path], tmp_path: Path) -> None:
    first = bf.backfill(files[0], tmp_path / "one.parquet", SETTINGS, files[1])
    second = bf.backfill(files[0], tmp_path / "two.parquet", SETTINGS, files[1])
    assert first.out.read_bytes() == second.out.read_bytes() and first.sha256 == second.sha256
    good = [json.loads(line) for line in files[0].read_text().splitlines()
            if line.startswith("{") and '"amount": -5' not in line]
    frame = {k: [g.get(k) for g in good] for k in good[0]}
    pq.write_table(pa.table(frame), tmp_path / "history.parquet")
    parquet = bf.backfill(tmp_path / "history.parquet", tmp_path / "three.parquet", SETTINGS,
                          files[1])
    assert parquet.out.read_bytes() == first.out.read_bytes()


def test_without_labels_no_fraud_is_known(files: tuple[Path, Path], tmp_path: Path) -> None:
    report = bf.backfill(files[0], tmp_path / "out.parquet", SETTINGS)
    table = pq.read_table(report.out)
    for days in (1, 7, 30):
        rates = table.column(f"terminal.rate_label_{days}d").to_numpy()
        assert (rates[~np.isnan(rates)] == 0).all() and np.isnan(rates).sum() == 1
    assert table.column("label").to_pylist() == [None, 0, None, None, None]
    assert "no labels file: no fraud is known" in "\n".join(report.lines())


def test_a_missing_input_is_one_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.parquet")
    assert main(["features", "backfill", str(tmp_path / "nope.jsonl"), "--out", out]) == 2
    assert "file not found" in capsys.readouterr().err
    history = write_lines(tmp_path / "h.jsonl", [event("a", 1)])
    assert main(["features", "backfill", str(history), "--labels", str(tmp_path / "no"),
                 "--out", out]) == 2
    assert "file not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.jsonl"]


def config(tmp_path: Path) -> Path:
    path = tmp_path / "windows.toml"
    path.write_text("""
[windows.terminal]
key = "terminal_id"
lengths = ["7d", "1d"]
delay = "7d"
aggregates = ["count", "rate:label"]

[windows.customer]
key = "customer_id"
lengths = ["1h"]
aggregates = ["max:amount"]

[features.card]
key = "card:{card_id}"
fields = ["avg_amount_30d", "risk"]
""")
    return path


def test_features_list_prints_every_name_in_order_and_each_groups_state_prefix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "list", "--config", str(config(tmp_path))]) == 0
    names, _, state = capsys.readouterr().out.partition("\n\n")
    assert names.splitlines() == [
        "customer.max_amount_1h", "terminal.count_1d", "terminal.rate_label_1d",
        "terminal.count_7d", "terminal.rate_label_7d", "event.hour", "event.weekday",
        "event.is_weekend", "event.is_night", "card.avg_amount_30d", "card.risk"]
    settings = Settings(**tomllib.loads(config(tmp_path).read_text()))
    prefixes = {w.name: w.prefix for w in bf.definition_of(settings).windows}
    assert [line.split() for line in state.splitlines()[1:]] == [
        ["customer", prefixes["customer"]], ["terminal", prefixes["terminal"]]]
    assert prefixes["terminal"].startswith("win3:terminal:")


def test_features_list_without_windows_has_the_calendar_and_no_state(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:4] == ["event.hour", "event.weekday", "event.is_weekend",
                                    "event.is_night"]
    assert "none: no [windows.*] groups configured" in out


def test_features_backfill_from_the_command_line(files: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.parquet"
    assert main(["features", "backfill", str(files[0]), "--labels", str(files[1]),
                 "--out", str(out), "--config", str(config(tmp_path))]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("backfilled 5 events with 6 labels")
    assert f"results {out}  sha256 " in printed
    assert pq.read_table(out).column_names[8:] == [
        "customer.max_amount_1h", "terminal.count_1d", "terminal.rate_label_1d",
        "terminal.count_7d", "terminal.rate_label_7d", "event.hour", "event.weekday",
        "event.is_weekend", "event.is_night"]


def test_the_documented_window_settings_are_the_issues_and_valid() -> None:
    """The README's example and the commented one in deploy/stream-infer.toml."""
    readme = (ROOT / "README.md").read_text().split("#### Window features")[1]
    example = readme.split("```toml\n")[1].split("```")[0]
    deploy = (ROOT / "deploy" / "stream-infer.toml").read_text().split("# [windows.customer]")[1]
    uncommented = "[windows.customer]\n" + "\n".join(
        line.removeprefix("#").removeprefix(" ") for line in deploy.splitlines())
    for text in (example, uncommented):
        settings = Settings(**tomllib.loads(text))
        assert list(bf.definition_of(settings).names) == NAMES


def test_handbook_data_with_week_late_labels_backfills_to_the_handbooks_own_features(
        tmp_path: Path) -> None:
    """The Handbook's baseline feature transformation (pandas rolling windows over all the
    labels) on its simulated data equals the backfill of that data whose labels arrive a week
    late: a 7-day delay is exactly what the Handbook assumes is known."""
    events, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    assert main(["simulate", "--population", "handbook", "--customers", "120",
                 "--terminals", "150", "--days", "50", "--jsonl-out", str(events),
                 "--labels-out", str(labels), "--label-delay", "7d"]) == 0
    report = bf.backfill(events, tmp_path / "out.parquet", SETTINGS, labels)
    ours = pq.read_table(report.out).to_pandas()
    frame = pd.DataFrame({
        "TRANSACTION_ID": ours["event_id"], "TX_TIME_MS": ours["event_time"],
        "TX_DATETIME": pd.to_datetime(ours["event_time"], unit="ms"),
        "CUSTOMER_ID": ours["customer_id"], "TERMINAL_ID": ours["terminal_id"],
        "TX_AMOUNT": ours["amount"], "TX_FRAUD": ours["label"],
    }).sort_values(["TX_DATETIME", "TRANSACTION_ID"], ignore_index=True)
    handbook = by_entity(frame, "CUSTOMER_ID", customer_spending).join(
        by_entity(frame, "TERMINAL_ID", terminal_risk).filter(like="terminal."))
    ours = ours.set_index("event_id")
    assert frame["TX_FRAUD"].sum() > 100 and (handbook["terminal.rate_label_7d"] > 0).any()
    for name in (n for n in NAMES if not n.startswith("event.")):
        want = handbook.loc[ours.index, name].to_numpy()
        if "mean" in name:
            np.testing.assert_allclose(ours[name], want, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(ours[name], want.astype(np.float32), err_msg=name)
