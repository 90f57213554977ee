"""The drift module: bins, PSI by hand, the no-drift expectation against simulation, windows
of processing time, and the model wrapper the service counts batches with."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from stream_infer import drift
from stream_infer.drift import (
    EPSILON,
    SCORE,
    Bins,
    DriftTracker,
    Profile,
    fit_bins,
    fit_profile,
    no_drift,
    psi,
    simulate_psi,
    window,
)
from stream_infer.errors import ModelError

NAMES = ["normal", "skewed", "category", "gappy"]
REFERENCE_ROWS = 20_000


def population(rows: int, seed: int) -> npt.NDArray[np.float32]:
    """Four kinds of feature: normal, skewed, three categories, normal with 3% missing."""
    rng = np.random.default_rng(seed)
    gappy = rng.normal(5, 2, rows)
    gappy[rng.random(rows) < 0.03] = np.nan
    return np.column_stack([rng.normal(0, 1, rows), rng.exponential(3, rows),
                            rng.integers(0, 3, rows), gappy]).astype(np.float32)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return fit_profile(population(REFERENCE_ROWS, seed=1), NAMES)


def feature_psi(profile: Profile, rows: npt.NDArray[np.float32]) -> dict[str, float]:
    return {name: psi(profile.features[name].counts(rows[:, j]), profile.features[name].shares)
            for j, name in enumerate(NAMES)}


def test_bins_are_deciles_or_categories_with_a_missing_bin(profile: Profile) -> None:
    normal, category, gappy = (profile.features[n] for n in ("normal", "category", "gappy"))
    assert normal.kind == "numeric" and len(normal.edges) == 9 and normal.size == 11
    assert normal.shares[:-1] == pytest.approx([0.1] * 10, abs=1e-3) and normal.missing == 0
    assert category.kind == "categorical" and category.edges.tolist() == [0.0, 1.0, 2.0]
    assert category.shares[3:].tolist() == [0.0, 0.0]  # no "other", no missing in training
    assert gappy.missing == pytest.approx(0.03, abs=0.005)
    assert sum(b.shares.sum() for b in profile.features.values()) == pytest.approx(4)


def test_nans_land_in_the_missing_bin_and_unseen_categories_in_other() -> None:
    numeric = fit_bins(np.arange(100, dtype=np.float64))
    assert numeric.assign([np.nan, -5.0, 1e9]).tolist() == [10, 0, 9]
    assert numeric.counts([np.nan, np.nan, 50.0])[-1] == 2
    categorical = fit_bins([1.0, 2.0, 2.0, np.nan])
    assert categorical.shares.tolist() == [0.25, 0.5, 0.0, 0.25]
    assert categorical.assign([2.0, 7.0, np.nan, 1.0]).tolist() == [1, 2, 3, 0]
    assert fit_bins([np.nan, np.nan]).assign([np.nan, 3.0]).tolist() == [1, 0]


def test_psi_by_hand_and_empty_bins_floored_at_epsilon() -> None:
    by_hand = 0.2 * math.log(0.5 / 0.3) + 0.2 * math.log(0.7 / 0.5)
    assert psi([30, 70], [0.5, 0.5]) == pytest.approx(by_hand)
    assert psi([50, 50], [0.5, 0.5]) == 0.0
    assert psi([50, 50, 0], [0.5, 0.5, 0.0]) == 0.0  # empty on both sides: nothing
    one_sided = (0.5 - EPSILON) * math.log(0.5 / EPSILON) + 0.5 * math.log(1 / 0.5)
    assert psi([100, 0], [0.5, 0.5]) == pytest.approx(one_sided)


@pytest.mark.parametrize("n", [500, 2000, 20_000])
def test_the_no_drift_expectation_agrees_with_simulation(profile: Profile, n: int) -> None:
    for name in NAMES:
        shares = profile.features[name].shares
        simulated = simulate_psi(shares, n, REFERENCE_ROWS, draws=4000, seed=n)
        expected = no_drift(shares, n, REFERENCE_ROWS)
        assert expected.expected == pytest.approx(simulated.mean(), rel=0.08), name
        assert expected.p99 == pytest.approx(np.quantile(simulated, 0.99), rel=0.12), name


def test_the_expectation_shrinks_with_the_sample_and_counts_only_nonempty_bins() -> None:
    deciles = np.r_[np.full(10, 0.1), 0.0]
    assert no_drift(deciles, 500, 0).expected == pytest.approx(9 / 500)
    assert no_drift(deciles, 500, 500).expected == pytest.approx(2 * 9 / 500)
    assert drift.chi2_p99(9) == pytest.approx(21.666, rel=0.005)  # the tabled value
    assert drift.chi2_p99(1) == pytest.approx(6.635, rel=0.01)


def test_held_out_rows_stay_below_the_no_drift_p99(profile: Profile) -> None:
    held_out = population(5000, seed=2)
    for name, value in feature_psi(profile, held_out).items():
        assert value < no_drift(profile.features[name].shares, 5000, REFERENCE_ROWS).p99, name


def test_a_one_sd_shift_in_one_feature_crosses_0_25_for_it_alone(profile: Profile) -> None:
    for j, name in enumerate(NAMES):
        shifted = population(5000, seed=3)
        column = shifted[:, j]
        shifted[:, j] = column + np.nanstd(column)
        values = feature_psi(profile, shifted)
        assert values[name] > 0.25, (name, values)
        assert all(v < 0.05 for other, v in values.items() if other != name), (name, values)


def test_a_profile_round_trips_through_json_and_refuses_a_broken_one(profile: Profile) -> None:
    scored = fit_profile(population(1000, seed=4), NAMES, np.linspace(0, 1, 1000))
    for original in (profile, scored):
        back = Profile.from_json(original.to_json())
        assert back.rows == original.rows and list(back.features) == NAMES
        for name in NAMES:
            assert_same_bins(back.features[name], original.features[name])
    assert scored.score is not None and Profile.from_json(scored.to_json()).score is not None
    broken = scored.to_json()
    broken["features"]["normal"]["shares"] = broken["features"]["normal"]["shares"][:-1]
    with pytest.raises(ModelError, match="one share per bin"):
        Profile.from_json(broken)
    with pytest.raises(ModelError):
        Profile.from_json({"features": {}})


def assert_same_bins(a: Bins, b: Bins) -> None:
    assert a.kind == b.kind
    assert a.edges.tolist() == b.edges.tolist() and a.shares.tolist() == b.shares.tolist()


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Fixed:
    """A model scoring every row 0.5."""

    name: str = "m"
    version: str = "1"
    features: tuple[str, ...] = tuple(NAMES)
    threshold: float = 0.9

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.full(len(matrix), 0.5, dtype=np.float32)

    def contributions(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.zeros((len(matrix), len(self.features) + 1), dtype=np.float32)


def tracker(clock: Clock, min_sample: int = 500) -> DriftTracker:
    return DriftTracker([window("1h"), window("24h")], min_sample=min_sample, clock=clock)


def test_windows_count_batches_and_forget_them_as_time_passes(profile: Profile) -> None:
    clock = Clock()
    drifts = tracker(clock)
    model = drifts.watch(Fixed(), profile)
    rows = population(400, seed=5)
    assert model.predict(rows).tolist() == [0.5] * 400
    readings = {w.window: w for _, _, w in drifts.readings()}
    assert {w: r.rows for w, r in readings.items()} == {"1h": 400, "24h": 400}
    assert not readings["1h"].features, "below the minimum sample: no PSI"
    clock.now += 1800
    model.predict(rows)
    readings = {w.window: w for _, _, w in drifts.readings()}
    assert readings["1h"].rows == 800
    assert [f.feature for f in readings["1h"].features] == NAMES
    clock.now += 3600  # the first batch left the hour, the second is 90 minutes old
    assert {w.window: w.rows for _, _, w in drifts.readings()} == {"1h": 0, "24h": 800}
    clock.now += 86_400
    assert {w.window: w.rows for _, _, w in drifts.readings()} == {"1h": 0, "24h": 0}


def test_window_counts_equal_the_psi_of_the_rows_at_once(profile: Profile) -> None:
    clock = Clock()
    drifts = tracker(clock)
    model = drifts.watch(Fixed(), profile)
    rows = population(3000, seed=6)
    rows[:, 0] += 0.5
    for batch in np.array_split(rows, 7):
        model.predict(np.ascontiguousarray(batch))
        clock.now += 60
    (hour,) = [w for _, _, w in drifts.readings() if w.window == "1h"]
    at_once = feature_psi(profile, rows)
    assert hour.rows == 3000
    assert {f.feature: f.psi for f in hour.features} == pytest.approx(at_once)
    assert hour.features[0].no_drift == no_drift(profile.features["normal"].shares, 3000,
                                                  REFERENCE_ROWS)


def test_the_score_is_profiled_beside_the_features() -> None:
    clock = Clock()
    scored = fit_profile(population(2000, seed=7), NAMES, np.full(2000, 0.5))
    drifts = tracker(clock, min_sample=10)
    drifts.watch(Fixed(), scored).predict(population(100, seed=8))
    (hour,) = [w for _, _, w in drifts.readings() if w.window == "1h"]
    assert [f.feature for f in hour.features] == [*NAMES, SCORE]
    assert hour.features[-1].psi == 0.0  # the same constant score as in training


def test_a_model_without_a_profile_is_served_as_it_is_and_reloads_keep_windows(
        profile: Profile) -> None:
    clock = Clock()
    drifts = tracker(clock, min_sample=1)
    plain = Fixed()
    assert drifts.watch(plain, None) is plain
    first = drifts.watch(Fixed(), profile)
    first.predict(population(10, seed=9))
    again = drifts.watch(Fixed(), profile)  # the same name and version, reloaded
    again.predict(population(10, seed=10))
    drifts.watch(Fixed(version="2"), profile)
    assert {(n, v, w.rows) for n, v, w in drifts.readings() if w.window == "1h"} == {
        ("m", "1", 20), ("m", "2", 0)}
    drifts.keep([("m", "2")])
    assert {(n, v) for n, v, _ in drifts.readings()} == {("m", "2")}


def test_counting_never_fails_a_batch(profile: Profile, caplog: pytest.LogCaptureFixture) -> None:
    drifts = tracker(Clock())
    model = drifts.watch(Fixed(features=("normal",)), profile)  # one column, four bins
    scores = model.predict(np.zeros((5, 3), dtype=np.float32)[:, :0])
    assert scores.tolist() == [0.5] * 5
    assert "drift of m 1 not counted" in caplog.text


def test_window_labels_parse_and_refuse_nonsense() -> None:
    assert window("1h").seconds == 3600 and window("1h").width == 60
    assert window("24h", buckets=24).width == 3600 and window("90s").seconds == 90
    with pytest.raises(ValueError, match="not a window"):
        window("1w")
