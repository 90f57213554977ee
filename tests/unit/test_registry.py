"""Model files are verified before anything parses them; pickle is never loaded."""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import xgboost

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.errors import ModelError, ModelIntegrityError
from stream_infer.registry import load_verified, resolve, version_key, write_model

FEATURES = ["amount", "card.risk", "attributes.x"]


def tiny_booster(names: list[str] | None = FEATURES) -> xgboost.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    dm = xgboost.DMatrix(x, label=y, feature_names=names)
    return xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, dm, 5)


def save(root: Path, version: str = "1", booster: xgboost.Booster | None = None,
         features: list[str] = FEATURES, fmt: str = "xgboost-json") -> Path:
    raw = bytes((booster or tiny_booster()).save_raw("json" if fmt == "xgboost-json" else "ubj"))
    return write_model(root, "fraud", version, raw, features=features, threshold=0.5,
                       fmt=fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["xgboost-json", "xgboost-ubj"])
def test_loaded_model_scores_exactly_like_the_booster(tmp_path: Path, fmt: str) -> None:
    booster = tiny_booster()
    model = XGBoostModel.load(save(tmp_path, booster=booster, fmt=fmt))
    x = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    x[::7, 1] = np.nan
    np.testing.assert_array_equal(model.predict(x), booster.inplace_predict(x))
    assert (model.name, model.version, model.features) == ("fraud", "1", tuple(FEATURES))


def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    model_dir = save(tmp_path)
    path = model_dir / "model.json"
    path.write_bytes(path.read_bytes().replace(b'"base_score"', b'"base_score" ', 1))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        XGBoostModel.load(model_dir)


def test_a_pickle_is_refused_even_with_a_matching_hash(tmp_path: Path) -> None:
    model_dir = save(tmp_path)
    payload = pickle.dumps({"evil": True})
    (model_dir / "model.json").write_bytes(payload)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256(payload).hexdigest()
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="pickle"):
        load_verified(model_dir)
    manifest["model_file"] = "model.pkl"
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="never loaded"):
        load_verified(model_dir)


def test_feature_order_must_match_the_models_own_names(tmp_path: Path) -> None:
    model_dir = save(tmp_path, features=["card.risk", "amount", "attributes.x"])
    with pytest.raises(ModelIntegrityError, match="feature order"):
        XGBoostModel.load(model_dir)


def test_feature_count_is_checked_when_the_model_has_no_names(tmp_path: Path) -> None:
    model_dir = save(tmp_path, booster=tiny_booster(names=None), features=["amount", "x"])
    with pytest.raises(ModelIntegrityError, match="expects 3 features"):
        XGBoostModel.load(model_dir)


def test_latest_is_the_highest_version_in_natural_order(tmp_path: Path) -> None:
    for version in ["2", "10", "9"]:
        save(tmp_path, version)
    assert resolve(tmp_path, "fraud").name == "10"
    assert resolve(tmp_path, "fraud", "9").name == "9"
    assert version_key("1.9") < version_key("1.10")
    with pytest.raises(ModelError, match="not found"):
        resolve(tmp_path, "fraud", "3")
    with pytest.raises(ModelError, match="no versions"):
        resolve(tmp_path, "other")


def test_versions_are_immutable(tmp_path: Path) -> None:
    save(tmp_path)
    with pytest.raises(ModelError, match="immutable"):
        save(tmp_path)


@pytest.mark.parametrize("method", ["saabas", "tree_shap"])
def test_contributions_with_the_bias_sum_to_the_raw_margin(tmp_path: Path, method: str) -> None:
    booster = tiny_booster()
    model = XGBoostModel.load(save(tmp_path, booster=booster), reasons=method)  # type: ignore[arg-type]
    x = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    x[::5, 0] = np.nan
    contribs = model.contributions(x)
    assert contribs.shape == (40, 4)
    margin = booster.predict(xgboost.DMatrix(x, feature_names=FEATURES), output_margin=True)
    np.testing.assert_allclose(contribs.sum(axis=1), margin, rtol=1e-5, atol=1e-5)
    exact = booster.predict(xgboost.DMatrix(x, feature_names=FEATURES), pred_contribs=True,
                            approx_contribs=method == "saabas")
    np.testing.assert_array_equal(contribs, exact)  # the method asked for, not the other
