import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.errors import ConfigError
from stream_infer.offline import simulate
from stream_infer.offline.backtest import average_precision, roc_auc
from stream_infer.offline.tables import read_table
from stream_infer.offline.training import (
    TimeSplit,
    best_f1_threshold,
    known_compromised,
    parse_param,
    read_params_file,
    train,
)
from stream_infer.registry import read_manifest


def test_auc_by_hand_including_ties() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2]) == 1.0


def test_average_precision_by_hand_including_ties() -> None:
    # ranked: 1 (p=1), 0, 1 (p=2/3) -> AP = 0.5*1 + 0.5*2/3
    assert average_precision([1, 0, 1], [0.9, 0.5, 0.3]) == pytest.approx(0.5 + 1 / 3)
    # a tie at the top counts as one threshold: precision 1/2 for the first recall step
    assert average_precision([1, 0], [0.5, 0.5]) == 0.5


def test_best_f1_threshold() -> None:
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    assert best_f1_threshold(labels, scores) == 0.6


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pop = simulate.make_population(cards=500, merchants=60, seed=3)
    path = tmp_path_factory.mktemp("train") / "train.csv"
    events = simulate.transactions(pop, count=15_000, seed=4)
    simulate.write_training_csv(path, simulate.training_rows(pop, events))
    return path


def test_train_writes_a_verified_model_that_ranks_fresh_data(data: Path, tmp_path: Path) -> None:
    report = train(data, models_dir=tmp_path, name="fraud", n_estimators=40, max_depth=4)
    assert report.model_dir == tmp_path / "fraud" / "1"
    assert report.auc > 0.9 and 0 < report.threshold < 1
    model = XGBoostModel.load(report.model_dir)
    assert list(model.features) == simulate.DEMO_FEATURES
    second = train(data, models_dir=tmp_path, name="fraud", n_estimators=40, max_depth=4)
    assert second.model_dir.name == "2"
    first_bytes = (report.model_dir / "model.json").read_bytes()
    assert first_bytes == (second.model_dir / "model.json").read_bytes(), "not reproducible"


def test_train_reads_parquet_too(data: Path, tmp_path: Path) -> None:
    import pyarrow.csv
    import pyarrow.parquet

    parquet = tmp_path / "train.parquet"
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(data), parquet)
    report = train(parquet, models_dir=tmp_path, name="pq", n_estimators=10,
                   features=["amount", "attributes.distance_km"])
    assert report.features == ["amount", "attributes.distance_km"]


def write(tmp_path: Path, rows: list[list[object]]) -> Path:
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.mark.parametrize(("rows", "message"), [
    ([["a", "b"], [1, 2]], "no label column"),
    ([["a", "label"], [1, 0], [2, 0]], "need both classes"),
    ([["a", "label"], ["x", 0], [2, 1]], "'a' is not numeric"),
    ([["a", "label"], [1, 3], [2, 1]], "labels must be 0 or 1"),
])
def test_bad_training_data_is_a_clear_error(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(write(tmp_path, rows), models_dir=tmp_path, name="x")


def test_unknown_feature_columns_are_named(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"card\.nope"):
        train(data, models_dir=tmp_path, name="x", features=["amount", "card.nope"])


DAY = 86_400_000
HOUR = 3_600_000


def features_and_labels(data: Path, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    table = read_table(data)
    x = np.column_stack([[np.nan if v is None else float(v) for v in table[f]]
                         for f in features]).astype(np.float32)
    return x, np.array([float(v) for v in table["label"]])


def test_the_random_split_fits_the_threshold_on_its_validation_rows(data: Path,
                                                                     tmp_path: Path) -> None:
    report = train(data, models_dir=tmp_path, name="r", n_estimators=30, max_depth=4)
    x, y = features_and_labels(data, report.features)
    u = np.random.default_rng(7).random(len(y))
    test, valid = u < 0.2, (u >= 0.2) & (u < 0.4)  # the test rows are the old hold-out's
    assert (report.train.rows, report.valid.rows, report.test.rows) == (
        int((u >= 0.4).sum()), int(valid.sum()), int(test.sum()))
    assert (report.valid.positives, report.test.positives) == (int(y[valid].sum()),
                                                               int(y[test].sum()))
    scores = XGBoostModel.load(report.model_dir).predict(x).astype(np.float64)
    assert report.threshold == best_f1_threshold(y[valid], scores[valid])
    assert report.auc == roc_auc(y[test], scores[test])
    training = read_manifest(report.model_dir).training
    assert training["threshold"] == {"value": report.threshold,
                                     "source": "best F1 on the validation rows"}
    assert (training["train_rows"], training["valid_rows"], training["test_rows"]) == (
        report.train.rows, report.valid.rows, report.test.rows)


def shifted_labels(tmp_path: Path) -> Path:
    """Days 0 and 1 (train, validation): fraud when x > 7; day 2 (test): fraud when x > 4.

    A model of x > 7 scores x in (4, 7] like the clean rows, so on the test rows the best F1
    alerts on everything (precision .6, recall 1) and on the validation rows only x > 7.
    """
    rows: list[list[object]] = [["event_time", "x", "label"]]
    for day in range(3):
        for i in range(600):
            x = (i * 7919 % 1000) / 100
            rows.append([day * DAY + i * 100_000, x, int(x > (4 if day == 2 else 7))])
    return write(tmp_path, rows)


def test_the_threshold_comes_from_the_validation_window_never_the_test_window(
        tmp_path: Path) -> None:
    data = shifted_labels(tmp_path)
    split = TimeSplit(train_until_ms=DAY, valid_until_ms=2 * DAY)
    report = train(data, models_dir=tmp_path, name="t", split=split, n_estimators=10,
                   max_depth=2)
    assert (report.train.rows, report.valid.rows, report.test.rows) == (600, 600, 600)
    x, y = features_and_labels(data, ["x"])
    scores = XGBoostModel.load(report.model_dir).predict(x).astype(np.float64)
    valid, test = slice(600, 1200), slice(1200, 1800)
    on_valid = best_f1_threshold(y[valid], scores[valid])
    on_test = best_f1_threshold(y[test], scores[test])
    assert report.threshold == on_valid and on_valid > on_test
    assert "validation [1970-01-02T00:00:00+00:00, 1970-01-03T00:00:00+00:00)" in report.split
    assert read_manifest(report.model_dir).training["threshold"]["source"] == (
        "best F1 on the validation rows")


def test_a_time_split_without_a_window_validates_on_the_latest_training_rows(
        tmp_path: Path) -> None:
    data = shifted_labels(tmp_path)
    report = train(data, models_dir=tmp_path, name="t", split=TimeSplit(train_until_ms=2 * DAY),
                   n_estimators=5, max_depth=2)
    assert (report.train.rows, report.valid.rows, report.test.rows) == (960, 240, 600)
    assert "the training window's latest 20%, from 1970-01-02T10:00:00+00:00" in report.split


def test_a_fixed_threshold_trains_on_every_row_outside_the_test(data: Path,
                                                                tmp_path: Path) -> None:
    report = train(data, models_dir=tmp_path, name="f", n_estimators=5, threshold=0.4)
    assert report.valid.rows == 0 and report.train.rows + report.test.rows == 15_000
    assert report.threshold == 0.4 and report.threshold_source == "given (--threshold)"
    assert read_manifest(report.model_dir).training["threshold"] == {
        "value": 0.4, "source": "given (--threshold)"}
    assert "threshold   0.4000: given (--threshold)" in report.summary()


def test_the_summary_prints_each_part_of_the_split(data: Path, tmp_path: Path) -> None:
    report = train(data, models_dir=tmp_path, name="s", n_estimators=5)
    lines = report.summary().splitlines()
    for label, part in (("train", report.train), ("validation", report.valid),
                        ("test", report.test)):
        line = next(line for line in lines if line.startswith(f"  {label} "))
        assert f"{part.rows:,} rows, {part.positives:,} positives" in line
    assert report.train.rows + report.valid.rows + report.test.rows == 15_000


def compromised_table(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    """Train days 1-2 (day 0 is before --train-from), gap day 3, test days 4-6.

    Every card has a clean row at 08:00 on each test day; frauds as listed. Returns the table
    and, per card, the test days on which it must be left out.
    """
    frauds = {"a": [1 * DAY + 5 * HOUR],          # training fraud: out on days 4, 5, 6
              "b": [3 * DAY + 10 * HOUR],         # gap fraud, known day 4 10:00: out on 5, 6
              "c": [4 * DAY + 12 * HOUR],         # test fraud, known day 5 12:00: out on 6
              "d": [0 * DAY + 9 * HOUR],          # before --train-from: never counts
              "e": [],
              "f": [2 * DAY + 23 * HOUR],         # known day 3 23:00: out on 4, 5, 6
              "g": [3 * DAY - 1],                 # known a millisecond before day 4
              "h": [3 * DAY]}                     # known exactly as day 4 begins: out on 5, 6
    left_out = {"a": [4, 5, 6], "b": [5, 6], "c": [6], "d": [], "e": [], "f": [4, 5, 6],
                "g": [4, 5, 6], "h": [5, 6]}
    rows: list[list[object]] = [["event_time", "card_id", "x", "label"]]
    for card, times in frauds.items():
        rows += [[t, card, 9.0, 1] for t in times]
        rows += [[day * DAY + 8 * HOUR, card, 1.0, 0] for day in (4, 5, 6)]
    rows += [[DAY + i * 60_000, f"clean-{i}", i % 5, 0] for i in range(200)]
    rows += [[DAY + i * 60_000 + 1, f"fraud-{i}", 8 + i % 2, 1] for i in range(20)]
    return write(tmp_path, rows), left_out


def test_known_compromised_cards_leave_the_test_days_after_their_fraud_is_known(
        tmp_path: Path) -> None:
    data, left_out = compromised_table(tmp_path)
    table = read_table(data)
    times = np.array([int(v) for v in table["event_time"]])
    cards = np.array(table["card_id"], dtype=object)
    labels = np.array([float(v) for v in table["label"]])
    test = times >= 4 * DAY
    dropped = known_compromised(times, cards, labels, test, gap_ms=DAY, since_ms=DAY)
    assert sorted((c, int(t // DAY)) for c, t in zip(cards[dropped], times[dropped],
                                                     strict=True)) == sorted(
        (card, day) for card, days in left_out.items() for day in days)

    split = TimeSplit(train_from_ms=DAY, train_until_ms=3 * DAY, gap_ms=DAY)
    report = train(data, models_dir=tmp_path, name="k", split=split, threshold=0.5,
                   n_estimators=3, drop_known_compromised=True)
    expected = sum(map(len, left_out.values()))
    assert report.dropped == (expected, 6)
    assert report.test.rows == int(test.sum()) - expected == 8 * 3 + 1 - expected
    training = read_manifest(report.model_dir).training
    assert training["dropped_known_compromised"] == {"rows": expected, "cards": 6}
    assert training["test_rows"] == report.test.rows
    assert f"left out {expected} rows of 6 cards" in report.summary()
    kept = train(data, models_dir=tmp_path, name="k", split=split, threshold=0.5,
                 n_estimators=3)
    assert kept.test.rows == int(test.sum()) and kept.dropped is None


def tree_depths(model_dir: Path) -> set[int]:
    model = json.loads((model_dir / "model.json").read_text())
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    return {int(tree["tree_param"]["num_nodes"]) for tree in trees}


def base_score(model_dir: Path) -> float:
    model = json.loads((model_dir / "model.json").read_text())
    return float(model["learner"]["learner_model_param"]["base_score"].strip("[]"))


def test_xgboost_parameters_reach_xgboost(data: Path, tmp_path: Path) -> None:
    default = train(data, models_dir=tmp_path, name="p", n_estimators=5, threshold=0.5)
    params = {"max_depth": 1, "base_score": 0.5, "tree_method": "exact", "learning_rate": 0.3}
    given = train(data, models_dir=tmp_path, name="p", n_estimators=5, threshold=0.5,
                  params=params, nthread=1)
    recorded = read_manifest(given.model_dir).training["params"]
    assert recorded == {"objective": "binary:logistic", "tree_method": "exact",
                        "eval_metric": "aucpr", "max_depth": 1, "eta": 0.3, "seed": 7,
                        "nthread": 1, "base_score": 0.5, "n_estimators": 5}
    assert tree_depths(given.model_dir) == {3} and max(tree_depths(default.model_dir)) > 3
    assert base_score(given.model_dir) == 0.5 and base_score(default.model_dir) < 0.1


def test_early_stopping_keeps_the_best_iteration_s_trees(data: Path, tmp_path: Path) -> None:
    report = train(data, models_dir=tmp_path, name="e", n_estimators=300, learning_rate=0.5,
                   early_stopping_rounds=5)
    assert report.best_iteration is not None and report.best_iteration < 299
    assert report.trees == report.best_iteration + 1
    model = json.loads((report.model_dir / "model.json").read_text())
    assert int(model["learner"]["gradient_booster"]["model"]["gbtree_model_param"][
        "num_trees"]) == report.trees
    training = read_manifest(report.model_dir).training
    assert (training["best_iteration"], training["trees"], training["early_stopping_rounds"]
            ) == (report.best_iteration, report.trees, 5)
    assert f"early stopping: the best iteration was {report.best_iteration}" in report.summary()


def test_parameters_parse_as_int_float_or_text(tmp_path: Path) -> None:
    assert [parse_param(p) for p in ("max_depth=3", "eta=0.3", "tree_method=exact",
                                     "min_child_weight=1e-3")] == [
        ("max_depth", 3), ("eta", 0.3), ("tree_method", "exact"), ("min_child_weight", 1e-3)]
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_param("exact")
    toml = tmp_path / "params.toml"
    toml.write_text('tree_method = "exact"\nbase_score = 0.5\nmax_depth = 4\n')
    jsn = tmp_path / "params.json"
    jsn.write_text('{"tree_method": "exact", "base_score": 0.5, "max_depth": 4}')
    assert read_params_file(toml) == read_params_file(jsn) == {
        "tree_method": "exact", "base_score": 0.5, "max_depth": 4}
    nested = tmp_path / "nested.toml"
    nested.write_text("[training]\neta = 0.1\n")
    with pytest.raises(ConfigError, match="training: a parameter is a number or a string"):
        read_params_file(nested)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"params": {"n_estimators": 10}}, "the number of trees is --trees"),
    ({"params": {"objective": "binary:logitraw"}}, "alerts on a fraud probability"),
    ({"threshold": 1.5}, "between 0 and 1"),
    ({"drop_known_compromised": True}, "needs a time split"),
    ({"split": TimeSplit(train_until_ms=DAY, valid_until_ms=2 * DAY), "valid_fraction": 0.1},
     "give one"),
    ({"split": TimeSplit(train_until_ms=DAY, gap_ms=DAY, valid_until_ms=2 * DAY)},
     "--valid-until must be after"),
    ({"valid_fraction": 0.0}, "no fraud among the 0 validation rows"),
    ({"valid_fraction": 0.0, "threshold": 0.5, "early_stopping_rounds": 3}, "to stop early"),
])
def test_training_options_that_cannot_work_are_clear_errors(
        tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(shifted_labels(tmp_path), models_dir=tmp_path, name="x", n_estimators=2,
              **kwargs)
    assert not (tmp_path / "x").exists()
