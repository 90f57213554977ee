"""Backtest metrics by hand, and the train -> replay -> report loop over labelled history."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost

from stream_infer.cli import main
from stream_infer.offline import simulate
from stream_infer.offline.backtest import (
    DAY_MS,
    average_precision,
    card_precision_at_k,
    evaluate,
    pr_curve,
    roc_auc,
    table,
)
from stream_infer.offline.tables import read_table
from stream_infer.offline.training import TimeSplit, parse_duration_ms, parse_time_ms


def test_card_precision_at_k_by_hand() -> None:
    # day 0: cards a (max .9, fraud that day), b (.8, clean), c (.1, fraud)
    #   top-2 = a, b -> 1/2; top-1 = a -> 1
    # day 1: cards a (.2, clean), d (.7, fraud): top-2 = d, a -> 1/2; top-1 = d -> 1
    cards = np.array(["a", "a", "b", "c", "a", "d"])
    scores = np.array([0.9, 0.3, 0.8, 0.1, 0.2, 0.7])
    labels = np.array([0, 1, 0, 1, 0, 1])
    days = np.array([0, 0, 0, 0, 1, 1])
    assert card_precision_at_k(scores, labels, cards, days, 2) == 0.5
    assert card_precision_at_k(scores, labels, cards, days, 1) == 1.0
    assert card_precision_at_k(scores, labels, cards, days, 4) == (2 / 4 + 1 / 4) / 2
    # ties in score go to the smaller card id
    assert card_precision_at_k(np.array([0.5, 0.5]), np.array([0, 1]), np.array(["b", "a"]),
                               np.array([0, 0]), 1) == 1.0


def test_evaluate_by_hand_ignores_unlabelled_rows_for_labelled_metrics() -> None:
    scores = np.array([0.9, 0.6, 0.4, 0.2, 0.95])
    labels = np.array([1, 0, 1, 0, -1])
    report = evaluate("m:1", 0.5, scores, labels, np.array(["a", "b", "c", "d", "e"]),
                      np.array([0, 1, 2, DAY_MS, 5]), k=1)
    assert (report.rows, report.labelled, report.positives) == (5, 4, 2)
    assert report.alerts == 3 and report.alert_rate == 0.6  # the unlabelled row alerts too
    assert report.precision == 0.5 and report.recall == 0.5  # flagged .9 (fraud), .6 (clean)
    assert report.auc == roc_auc([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.2]) == 0.75
    assert report.average_precision == average_precision([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.2])
    assert report.days == 2 and report.card_precision_at_k == 0.5  # day 0: a; day 1: d
    assert "0.7500" in table([report]) and "m:1" in table([report])


def test_pr_curve_ends_at_full_recall() -> None:
    curve = pr_curve(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1]), points=3)
    assert curve == [(0.5, 1.0), (0.5, 0.5), (1.0, 2 / 3)]


def test_time_split_masks_and_parsing() -> None:
    split = TimeSplit(train_until_ms=100, gap_ms=10, test_until_ms=200, train_from_ms=20)
    t = np.array([10, 20, 99, 100, 109, 110, 199, 200])
    train, test = split.masks(t)
    assert t[train].tolist() == [20, 99] and t[test].tolist() == [110, 199]
    assert parse_time_ms("2026-01-02") == parse_time_ms("2026-01-02T00:00:00Z") == (
        1_767_312_000_000)
    assert parse_time_ms("1767312000123") == 1_767_312_000_123
    assert [parse_duration_ms(d) for d in ("1d", "6h", "15m", "90s", "250ms", "42")] == [
        86_400_000, 21_600_000, 900_000, 90_000, 250, 42]


VIEWS_TOML = """
[model]
dir = "{models}"
name = "fraud"
[features.card]
key = "card:{{card_id}}"
fields = {card}
[features.merchant]
key = "merchant:{{merchant_id}}"
fields = {merchant}
"""


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four days of labelled history, the feature snapshots, two models trained on it."""
    root = tmp_path_factory.mktemp("backtest")
    args = ["simulate", "--count", "12000", "--seed", "5", "--cards", "800",
            "--merchants", "80", "--event-rate", "0.035",
            "--jsonl-out", str(root / "history.jsonl"), "--training-out", str(root / "train.csv"),
            "--features-out", str(root / "feats")]
    assert main(args) == 0
    for depth in ("4", "2"):
        assert main(["model", "train", str(root / "train.csv"), "--models-dir",
                     str(root / "models"), "--name", "fraud", "--train-until", "2026-01-03",
                     "--gap", "12h", "--trees", "30", "--depth", depth]) == 0
    (root / "replay.toml").write_text(VIEWS_TOML.format(
        models=root / "models", card=json.dumps(list(simulate.CARD_FIELDS)),
        merchant=json.dumps(list(simulate.MERCHANT_FIELDS))))
    return root


def run_replay(root: Path, out: str, *extra: str) -> dict:  # type: ignore[type-arg]
    code = main(["replay", "--config", str(root / "replay.toml"),
                 "--input", str(root / "history.jsonl"), "--from", "2026-01-03T12:00:00Z",
                 "--model", "fraud:1", "--model", "fraud:2", "--features", "snapshot",
                 "--snapshot", f"card={root / 'feats' / 'card_features.csv'}",
                 "--snapshot", f"merchant={root / 'feats' / 'merchant_features.csv'}",
                 "--out", str(root / out), "--json", str(root / f"{out}.json"), *extra])
    assert code == 0
    return json.loads((root / f"{out}.json").read_text())  # type: ignore[no-any-return]


def test_replay_reproduces_the_offline_metrics_of_the_same_model_exactly(
        history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_replay(history, "results.parquet", "--report", str(history / "report.html"))
    out = capsys.readouterr().out

    # offline: the trained boosters on the test-period rows of the training table
    table_ = read_table(history / "train.csv")
    times = np.array([int(t) for t in table_["event_time"]])
    test = times >= parse_time_ms("2026-01-03T12:00:00Z")
    features = simulate.DEMO_FEATURES
    x = np.column_stack([[np.nan if v is None else float(v) for v in table_[f]]
                         for f in features]).astype(np.float32)[test]
    y = np.array([int(v) for v in table_["label"]])[test]
    results = pq.read_table(history / "results.parquet").to_pydict()
    assert results["event_id"] == [e for e, t in zip(table_["event_id"], test, strict=True) if t]
    for n, model in enumerate(report["models"], start=1):
        booster = xgboost.Booster(model_file=str(history / "models" / "fraud" / str(n) /
                                                 "model.json"))
        offline = booster.inplace_predict(x)
        assert np.array_equal(np.array(results[f"score:fraud:{n}"], dtype=np.float32), offline)
        assert model["auc"] == roc_auc(y, offline)
        assert model["average_precision"] == average_precision(y, offline)
        manifest = json.loads((history / "models" / "fraud" / str(n) / "manifest.json"
                               ).read_text())
        assert round(model["auc"], 6) == manifest["training"]["auc"]
        assert model["rows"] == manifest["training"]["test_rows"] == int(test.sum())
    assert report["records"] == 12_000 and report["out_of_range"] == 12_000 - int(test.sum())
    assert report["scored"] + report["dead_lettered"] + report["out_of_range"] == 12_000
    assert f"sha256 {report['sha256']}" in out and "card precision@100/day" in out
    assert "<svg" in (history / "report.html").read_text()


def test_replay_is_deterministic_byte_for_byte(history: Path) -> None:
    first = run_replay(history, "a.parquet")
    second = run_replay(history, "b.parquet")
    assert first["sha256"] == second["sha256"]
    assert (history / "a.parquet").read_bytes() == (history / "b.parquet").read_bytes()


def test_features_carried_in_the_events_give_the_same_scores(history: Path,
                                                             tmp_path: Path) -> None:
    """Events that carry their view features in attributes replay without a snapshot."""
    run_replay(history, "from_snapshot.parquet")
    snapshot = pq.read_table(history / "from_snapshot.parquet").to_pydict()
    table_ = read_table(history / "train.csv")
    with_features = tmp_path / "self_contained.jsonl"
    by_id = {e: i for i, e in enumerate(table_["event_id"])}
    with open(history / "history.jsonl") as src, open(with_features, "w") as dst:
        for line in src:
            event = json.loads(line)
            i = by_id[event["event_id"]]
            for name in simulate.DEMO_FEATURES:
                if name.startswith(("card.", "merchant.")) and table_[name][i] is not None:
                    event["attributes"][name] = float(table_[name][i])
            dst.write(json.dumps(event) + "\n")
    assert main(["replay", "--config", str(history / "replay.toml"), "--input",
                 str(with_features), "--from", "2026-01-03T12:00:00Z", "--model", "fraud:1",
                 "--model", "fraud:2", "--features", "event",
                 "--out", str(tmp_path / "event.parquet")]) == 0
    from_events = pq.read_table(tmp_path / "event.parquet").to_pydict()
    assert from_events["score:fraud:1"] == snapshot["score:fraud:1"]
    assert from_events["score:fraud:2"] == snapshot["score:fraud:2"]


def test_replay_refuses_to_write_to_a_live_topic(history: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--config", str(history / "replay.toml"), "--input",
                 str(history / "history.jsonl"), "--out", str(history / "x.parquet"),
                 "--output-topic", "fraud-alerts"])
    assert code == 2
    assert "live topic" in capsys.readouterr().err
    assert not (history / "x.parquet").exists()


def test_a_snapshot_must_cover_every_view_the_models_read(
        history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--config", str(history / "replay.toml"), "--input",
                 str(history / "history.jsonl"), "--out", str(history / "y.parquet"),
                 "--features", "snapshot",
                 "--snapshot", f"card={history / 'feats' / 'card_features.csv'}"])
    assert code == 2
    assert "merchant" in capsys.readouterr().err
