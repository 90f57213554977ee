"""The monitor report's PSI section: the scores' feature vectors against each model's training
profile, equal to :func:`stream_infer.drift.psi` of the same rows, in the table, the JSON and
the page."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from stream_infer import drift as drift_mod
from stream_infer.monitor import report
from stream_infer.monitor.join import DAY_MS, JoinState
from stream_infer.records import ScoreRecord

FEATURES = ["amount", "count_7d"]
FIRST_DAY = 20_400
ROWS = 3000


def training() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.c_[rng.lognormal(3, 1, 20_000), rng.poisson(4, 20_000)].astype(np.float64)
    return x, rng.uniform(0, 1, 20_000)


def live() -> list[ScoreRecord]:
    """``m:1`` scores ROWS events: amount as in training, count_7d shifted by two; a few
    nulls; each event scored again later with other values (the join keeps the first); one
    event outside the range."""
    rng = np.random.default_rng(1)
    amount, count = rng.lognormal(3, 1, ROWS), rng.poisson(4, ROWS) + 2
    scores = rng.uniform(0, 1, ROWS)
    out = []
    for i in range(ROWS):
        time = (FIRST_DAY + i % 10) * DAY_MS + i
        values: dict[str, float | None] = {"amount": float(amount[i]),
                                           "count_7d": None if i % 500 == 0 else float(count[i])}
        for scored_at, feats, score in ((time + 5, values, float(scores[i])),
                                        (time + 900, {"amount": 1e9, "count_7d": 99.0}, 0.5)):
            out.append(ScoreRecord(f"ev-{i}", f"card-{i % 50}", score, "m", "1", time,
                                   scored_at, feats, shadow=False, threshold=0.9,
                                   alerted=score >= 0.9))
    out.append(ScoreRecord("late", "card-0", 0.1, "m", "1", (FIRST_DAY + 30) * DAY_MS, 0,
                           {"amount": 1e9, "count_7d": 99.0}, threshold=0.9, alerted=False))
    return out


@pytest.fixture(scope="module")
def profile() -> drift_mod.Profile:
    x, s = training()
    return drift_mod.fit_profile(x, FEATURES, s)


def vectors(records: list[ScoreRecord]) -> report.FeatureVectors:
    found = report.FeatureVectors(FIRST_DAY * DAY_MS, (FIRST_DAY + 10) * DAY_MS)
    for i, record in enumerate(reversed(records)):  # arrival order does not matter
        if i % 2:
            found.add_bytes(msgspec.json.encode(record))
        else:
            found.add(record)
    found.add_bytes(b"not json")
    return found


def test_psi_per_feature_equals_drift_psi_of_the_same_rows(
        profile: drift_mod.Profile) -> None:
    records = live()
    got = report.drift(vectors(records), {("m", "1"): profile})[("m", "1")]
    first = records[:-1:2]  # each event's first score
    assert all(r.scored_at == r.event_time + 5 for r in first)
    assert got.rows == len(first) == ROWS
    by_name = {f.feature: f for f in got.features}
    assert list(by_name) == [*FEATURES, drift_mod.SCORE]
    for name in FEATURES:
        values = np.array([np.nan if r.features[name] is None else r.features[name]
                           for r in first])
        bins = profile.features[name]
        assert by_name[name].psi == pytest.approx(
            drift_mod.psi(bins.counts(values), bins.shares), abs=1e-12)
        assert by_name[name].no_drift == drift_mod.no_drift(bins.shares, ROWS, profile.rows)
    assert profile.score is not None
    assert by_name[drift_mod.SCORE].psi == pytest.approx(drift_mod.psi(
        profile.score.counts([r.score for r in first]), profile.score.shares), abs=1e-12)
    assert by_name["count_7d"].psi > report.PSI_MAJOR
    assert by_name["amount"].psi < by_name["amount"].no_drift.p99


def test_the_table_the_json_and_the_page_show_it(profile: drift_mod.Profile) -> None:
    records = live()
    state = JoinState(ttl_days=None, max_scores=None, max_labels=None)
    for record in records:
        state.add_score(record)
    options = report.ReportOptions(FIRST_DAY * DAY_MS, (FIRST_DAY + 10) * DAY_MS,
                                   (FIRST_DAY + 30) * DAY_MS, draws=50)
    measured = report.drift(vectors(records), {("m", "1"): profile})
    built = report.build(state, options, drift=measured)
    text = report.table(built)
    assert f"PSI over {ROWS:,} scored events against the training profile" in text
    lines = [line for line in text.splitlines() if line.strip().startswith("count_7d")]
    assert len(lines) == 1 and lines[0].split()[-1] == "marked", text
    doc = json.loads(json.dumps(report.as_json(built)))
    section = doc["models"][0]["drift"]
    assert section["rows"] == ROWS
    assert {f["feature"]: f["psi"] for f in section["features"]} == {
        f.feature: f.psi for f in measured[("m", "1")].features}
    pytest.importorskip("matplotlib")
    page = report.html_page(built, state.rows(options.from_ms, options.to_ms), options)
    assert "PSI against training: m:1" in page


def test_no_profile_no_section(tmp_path: Path) -> None:
    records = live()
    assert report.drift(vectors(records), {}) == {}
    state = JoinState(ttl_days=None)
    for record in records:
        state.add_score(record)
    end = (FIRST_DAY + 40) * DAY_MS
    built = report.build(state, report.ReportOptions(0, end, end, draws=10))
    assert "PSI" not in report.table(built) and "drift" not in report.as_json(built)["models"][0]


def test_profiles_come_from_the_manifests(tmp_path: Path, profile: drift_mod.Profile) -> None:
    manifest = {"name": "m", "version": "1", "format": "xgboost-json",
                "model_file": "model.json", "sha256": "0" * 64, "features": FEATURES,
                "threshold": 0.9, "profile": profile.to_json()}
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "manifest.json").write_text(json.dumps({**manifest, "version": "2",
                                                                    "profile": {}}))
    found = report.load_profiles(tmp_path, [("m", "1"), ("m", "2"), ("gone", "1")])
    assert list(found) == [("m", "1")]
    assert found["m", "1"].features["amount"].to_json() == profile.features["amount"].to_json()


def test_monitor_report_reads_the_profiles_from_the_models_dir(
        tmp_path: Path, profile: drift_mod.Profile, capsys: pytest.CaptureFixture[str]) -> None:
    """``stream-infer monitor report --scores --labels --models-dir``: the command a user
    runs shows and writes the same PSI as the report module on the same records."""
    from stream_infer.cli import main

    manifest = {"name": "m", "version": "1", "format": "xgboost-json",
                "model_file": "model.json", "sha256": "0" * 64, "features": FEATURES,
                "threshold": 0.9, "profile": profile.to_json()}
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "models" / "m" / "1" / "manifest.json").write_text(json.dumps(manifest))
    records = live()
    (tmp_path / "scores.jsonl").write_bytes(b"\n".join(msgspec.json.encode(r) for r in records))
    (tmp_path / "labels.jsonl").write_text(json.dumps(
        {"event_id": "ev-1", "label": 1, "label_time": (FIRST_DAY + 20) * DAY_MS}) + "\n")
    end = (FIRST_DAY + 10) * DAY_MS
    assert main(["monitor", "report", "--from", str(FIRST_DAY * DAY_MS), "--to", str(end),
                 "--as-of", str(end + 30 * DAY_MS), "--scores", str(tmp_path / "scores.jsonl"),
                 "--labels", str(tmp_path / "labels.jsonl"), "--models-dir",
                 str(tmp_path / "models"), "--draws", "20", "--json",
                 str(tmp_path / "report.json")]) == 0
    assert f"PSI over {ROWS:,} scored events against the training profile" in (
        capsys.readouterr().out)
    written = json.loads((tmp_path / "report.json").read_text())["models"][0]["drift"]
    want = report.drift(vectors(records), {("m", "1"): profile})[("m", "1")]
    assert {f["feature"]: f["psi"] for f in written["features"]} == {
        f.feature: f.psi for f in want.features}
