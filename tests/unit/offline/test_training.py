import csv
from pathlib import Path

import numpy as np
import pytest

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.errors import ConfigError
from stream_infer.offline import simulate
from stream_infer.offline.backtest import average_precision, roc_auc
from stream_infer.offline.training import best_f1_threshold, train


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
