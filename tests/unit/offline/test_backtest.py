"""Backtest metrics by hand, and the train -> replay -> report loop over labelled history."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost
from sklearn import metrics

from stream_infer.cli import main
from stream_infer.drift import SCORE, Profile, psi
from stream_infer.offline import simulate
from stream_infer.offline.backtest import (
    DAY_MS,
    as_json,
    average_precision,
    card_precision_at_k,
    card_precision_by_day,
    curves,
    evaluate,
    point_in_time_warnings,
    roc_auc,
    table,
)
from stream_infer.offline.tables import read_table
from stream_infer.offline.training import TimeSplit, parse_duration_ms
from stream_infer.records import parse_time_ms
from stream_infer.registry import read_manifest
from tests.support.configs import write_config
from tests.support.population import HASH_VIEWS


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


def test_card_precision_plain_and_excluding_known_compromised_by_hand() -> None:
    """A table where the two definitions differ (k = 2; F fraud that day, L legitimate).

    day  cards by highest score           plain top 2    excluding known: left out, top 2
    0    a .9 F, d .85 F, b .8 L, c .7 F  a d -> 2/2     d (known before), a b -> 1/2
    1    a .95 F, c .6 F, b .5 L, e .4 F  a c -> 2/2     a (detected day 0), c b -> 1/2
    2    b .99 L, d .95 F, c .9 F, e .8 F b d -> 1/2     d (known), c (detected day 1),
                                                         b e -> 1/2
    plain: (1 + 1 + 1/2) / 3 = 5/6; excluding known compromised: 1/2.
    With nothing known before: day 0 a d -> 1 (both detected), day 1 c b -> 1/2, day 2 (d, c
    out) b e -> 1/2: 2/3. With d known only from day 1: day 0 as with nothing known.
    With e known from day 2 as well: day 2 keeps only b, and k stays the denominator: 0/2.
    """
    rows = [(0, "a", .9, 1), (0, "d", .85, 1), (0, "b", .8, 0), (0, "c", .7, 1),
            (0, "a", .3, 0),  # a card's highest score that day ranks it
            (1, "a", .95, 1), (1, "c", .6, 1), (1, "b", .5, 0), (1, "e", .4, 1),
            (2, "b", .99, 0), (2, "d", .95, 1), (2, "c", .9, 1), (2, "e", .8, 1)]
    first = 1_767_312_000_000 // DAY_MS  # 2026-01-02
    days = np.array([first + d for d, *_ in rows])
    cards = np.array([c for _, c, *_ in rows])
    scores = np.array([s for *_, s, _ in rows])
    labels = np.array([y for *_, y in rows])

    per_day = card_precision_by_day(scores, labels, cards, days, 2, known_compromised={"d"})
    assert [(d.day, d.plain, d.excluding_known) for d in per_day] == [
        ("2026-01-02", 1.0, 0.5), ("2026-01-03", 1.0, 0.5), ("2026-01-04", 0.5, 0.5)]
    assert [(d.cards, d.fraud_cards, d.known_cards) for d in per_day] == [
        (4, 3, 1), (4, 3, 1), (4, 3, 2)]
    assert card_precision_at_k(scores, labels, cards, days, 2) == 2.5 / 3
    assert card_precision_at_k(scores, labels, cards, days, 2, excluding_known=True,
                               known_compromised={"d"}) == 0.5
    assert card_precision_at_k(scores, labels, cards, days, 2, excluding_known=True) == 2 / 3
    known_from_day_1 = {"d": (first + 1) * DAY_MS}
    assert [d.excluding_known for d in card_precision_by_day(
        scores, labels, cards, days, 2, known_compromised=known_from_day_1)] == [1.0, .5, .5]
    assert [d.excluding_known for d in card_precision_by_day(
        scores, labels, cards, days, 2, known_compromised={**known_from_day_1,
                                                           "e": (first + 2) * DAY_MS})] == [
        1.0, 0.5, 0.0]

    report = evaluate("m:1", 0.5, scores, labels, cards, days * DAY_MS + 5, k=2,
                      known_compromised={"d"})
    assert report.card_precision_at_k == 2.5 / 3
    assert report.card_precision_at_k_excluding_known == 0.5
    assert report.card_precision_days == tuple(per_day)
    text = table([report])
    assert "card precision@2/day" in text and "excl. known compromised" in text
    assert "2026-01-04" in text and "0.5000 / 0.5000" in text
    days_json = as_json([report], {})["models"][0]["card_precision_days"]
    assert days_json[0] == {"day": "2026-01-02", "cards": 4, "fraud_cards": 3,
                            "known_cards": 1, "plain": 1.0, "excluding_known": 0.5}


def handbook_card_precision(rows: list[tuple[int, str, float, int]], k: int,
                            remove_detected: bool) -> list[float]:
    """The Handbook's ``card_precision_top_k`` loop, written out over plain tuples."""
    detected: set[str] = set()
    out = []
    for day in sorted({d for d, *_ in rows}):
        best: dict[str, tuple[float, int]] = {}
        for _, card, score, label in (r for r in rows if r[0] == day and r[1] not in detected):
            top, fraud = best.get(card, (-1.0, 0))
            best[card] = (max(top, score), max(fraud, label))
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
        found = [card for card, (_, fraud) in ranked if fraud]
        out.append(len(found) / k)
        if remove_detected:
            detected.update(found)
    return out


def test_card_precision_matches_the_handbooks_loop_on_random_days() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    rows = [(int(d), f"c{c:03d}", float(s), int(y)) for d, c, s, y in zip(
        rng.integers(0, 6, n), rng.integers(0, 300, n), rng.random(n).round(2),
        rng.random(n) < 0.05, strict=True)]
    columns = [np.array(col) for col in zip(*rows, strict=True)]
    per_day = card_precision_by_day(columns[2], columns[3], columns[1], columns[0], 25)
    assert [d.plain for d in per_day] == handbook_card_precision(rows, 25, False)
    assert [d.excluding_known for d in per_day] == handbook_card_precision(rows, 25, True)
    assert [d.plain for d in per_day] != [d.excluding_known for d in per_day]


def test_curves_equal_scikit_learns_on_imbalanced_data_with_ties() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    y = (rng.random(n) < 0.005).astype(int)
    s = np.clip(rng.normal(0.15 + 0.5 * y, 0.2), 0, 1).round(2)  # ~100 distinct: many ties
    labels = np.where(rng.random(n) < 0.02, -1, y)  # unlabelled rows are left out
    known = labels >= 0
    yk, sk = y[known], s[known]
    assert 10 < yk.sum() < 60

    c = curves(s, labels)
    precision, recall, thresholds = metrics.precision_recall_curve(yk, sk)
    mine_p, mine_r = c.precision_recall()
    np.testing.assert_array_equal(mine_p, precision)
    np.testing.assert_array_equal(mine_r, recall)
    np.testing.assert_array_equal(c.thresholds[::-1], thresholds)
    assert len(mine_r) == len(np.unique(sk)) + 1
    fpr, tpr, _ = metrics.roc_curve(yk, sk, drop_intermediate=False)
    mine_fpr, mine_tpr = c.roc()
    np.testing.assert_array_equal(mine_fpr, fpr)
    np.testing.assert_array_equal(mine_tpr, tpr)
    assert roc_auc(yk, sk) == pytest.approx(metrics.roc_auc_score(yk, sk), rel=1e-12)
    assert average_precision(yk, sk) == pytest.approx(
        metrics.average_precision_score(yk, sk), rel=1e-12)

    report = evaluate("m:1", 0.5, s, labels, np.array(["c"] * n), np.zeros(n, dtype=int))
    point = c.at(0.5)
    assert point is not None
    assert (point.precision, point.recall) == (report.precision, report.recall)
    assert point.false_positive_rate == ((sk >= 0.5) & (yk == 0)).sum() / (yk == 0).sum()
    assert c.at(1.5) is None


def test_warnings_reach_the_table_and_the_json() -> None:
    report = evaluate("m:1", 0.5, np.array([0.9, 0.1]), np.array([1, 0]), np.array(["a", "b"]),
                      np.array([0, 1]), k=1)
    redis = point_in_time_warnings("redis")
    assert len(redis) == 1 and "not point-in-time" in redis[0]
    assert "one snapshot" in point_in_time_warnings("snapshot")[0]
    assert point_in_time_warnings("event") == point_in_time_warnings("scores") == []
    assert table([report], warnings=redis).splitlines()[-1] == f"WARNING: {redis[0]}"
    assert "WARNING" not in table([report])
    assert as_json([report], {"input": "x", "warnings": ["from context"]}, warnings=redis)[
        "warnings"] == ["from context", redis[0]]
    assert as_json([report], {})["warnings"] == []


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
    assert report.card_precision_at_k_excluding_known == 0.5  # a is out of day 1: d again
    assert "0.7500" in table([report]) and "m:1" in table([report])


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
    write_config(root / "replay.toml", {"model": {"dir": str(root / "models"), "name": "fraud"},
                                        "features": HASH_VIEWS})
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
    for model in report["models"]:
        days = model["card_precision_days"]
        assert [d["day"] for d in days] == ["2026-01-03", "2026-01-04"]
        assert model["card_precision_at_k"] == np.mean([d["plain"] for d in days])
        assert model["card_precision_at_k_excluding_known"] == np.mean(
            [d["excluding_known"] for d in days])
    page = (history / "report.html").read_text()
    assert page.count("<svg") == 6 and "fraud:1" in page and "fraud:2" in page  # 2 PSI


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


def test_the_replay_report_shows_psi_against_training(
        history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report's PSI against each model's training profile equals PSI computed from the
    results file (the rows it scored)."""
    report = run_replay(history, "drift.parquet", "--report", str(history / "drift.html"))
    assert "PSI against training" in capsys.readouterr().out
    results = pq.read_table(history / "drift.parquet").to_pydict()
    for n in (1, 2):
        model = f"fraud:{n}"
        found = {d["feature"]: d for d in report["drift"][model]}
        assert list(found) == [*simulate.DEMO_FEATURES, SCORE]
        profile = Profile.from_json(read_manifest(history / "models" / "fraud" / str(n)).profile)
        for name, bins in profile.features.items():
            assert found[name]["psi"] == psi(bins.counts(results[f"feature:{name}"]),
                                             bins.shares), name
        assert profile.score is not None
        assert found[SCORE]["psi"] == psi(profile.score.counts(results[f"score:{model}"]),
                                          profile.score.shares)
    assert "PSI against training: fraud:1" in (history / "drift.html").read_text()
