"""The backtest report's drift section: PSI of the replayed rows against each model's training
profile, for every feature and the score, in the table, the JSON and the page's charts."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from matplotlib.patches import Rectangle

from stream_infer.drift import SCORE, Profile, fit_profile, no_drift, psi
from stream_infer.offline import backtest

FEATURES = ["amount", "card.risk", "merchant.rate"]
MODEL = "champ:1"


def rows(n: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.lognormal(3, 1, n), rng.integers(0, 4, n),
                            rng.beta(2, 30, n)]).astype(np.float32)


def profile() -> Profile:
    train = rows(20_000, seed=1)
    return fit_profile(train, FEATURES, np.clip(train[:, 2] * 5, 0, 1))


def columns(replayed: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
    return {**{f"feature:{f}": replayed[:, j] for j, f in enumerate(FEATURES)},
            f"score:{MODEL}": np.clip(replayed[:, 2] * 5, 0, 1), "label": np.zeros(len(replayed))}


def report() -> backtest.ModelReport:
    scores, labels = np.array([0.1, 0.9, 0.4, 0.8]), np.array([0, 1, 0, 1])
    return backtest.evaluate(MODEL, 0.5, scores, labels, np.array(["a", "b", "a", "b"]),
                             np.zeros(4, dtype=np.int64), k=1)


def test_every_feature_and_the_score_against_training_one_shifted() -> None:
    replayed = rows(4000, seed=2)
    replayed[:, 0] *= np.e  # log-amounts up by one standard deviation
    found = backtest.drift_against_training(columns(replayed), MODEL, profile())
    assert [f.feature for f in found] == [*FEATURES, SCORE]
    by_name = {f.feature: f for f in found}
    assert by_name["amount"].psi > 0.25
    for name in ("card.risk", "merchant.rate", SCORE):
        assert by_name[name].psi < by_name[name].no_drift.p99, name
    bins = profile().features["card.risk"]
    assert by_name["card.risk"].psi == psi(bins.counts(replayed[:, 1]), bins.shares)
    assert by_name["card.risk"].no_drift == no_drift(bins.shares, 4000, 20_000)


def test_features_the_results_lack_are_left_out() -> None:
    replayed = columns(rows(100, seed=3))
    del replayed["feature:card.risk"], replayed[f"score:{MODEL}"]
    found = backtest.drift_against_training(replayed, MODEL, profile())
    assert [f.feature for f in found] == ["amount", "merchant.rate"]


def test_the_table_json_and_page_show_the_drift() -> None:
    replayed = rows(4000, seed=4)
    replayed[:, 0] *= np.e
    drift = {MODEL: backtest.drift_against_training(columns(replayed), MODEL, profile())}
    amount = drift[MODEL][0]
    text = backtest.table([report()], drift=drift)
    assert "PSI against training" in text
    assert f"{amount.psi:.4f} / {amount.no_drift.p99:.4f}" in text.split("  amount")[1]
    assert "PSI against training" not in backtest.table([report()])
    as_json = backtest.as_json([report()], {}, drift=drift)["drift"][MODEL]
    assert [d["feature"] for d in as_json] == [*FEATURES, SCORE]
    assert as_json[0]["psi"] == amount.psi and as_json[0]["p99"] == amount.no_drift.p99
    assert "drift" not in backtest.as_json([report()], {})
    figure = backtest.figures([report()], {}, {}, drift)[f"PSI against training: {MODEL}"]
    bars = [b for b in figure.axes[0].patches if isinstance(b, Rectangle)]
    assert max(b.get_width() for b in bars) == amount.psi  # amount first, the largest
    page = backtest.html_page([report()], {}, {}, {}, drift=drift)
    assert f"PSI against training: {MODEL}" in page
