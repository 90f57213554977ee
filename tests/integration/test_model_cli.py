"""``stream-infer model train`` from the command line: the README's Handbook baseline command
run as written, parameters from flags and files, and the help text.

The Fraud-Detection-Handbook's data cannot be downloaded here, so the baseline's protocol is
checked on simulated transactions with the Handbook's columns and dates: its windows, the
cards its test set leaves out (against a transcription of the Handbook's
``get_train_test_set``), and the XGBoost model it trains. The published figures themselves
are not reproduced.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.cli import main
from stream_infer.offline.backtest import average_precision, roc_auc
from stream_infer.registry import read_manifest

README = Path(__file__).resolve().parents[2] / "README.md"
HANDBOOK_FEATURES = [
    "TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT",
    *(f"CUSTOMER_ID_{kind}_{days}DAY_WINDOW" for days in (1, 7, 30)
      for kind in ("NB_TX", "AVG_AMOUNT")),
    *(f"TERMINAL_ID_{kind}_{days}DAY_WINDOW" for days in (1, 7, 30)
      for kind in ("NB_TX", "RISK")),
]
DAY0 = dt.datetime(2018, 4, 1)
"""TX_TIME_DAYS counts days from here, as in the Handbook's data."""


def readme_command(marker: str) -> list[str]:
    block = README.read_text().split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    lines = "\n".join(line for line in block.splitlines() if not line.startswith("```"))
    return shlex.split(lines.replace("\\\n", " "))  # a shell's line continuations


def handbook_like(path: Path) -> None:
    """Handbook-shaped transactions, 2018-07-15 to 2018-08-20: 400 customers; 60 of them
    compromised for 14 days from a random day, a third of their payments then fraudulent,
    larger and at riskier terminals (the Handbook's third scenario, roughly)."""
    rng = np.random.default_rng(2018)
    customers = 400
    compromised = {int(c): int(rng.integers(100, 145))
                   for c in rng.choice(customers, 60, replace=False)}
    columns: dict[str, list[Any]] = {name: [] for name in (
        "TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_TIME_DAYS",
        "TX_FRAUD", *HANDBOOK_FEATURES)}
    for day in range(105, 142):
        for customer in range(customers):
            for _ in range(int(rng.poisson(1.5))):
                when = DAY0 + dt.timedelta(days=day, seconds=int(rng.integers(0, 86_400)))
                since = compromised.get(customer, 10_000)
                fraud = since <= day < since + 14 and rng.random() < 1 / 3
                amount = float(rng.gamma(2, 30)) * (1.5 if fraud else 1)
                values = [len(columns["TX_FRAUD"]), when, customer, int(rng.integers(0, 200)),
                          day, int(fraud), amount, int(when.weekday() >= 5),
                          int(when.hour <= 6)]
                values += [float(rng.poisson(3)) if i % 2 == 0 else float(rng.gamma(2, 30))
                           for i in range(6)]
                values += [float(rng.poisson(20)) if i % 2 == 0
                           else float(rng.random() * 0.05 + fraud * rng.random() * 0.03)
                           for i in range(6)]
                for name, value in zip(columns, values, strict=True):
                    columns[name].append(value)
    table = pa.table({name: pa.array(values, type=pa.timestamp("ns"))
                      if name == "TX_DATETIME" else values for name, values in columns.items()})
    pq.write_table(table, path)


def handbook_test_rows(days: np.ndarray, cards: np.ndarray, fraud: np.ndarray,
                       start: int, delta_train: int = 7, delta_delay: int = 7,
                       delta_test: int = 7) -> np.ndarray:
    """The rows of the Handbook's ``get_train_test_set`` test set, its loop transcribed."""
    train = (days >= start) & (days < start + delta_train)
    known = set(cards[train & fraud].tolist())
    test = np.zeros(len(days), dtype=bool)
    for day in range(delta_test):
        known |= set(cards[(days == start + delta_train + day - 1) & fraud].tolist())
        test |= (days == start + delta_train + delta_delay + day) & ~np.isin(cards, list(known))
    return test


def test_the_readme_s_handbook_baseline_command_trains_the_handbook_protocol(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    command = readme_command("handbook-baseline")
    assert command[:3] == ["stream-infer", "model", "train"]
    handbook_like(tmp_path / command[3])
    monkeypatch.chdir(tmp_path)
    assert main(command[1:]) == 0
    out = capsys.readouterr().out

    data = pq.read_table(tmp_path / command[3]).to_pydict()
    days = np.array(data["TX_TIME_DAYS"])
    cards = np.array(data["CUSTOMER_ID"])
    fraud = np.array(data["TX_FRAUD"]) == 1
    start = (dt.datetime(2018, 7, 25) - DAY0).days
    train = (days >= start) & (days < start + 7)
    test = handbook_test_rows(days, cards, fraud, start)
    window = (days >= start + 14) & (days < start + 21)
    assert test.sum() < window.sum()  # the protocol leaves cards out here

    model_dir = tmp_path / "models" / "handbook-baseline" / "1"
    training = read_manifest(model_dir).training
    assert (training["train_rows"], training["valid_rows"], training["test_rows"]) == (
        int(train.sum()), 0, int(test.sum()))
    assert training["dropped_known_compromised"]["rows"] == int(window.sum() - test.sum())
    assert training["threshold"] == {"value": 0.5, "source": "given (--threshold)"}
    params = training["params"]
    assert {k: params[k] for k in ("tree_method", "base_score", "eta", "max_depth", "seed",
                                   "n_estimators")} == {
        "tree_method": "exact", "base_score": 0.5, "eta": 0.3, "max_depth": 6, "seed": 0,
        "n_estimators": 100}

    x = np.column_stack([data[f] for f in HANDBOOK_FEATURES]).astype(np.float32)
    y = fraud.astype(np.float64)
    reference = {"objective": "binary:logistic", "tree_method": "exact", "base_score": 0.5,
                 "eta": 0.3, "max_depth": 6, "seed": 0, "nthread": 2}
    exact = xgboost.train(reference, xgboost.DMatrix(x[train], label=y[train]), 100)
    hist = xgboost.train({**reference, "tree_method": "hist"},
                         xgboost.DMatrix(x[train], label=y[train]), 100)
    scores = XGBoostModel.load(model_dir, nthread=1).predict(x[test])
    assert np.array_equal(scores, exact.inplace_predict(x[test]))
    assert not np.array_equal(scores, hist.inplace_predict(x[test]))
    assert training["auc"] == round(roc_auc(y[test], scores), 6)
    assert training["average_precision"] == round(average_precision(y[test], scores), 6)
    assert f"AUC {roc_auc(y[test], scores):.4f}" in out and roc_auc(y[test], scores) < 0.99
    assert f"test        {int(test.sum()):,} rows, {int(y[test].sum()):,} positives" in out


@pytest.fixture
def small(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 2))
    label = (x[:, 0] + rng.normal(0, 0.7, 2000) > 1.2).astype(int)
    path = tmp_path / "small.csv"
    path.write_text("a,b,label\n" + "".join(f"{a},{b},{y}\n" for (a, b), y in zip(x, label,
                                                                                 strict=True)))
    return path


def test_params_come_from_a_file_and_then_flags(small: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.toml"
    params.write_text('tree_method = "exact"\nmax_depth = 2\nbase_score = 0.25\n')
    assert main(["model", "train", str(small), "--models-dir", str(tmp_path / "m"), "--name",
                 "p", "--trees", "4", "--depth", "5", "--nthread", "1", "--params-file",
                 str(params), "--param", "max_depth=1", "--param", "learning_rate=0.5"]) == 0
    recorded = read_manifest(tmp_path / "m" / "p" / "1").training["params"]
    assert {k: recorded[k] for k in ("tree_method", "max_depth", "base_score", "eta",
                                     "nthread")} == {
        "tree_method": "exact", "max_depth": 1, "base_score": 0.25, "eta": 0.5, "nthread": 1}
    assert "learning_rate" not in recorded
    model = json.loads((tmp_path / "m" / "p" / "1" / "model.json").read_text())
    assert {t["tree_param"]["num_nodes"] for t in
            model["learner"]["gradient_booster"]["model"]["trees"]} == {"3"}


@pytest.mark.parametrize(("args", "message"), [
    (["--gap", "1d"], "--gap need --train-until"),
    (["--drop-known-compromised"], "--drop-known-compromised need --train-until"),
    (["--param", "exact"], "expected KEY=VALUE"),
    (["--param", "num_boost_round=9"], "the number of trees is --trees"),
    (["--params-file", "missing.toml"], "missing.toml"),
    (["--param", "tree_method=bogus"], "XGBoost refused the training parameters"),
])
def test_bad_training_flags_are_one_line_and_exit_2(
        small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        message: str) -> None:
    assert main(["model", "train", str(small), "--models-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_help_prints_every_default(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["model", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("--trees N boosting rounds, the most with early stopping (default: 200)",
                    "(default: the best F1 on the validation rows)",
                    "--nthread N XGBoost threads (default: 2)", "(default: 0.2)",
                    "defaults objective=binary:logistic, tree_method=hist, eta=0.1",
                    "as the Fraud-Detection-Handbook's test sets do (default: off)"):
        assert default in text
