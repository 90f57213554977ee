"""The compiled forest scores bit-for-bit like ``Booster.inplace_predict``, or is refused."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xgboost

from stream_infer import _forest  # the install must build it: CI proves the README's install
from stream_infer.adapters.forest import (
    MISSING_RIGHT,
    Forest,
    Unsupported,
    _prove,
    compile_forest,
    probe_rows,
)
from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.errors import ModelError
from stream_infer.registry import write_model

COLUMNS = 9


def training_rows(rows: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, COLUMNS)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan  # missing values teach default directions
    y = ((np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])
          + 0.3 * rng.normal(size=rows)) > 0.4).astype(np.float32)
    return x, y


def train(rounds: int = 40, **params: object) -> xgboost.Booster:
    x, y = training_rows()
    return xgboost.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 1,
                          "seed": 1, **params}, xgboost.DMatrix(x, label=y), rounds)


def hostile_rows(rows: int, seed: int = 2) -> np.ndarray:
    """Normal values, NaN, infinities, float32 extremes, signed zeros and huge magnitudes."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(rows, COLUMNS)) * 10.0 ** rng.integers(-3, 4, (rows, COLUMNS)))
    x = x.astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 0.0, -0.0],
                        dtype=np.float32)
    pick = rng.random(x.shape) < 0.15
    x[pick] = rng.choice(specials, int(pick.sum()))
    return x


def bits(scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores, dtype=np.float32).view(np.int32)


def assert_exact(booster: xgboost.Booster, forest: Forest, rows: np.ndarray,
                 nthread: int = 1) -> None:
    expected = booster.inplace_predict(rows, validate_features=False)
    got = forest.predict(rows, nthread)
    assert got.dtype == np.float32
    mismatched = np.flatnonzero(bits(expected) != bits(got))
    assert not len(mismatched), f"{len(mismatched)} rows differ, first {mismatched[:5]}"


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6, 7, 8, 10])  # 10: no unrolled kernel
@pytest.mark.parametrize("simd", [True, False])
def test_every_depth_scores_exactly_like_xgboost(depth: int, simd: bool) -> None:
    booster = train(max_depth=depth)
    forest = compile_forest(booster, simd=simd)
    assert forest.depth == depth and forest.trees == 40
    # 1,000 rows: 15 full vector blocks and a scalar tail of 40
    assert_exact(booster, forest, hostile_rows(1000))
    assert_exact(booster, forest, training_rows(1000, seed=5)[0])
    assert_exact(booster, forest, probe_rows(forest, 3000, seed=7))


def xgboost_contributions(booster: xgboost.Booster, rows: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(xgboost.DMatrix(rows, missing=np.nan), pred_contribs=True,
                                      approx_contribs=True, validate_features=False),
                      dtype=np.float32)


@pytest.mark.parametrize(("depth", "params"), [(1, {}), (3, {}), (6, {}), (8, {}),
                                               (7, {"min_child_weight": 40, "gamma": 2.0}),
                                               (6, {"objective": "binary:logitraw"})])
def test_saabas_contributions_equal_xgboosts_approx_contribs(depth: int,
                                                             params: dict[str, object]) -> None:
    booster = train(max_depth=depth, **params)
    forest = compile_forest(booster)
    rows = hostile_rows(700)
    rows[np.isinf(rows)] = 3.4028235e38  # XGBoost's DMatrix refuses infinity (enrich clamps)
    rows = np.vstack([rows, training_rows(300, seed=6)[0]])
    expected, got = xgboost_contributions(booster, rows), forest.contributions(rows)
    assert got.shape == expected.shape == (1000, COLUMNS + 1)
    mismatched = np.flatnonzero((bits(expected) != bits(got)).any(axis=1))
    assert not len(mismatched), f"{len(mismatched)} rows differ, first {mismatched[:5]}"
    margins = booster.inplace_predict(rows, predict_type="margin")
    np.testing.assert_allclose(got.sum(axis=1), margins, rtol=1e-4, atol=1e-4)


def assert_contributions_exact(booster: xgboost.Booster, forest: Forest,
                               rows: np.ndarray) -> None:
    expected, got = xgboost_contributions(booster, rows), forest.contributions(rows)
    assert got.shape == expected.shape == (len(rows), forest.columns + 1)
    mismatched = np.flatnonzero((bits(expected) != bits(got)).any(axis=1))
    assert not len(mismatched), \
        f"{len(mismatched)} of {len(rows)} rows differ, first {mismatched[:5]}"


@pytest.mark.parametrize(("depth", "params"), [
    (1, {}), (2, {}), (3, {}), (6, {}),
    (7, {"min_child_weight": 40, "gamma": 2.0}),
    (10, {"min_child_weight": 10, "gamma": 0.5}),  # leaves above the last level at every level
])
def test_contributions_of_few_rows_equal_xgboosts(depth: int, params: dict[str, object]) -> None:
    # the vector path takes 8 rows at a time and pads a last group of 3 to 7; the scalar loop
    # takes a last 1 or 2
    booster = train(max_depth=depth, **params)
    forest = compile_forest(booster)
    splits = forest.feature[:forest.trees * ((1 << forest.depth) - 1)]
    assert (splits < 0).any() and (splits > 0).any()  # missing values go right and left
    for count in (1, 2, 3, 7, 8, 9, 10, 40, 63):
        rows = hostile_rows(count, seed=count)
        rows[np.isinf(rows)] = 3.4028235e38
        rows[np.arange(count), np.arange(count) % COLUMNS] = np.nan  # a missing value per row
        assert_contributions_exact(booster, forest, rows)


def test_contributions_of_many_columns_equal_xgboosts() -> None:
    # more than 64 columns take the scalar loop
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 70)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 66]) * np.nan_to_num(x[:, 69]) > 0.3)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 1},
                            xgboost.DMatrix(x, label=y.astype(np.float32)), 20)
    forest = compile_forest(booster)
    assert forest.columns == 70
    rows = rng.normal(size=(50, 70)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    assert_contributions_exact(booster, forest, rows)


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:logistic", "binary:logitraw",
                                       "reg:squarederror"])
def test_supported_objectives_score_exactly(objective: str) -> None:
    booster = train(objective=objective, base_score=0.3)
    forest = compile_forest(booster)
    assert_exact(booster, forest, hostile_rows(2000))


def test_shallow_leaves_and_stumps_are_laid_out_under_every_slot() -> None:
    # strong regularisation stops many branches early: leaves at every level
    booster = train(max_depth=7, min_child_weight=40, gamma=2.0)
    forest = compile_forest(booster)
    assert_exact(booster, forest, hostile_rows(3000))
    assert_exact(booster, forest, training_rows(3000, seed=9)[0])


def test_large_batches_split_over_threads_give_the_same_scores() -> None:
    booster = train()
    forest = compile_forest(booster)
    rows = hostile_rows(20_011)
    assert_exact(booster, forest, rows, nthread=3)
    assert_exact(booster, forest, rows[:5], nthread=3)


def test_early_stopped_models_score_every_tree_like_inplace_predict() -> None:
    x, y = training_rows()
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1,
                             "eta": 0.5}, xgboost.DMatrix(x[:3000], label=y[:3000]), 200,
                            evals=[(xgboost.DMatrix(x[3000:], label=y[3000:]), "held")],
                            early_stopping_rounds=3, verbose_eval=False)
    best = booster.best_iteration
    assert best + 1 < booster.num_boosted_rounds()  # stopped early: extra rounds kept
    forest = compile_forest(booster)
    assert forest.trees == booster.num_boosted_rounds()
    assert_exact(booster, forest, hostile_rows(2000))


@pytest.mark.parametrize(("params", "reason"), [
    ({"objective": "multi:softprob", "num_class": 3}, "objective 'multi:softprob'"),
    ({"booster": "dart", "rate_drop": 0.1}, "booster 'dart'"),
    ({"booster": "gblinear", "max_depth": None}, "booster 'gblinear'"),
    ({"objective": "count:poisson"}, "objective 'count:poisson'"),
    ({"num_parallel_tree": 3}, "more than one"),
])
def test_what_it_cannot_serve_is_refused_with_the_reason(params: dict[str, object],
                                                         reason: str) -> None:
    x, y = training_rows()
    if params.get("num_class"):
        y = (np.nan_to_num(x[:, 0]) > 0).astype(np.float32) + (np.nan_to_num(x[:, 1]) > 1)
    params = {k: v for k, v in {"nthread": 1, "max_depth": 3, **params}.items() if v is not None}
    booster = xgboost.train(params,
                            xgboost.DMatrix(x, label=y), 5)
    with pytest.raises(Unsupported, match=reason):
        compile_forest(booster)


def test_categorical_splits_are_refused() -> None:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.integers(0, 3, 500), rng.normal(size=500)]).astype(np.float32)
    booster = xgboost.train({"objective": "binary:logistic", "max_cat_to_onehot": 1,
                             "nthread": 1},
                            xgboost.DMatrix(x, label=(x[:, 0] == 1), feature_types=["c", "q"],
                                            enable_categorical=True), 5)
    with pytest.raises(Unsupported, match="categorical"):
        compile_forest(booster)


def test_a_forest_that_differs_by_one_leaf_is_refused_by_the_probe() -> None:
    booster = train()
    forest = compile_forest(booster)
    leaf = forest.leaf.copy()
    leaf[17 * 64:18 * 64] += np.float32(0.01)  # tree 17
    tampered = replace(forest, leaf=leaf)
    with pytest.raises(Unsupported, match="probe rows scored differently"):
        _prove(tampered, booster, 4096)


def test_the_kernel_checks_every_size_and_column_it_is_given() -> None:
    forest = compile_forest(train(rounds=3))
    rows = hostile_rows(10)
    out = np.empty(10, dtype=np.float32)
    args = [rows, COLUMNS, forest.feature, forest.threshold, forest.leaf, forest.depth,
            forest.base, out, True, True]
    _forest.score(*args)
    for position, bad, message in [
        (7, np.empty(9, dtype=np.float32), "out size"),
        (2, forest.feature[:-1], "feature size"),
        (3, forest.threshold[:-1], "threshold size"),
        (1, 4, "x is not rows x cols"),
        (5, 17, "depth"),
    ]:
        broken = list(args)
        broken[position] = bad
        with pytest.raises(ValueError, match=message):
            _forest.score(*broken)
    beyond = forest.feature.copy()
    beyond[0] = COLUMNS | MISSING_RIGHT
    with pytest.raises(ValueError, match="column is out of range"):
        _forest.score(rows, COLUMNS, beyond, *args[3:])


def test_the_contributions_kernel_checks_its_sizes_too() -> None:
    forest = compile_forest(train(rounds=3))
    rows = hostile_rows(10)
    out = np.empty((10, COLUMNS + 1), dtype=np.float32)
    args = [rows, COLUMNS, forest.feature, forest.threshold, forest.stop, forest.mean,
            forest.depth, forest.base, out]
    _forest.contributions(*args)
    for position, bad, message in [(8, out[:, :-1].copy(), "out size"),
                                   (4, forest.stop[:-1], "stop size"),
                                   (5, forest.mean[:-1], "mean size|feature size")]:
        broken = list(args)
        broken[position] = bad
        with pytest.raises(ValueError, match=message):
            _forest.contributions(*broken)


def test_wrong_width_rows_are_refused() -> None:
    forest = compile_forest(train(rounds=3))
    with pytest.raises(ValueError, match="expected"):
        forest.predict(np.zeros((4, COLUMNS + 1), dtype=np.float32))


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    features = [f"f{i}" for i in range(COLUMNS)]
    write_model(tmp_path, "served", "1", bytes(train().save_raw("json")), features=features,
                threshold=0.5)
    x, y = training_rows()
    dart = xgboost.train({"booster": "dart", "nthread": 1, "objective": "binary:logistic"},
                         xgboost.DMatrix(x, label=y), 5)
    write_model(tmp_path, "dart", "1", bytes(dart.save_raw("json")), features=features,
                threshold=0.5)
    return tmp_path


def test_the_model_adapter_serves_the_backend_the_settings_ask_for(registry: Path) -> None:
    rows = hostile_rows(500)
    auto = XGBoostModel.load(registry / "served" / "1", nthread=1)
    plain = XGBoostModel.load(registry / "served" / "1", nthread=1, backend="xgboost")
    assert (auto.backend, plain.backend) == ("compiled", "xgboost")
    assert np.array_equal(bits(auto.predict(rows)), bits(plain.predict(rows)))
    finite = np.clip(rows, -3.4028235e38, 3.4028235e38)
    assert np.array_equal(bits(auto.contributions(finite)), bits(plain.contributions(finite)))
    shap = XGBoostModel.load(registry / "served" / "1", nthread=1, reasons="tree_shap")
    assert not np.array_equal(shap.contributions(finite), auto.contributions(finite))
    assert auto.predict(rows[:0]).shape == (0,)

    fallback = XGBoostModel.load(registry / "dart" / "1", nthread=1)
    assert fallback.backend == "xgboost"
    with pytest.raises(ModelError, match="compiled backend cannot serve it: booster 'dart'"):
        XGBoostModel.load(registry / "dart" / "1", backend="compiled")


@pytest.mark.parametrize("rows", [5, 8, 9, 40, 3 * 64 + 8, 3 * 64 + 9])
def test_a_last_short_block_is_padded_or_left_to_the_scalar_loop(rows: int) -> None:
    booster = train()
    assert_exact(booster, compile_forest(booster), hostile_rows(rows))


@pytest.mark.parametrize("value", [-np.inf, np.inf, np.nan])
@pytest.mark.parametrize("default_left", [True, False])
def test_infinite_and_nan_thresholds_score_exactly(value: float, default_left: bool) -> None:
    # the vector path reads a missing value that goes right as +inf and sends a row right when
    # value >= threshold: exact at infinite thresholds, not at NaN ones, which take the scalar
    # path
    booster = train()
    model = json.loads(bytes(booster.save_raw("json")))
    root = model["learner"]["gradient_booster"]["model"]["trees"][0]
    root["split_conditions"][0], root["default_left"][0] = float(value), int(default_left)
    edited = xgboost.Booster(params={"nthread": 1})
    edited.load_model(bytearray(json.dumps(model).encode()))
    forest = compile_forest(booster)
    feature, threshold = forest.feature.copy(), forest.threshold.copy()
    feature[0] = (feature[0] & ~MISSING_RIGHT) | (0 if default_left else MISSING_RIGHT)
    threshold[0] = value
    rows = hostile_rows(2000)
    assert np.isnan(rows[:, root["split_indices"][0]]).any()
    assert_exact(edited, replace(forest, feature=feature, threshold=threshold), rows)
