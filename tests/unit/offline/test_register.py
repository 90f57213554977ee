"""``model register``: models trained elsewhere into the registry, or a clear refusal.

``data/xgbclassifier.json`` is what ``XGBClassifier.save_model`` wrote (xgboost 3.2,
scikit-learn 1.9) for ``XGBClassifier(n_estimators=60, max_depth=3, learning_rate=0.6,
early_stopping_rounds=3, eval_metric="logloss", random_state=0)`` fitted on a numpy array of 4
columns (so no feature names) with an evaluation set: 9 trees, ``best_iteration`` 5, and the
``learner.attributes.scikit_learn`` entry ``{"_estimator_type": "classifier"}``.
``data/xgbclassifier-probe.json`` holds 10 rows and its ``predict_proba(rows)[:, 1]``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import xgboost

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.cli import main
from stream_infer.errors import ModelError, ModelIntegrityError
from stream_infer.offline.training import register
from stream_infer.registry import read_manifest

DATA = Path(__file__).parent / "data"
FEATURES = ["amount", "attributes.distance_km", "card.txn_count_30d"]


@pytest.fixture(scope="module")
def booster() -> xgboost.Booster:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    y = (x[:, 0] + rng.normal(0, 0.5, 500) > 1).astype(np.float32)
    return xgboost.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                         xgboost.DMatrix(x, label=y, feature_names=FEATURES), 8)


def rows() -> np.ndarray:
    return np.random.default_rng(6).normal(size=(50, 3)).astype(np.float32)


def served(model_dir: Path) -> XGBoostModel:
    return XGBoostModel.load(model_dir, nthread=1)


def test_a_booster_json_round_trips_with_its_own_feature_names(
        booster: xgboost.Booster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "trained-elsewhere.json"
    booster.save_model(source)
    assert main(["model", "register", str(source), "--name", "fraud",
                 "--models-dir", str(tmp_path / "models"), "--threshold", "0.3"]) == 0
    model_dir = tmp_path / "models" / "fraud" / "1"
    manifest = read_manifest(model_dir)
    assert manifest.features == FEATURES and manifest.threshold == 0.3
    assert manifest.format == "xgboost-json"
    assert (model_dir / "model.json").read_bytes() == source.read_bytes()
    assert manifest.training["registered_from"]["sha256"] == manifest.sha256
    model = served(model_dir)
    assert np.array_equal(model.predict(rows()), booster.inplace_predict(rows()))
    out = capsys.readouterr().out
    assert "registered" in out and "3 (the model's own names)" in out
    assert f"sha256      {manifest.sha256}" in out
    # the same names given again are fine; the next version is 2
    report = register(source, models_dir=tmp_path / "models", name="fraud",
                      features=FEATURES)
    assert report.model_dir.name == "2" and report.threshold == 0.5
    assert list(tmp_path.joinpath("models").glob(".register-*")) == []


def test_a_ubjson_booster_without_feature_names_takes_them_from_features(
        booster: xgboost.Booster, tmp_path: Path) -> None:
    unnamed = booster.copy()
    unnamed.feature_names = None
    source = tmp_path / "model.ubj"
    unnamed.save_model(source)
    with pytest.raises(ModelIntegrityError, match="no feature names; give --features"):
        register(source, models_dir=tmp_path, name="u")
    report = register(source, models_dir=tmp_path, name="u", version="7",
                      features=FEATURES)
    manifest = read_manifest(report.model_dir)
    assert (manifest.format, manifest.model_file, manifest.version) == (
        "xgboost-ubj", "model.ubj", "7")
    assert np.array_equal(served(report.model_dir).predict(rows()),
                          booster.inplace_predict(rows()))


def test_an_xgbclassifier_scores_what_its_predict_proba_scored(tmp_path: Path) -> None:
    source = DATA / "xgbclassifier.json"
    saved = json.loads(source.read_text())["learner"]
    assert saved["attributes"]["scikit_learn"] == '{"_estimator_type": "classifier"}'
    report = register(source, models_dir=tmp_path, name="clf", features=["a", "b", "c", "d"])
    assert (report.estimator, report.trees_in_file, report.best_iteration, report.trees) == (
        "classifier", 9, 5, 6)
    assert "6 of the file's 9" in report.summary()
    probe = json.loads((DATA / "xgbclassifier-probe.json").read_text())
    scores = served(report.model_dir).predict(np.array(probe["rows"], dtype=np.float32))
    assert np.array_equal(scores, np.array(probe["predict_proba"], dtype=np.float32))
    every_tree = xgboost.Booster(model_file=str(source))
    assert not np.array_equal(scores, every_tree.inplace_predict(
        np.array(probe["rows"], dtype=np.float32)))
    training = read_manifest(report.model_dir).training
    assert training["registered_from"]["scikit_learn"] == "classifier"
    assert training["registered_from"]["trees_in_file"] == 9


@pytest.mark.parametrize(("features", "message"), [
    ("card.txn_count_30d,amount,attributes.distance_km",
     "are the model's own feature names in another order"),
    ("amount,attributes.distance_km,card.other", "differ from the model's own feature names"),
    ("amount,amount,card.txn_count_30d", "names amount more than once"),
])
def test_a_feature_list_that_differs_from_the_booster_s_is_refused(
        booster: xgboost.Booster, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        features: str, message: str) -> None:
    source = tmp_path / "model.json"
    booster.save_model(source)
    code = main(["model", "register", str(source), "--name", "x", "--features", features,
                 "--models-dir", str(tmp_path / "models")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "models" / "x").exists()


def test_a_feature_count_that_differs_from_num_feature_is_refused(
        booster: xgboost.Booster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unnamed = booster.copy()
    unnamed.feature_names = None
    source = tmp_path / "model.json"
    unnamed.save_model(source)
    code = main(["model", "register", str(source), "--name", "x", "--features", "a,b",
                 "--models-dir", str(tmp_path)])
    assert code == 2
    assert "the model expects 3 features, --features lists 2" in capsys.readouterr().err


def refused(tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["model", "register", str(source), "--name", "x", "--features", "a,b,c",
                 "--models-dir", str(tmp_path / "models")])
    assert code == 2 and not (tmp_path / "models" / "x").exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.pkl", "model.json"])
def test_a_pickle_is_refused_by_suffix_or_by_content(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    source = tmp_path / name
    source.write_bytes(pickle.dumps({"not": "a model"}))
    assert "pickled models are never loaded" in refused(tmp_path, source, capsys)


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read it"),
    (b"", "not an XGBoost JSON or UBJSON model"),
    (b"binf\x00\x00\x00\x00", "not an XGBoost JSON or UBJSON model"),
    (b'{"learner": 1}', "XGBoost cannot read it"),
])
def test_an_unreadable_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       content: bytes | None, message: str) -> None:
    source = tmp_path / "model.json"
    if content is not None:
        source.write_bytes(content)
    assert message in refused(tmp_path, source, capsys)


def test_a_model_that_is_not_one_fraud_probability_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)
    multi = xgboost.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1},
                          xgboost.DMatrix(x, label=np.arange(60) % 3), 2)
    source = tmp_path / "multi.json"
    multi.save_model(source)
    assert "objective multi:softprob with 3 outputs" in refused(tmp_path, source, capsys)


def test_an_existing_version_is_never_overwritten(booster: xgboost.Booster,
                                                  tmp_path: Path) -> None:
    source = tmp_path / "model.json"
    booster.save_model(source)
    register(source, models_dir=tmp_path, name="v", version="1")
    with pytest.raises(ModelError, match="already exists; versions are immutable"):
        register(source, models_dir=tmp_path, name="v", version="1")
