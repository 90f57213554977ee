"""``model train`` stores the training rows' reference profile in the manifest; rows held out
of training drift no more than chance allows, a shifted feature does, and manifests without a
profile (the shipped demo model, older versions) still load and verify."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.drift import SCORE, Profile, no_drift, psi
from stream_infer.errors import ModelIntegrityError
from stream_infer.offline import simulate
from stream_infer.offline.training import train
from stream_infer.registry import load_verified, read_manifest

ROOT = Path(__file__).resolve().parents[3]
FEATURES = simulate.DEMO_FEATURES


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """A training CSV, and rows of the same simulation held out of it (a random quarter)."""
    pop = simulate.make_population(cards=500, merchants=60, seed=3)
    folder = tmp_path_factory.mktemp("profile")
    every = folder / "every.csv"
    simulate.write_training_csv(every, simulate.training_rows(
        pop, simulate.transactions(pop, count=20_000, seed=4)))
    with every.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    held = np.random.default_rng(11).random(len(rows)) < 0.25
    training = folder / "train.csv"
    with training.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r, out in zip(rows, held, strict=True) if not out)
    return training, [r for r, out in zip(rows, held, strict=True) if out]


@pytest.fixture(scope="module")
def model_dir(split: tuple[Path, list[dict[str, str]]],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    report = train(split[0], models_dir=tmp_path_factory.mktemp("models"), name="fraud",
                   n_estimators=30, max_depth=4)
    return report.model_dir


def matrix(rows: list[dict[str, str]]) -> npt.NDArray[np.float32]:
    return np.array([[float(r[f]) if r[f] not in ("", None) else np.nan for f in FEATURES]
                     for r in rows], dtype=np.float32)


def test_the_manifest_holds_a_profile_of_every_feature_and_the_score(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    profile = Profile.from_json(manifest.profile)
    assert list(profile.features) == FEATURES and profile.score is not None
    assert profile.rows == manifest.training["train_rows"]
    for name, bins in profile.features.items():
        assert bins.shares.sum() == pytest.approx(1.0), name
    assert profile.features["amount"].kind == "numeric"
    assert len(profile.features["amount"].edges) == 9
    assert profile.features["attributes.hour_of_day"].kind == "categorical"  # few values
    on_disk = json.loads((model_dir / "manifest.json").read_text())["profile"]
    assert Profile.from_json(on_disk).to_json() == manifest.profile  # it round-trips


def test_held_out_rows_stay_below_the_no_drift_p99(
        model_dir: Path, split: tuple[Path, list[dict[str, str]]]) -> None:
    profile = Profile.from_json(read_manifest(model_dir).profile)
    held = matrix(split[1])
    scores = XGBoostModel.load(model_dir, nthread=1).predict(held)
    columns = {**{f: held[:, j] for j, f in enumerate(FEATURES)}, SCORE: scores}
    assert profile.score is not None
    bins_of = {**profile.features, SCORE: profile.score}
    for name, values in columns.items():
        bins = bins_of[name]
        value = psi(bins.counts(values), bins.shares)
        assert value <= no_drift(bins.shares, len(held), profile.rows).p99, name  # 0 <= 0
        assert value < 0.05, name


def test_a_one_sd_shift_crosses_0_25_for_that_feature_only(
        model_dir: Path, split: tuple[Path, list[dict[str, str]]]) -> None:
    profile = Profile.from_json(read_manifest(model_dir).profile)
    held = matrix(split[1])
    j = FEATURES.index("attributes.distance_km")
    held[:, j] += np.nanstd(held[:, j])
    values = {f: psi(profile.features[f].counts(held[:, i]), profile.features[f].shares)
              for i, f in enumerate(FEATURES)}
    assert values["attributes.distance_km"] > 0.25
    assert max(v for f, v in values.items() if f != "attributes.distance_km") < 0.25


def test_a_model_without_a_profile_loads_and_tampering_still_fails(model_dir: Path,
                                                                   tmp_path: Path) -> None:
    demo = ROOT / "models" / "demo" / "1"
    assert read_manifest(demo).profile == {}
    assert XGBoostModel.load(demo, nthread=1).features
    copy = tmp_path / "fraud" / "1"
    shutil.copytree(model_dir, copy)
    assert load_verified(copy).manifest.profile  # a profile is no part of the digest
    (copy / "model.json").write_bytes((copy / "model.json").read_bytes() + b" ")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_verified(copy)
