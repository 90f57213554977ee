"""Drift in the service, in process: models loaded as the service loads them count each batch,
and /metrics shows PSI per model, feature and window equal to PSI computed offline on the
feature vectors the scores topic carries; a model without a profile exports none."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import xgboost
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.adapters.memory import MemoryFeatureStore, MemorySink, MemorySource, Record
from stream_infer.config import FeatureView, Settings
from stream_infer.decode import JsonDecoder
from stream_infer.drift import SCORE, DriftTracker, Profile, fit_profile, no_drift, psi, window
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.registry import write_model
from stream_infer.runner import Runner, RunnerConfig
from stream_infer.service.app import load_models
from stream_infer.service.metrics import Endpoints, ServiceMetrics

VIEWS = {"card": FeatureView(key="card:{card_id}", fields=["risk"])}
FEATURES = ["amount", "card.risk"]
CARDS = 50
STORE = {f"card:c{i}": {"risk": str(i / CARDS).encode()} for i in range(CARDS)}
Labels = tuple[tuple[str, str], ...]


def booster() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    dm = xgboost.DMatrix(x, label=(x[:, 1] > 0).astype(int), feature_names=FEATURES)
    trained = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            dm, 4)
    return bytes(trained.save_raw("json"))


def training_profile() -> Profile:
    """Amounts 10-110, risk as the store has it, and a spread of scores."""
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.uniform(10, 110, 5000), rng.integers(0, CARDS, 5000) / CARDS])
    return fit_profile(rows.astype(np.float32), FEATURES, rng.uniform(0, 1, 5000))


def event(n: int, amount: float) -> bytes:
    return json.dumps({"event_id": f"e{n}", "event_time": 1_700_000_000_000 + n,
                       "card_id": f"c{n % CARDS}", "merchant_id": "m", "amount": amount,
                       "currency": "EUR"}).encode()


def samples(text: str) -> dict[tuple[str, Labels], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(metrics: ServiceMetrics) -> dict[tuple[str, Labels], float]:
    status: list[str] = []
    body = b"".join(Endpoints(metrics, {})({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"},
                                           lambda s, h: status.append(s)))
    return samples(body.decode())


def labels(window: str, feature: str | None = None, name: str = "fraud") -> Labels:
    found = {"model": name, "version": "1", "window": window}
    if feature:
        found["feature"] = feature
    return tuple(sorted(found.items()))


def test_metrics_show_psi_per_feature_equal_to_an_offline_computation(tmp_path: Path) -> None:
    profile = training_profile()
    write_model(tmp_path, "fraud", "1", booster(), features=FEATURES, threshold=0.5,
                profile=profile.to_json())
    write_model(tmp_path, "plain", "1", booster(), features=FEATURES, threshold=0.5)
    metrics = ServiceMetrics()
    metrics.watch_drift(DriftTracker([window("1h"), window("24h")], min_sample=600))
    settings = Settings(features=VIEWS)
    scoring = load_models(settings, [tmp_path / "fraud" / "1", tmp_path / "plain" / "1"],
                          metrics.drift)
    metrics.serving("fraud", "1", [("plain", "1")])
    pipeline = Pipeline(decoder=JsonDecoder(), models=scoring, store=MemoryFeatureStore(STORE),
                        topics=Topics("alerts", "dlq", "scores"),
                        encoder=msgspec.json.Encoder().encode)
    rng = np.random.default_rng(2)
    amounts = np.r_[rng.uniform(10, 110, 500), rng.uniform(60, 160, 300)]  # half drifted
    sink = MemorySink()
    runner = Runner(MemorySource([Record(event(n, float(a)), _offset=n)
                                  for n, a in enumerate(amounts)]),
                    sink, pipeline, RunnerConfig(max_records=100), observer=metrics)

    runner.run(max_events=500)
    got = scrape(metrics)
    assert got[("stream_infer_psi_rows", labels("1h"))] == 500
    assert not [k for k in got if k[0] == "stream_infer_psi"], "below the minimum sample"

    runner = Runner(runner.source, sink, pipeline, RunnerConfig(max_records=100),
                    observer=metrics)
    runner.run(max_events=300)
    got = scrape(metrics)
    records = [json.loads(o.value) for o in sink.delivered if o.topic == "scores"]
    champion = [r for r in records if r["model_name"] == "fraud"]
    assert len(champion) == 800
    offline = {f: np.array([r["features"][f] for r in champion]) for f in FEATURES}
    offline[SCORE] = np.array([r["score"] for r in champion])
    bins = {**profile.features, SCORE: profile.score}
    for feature, values in offline.items():
        for span in ("1h", "24h"):
            shares = bins[feature].shares  # type: ignore[union-attr]
            expected = psi(bins[feature].counts(values), shares)  # type: ignore[union-attr]
            assert got[("stream_infer_psi", labels(span, feature))] == expected
            assert got[("stream_infer_psi_expected", labels(span, feature))] == (
                no_drift(shares, 800, profile.rows).expected)
    assert got[("stream_infer_psi", labels("1h", "amount"))] > 0.25  # the drifted one
    assert got[("stream_infer_psi", labels("1h", "card.risk"))] < (
        got[("stream_infer_psi_expected_p99", labels("1h", "card.risk"))])
    assert not [k for k in got if k[0].startswith("stream_infer_psi")
                and ("model", "plain") in k[1]], "a model without a profile reports no PSI"


def test_models_no_longer_served_leave_the_metrics(tmp_path: Path) -> None:
    for version in ("1", "2"):
        write_model(tmp_path, "fraud", version, booster(), features=FEATURES, threshold=0.5,
                    profile=training_profile().to_json())
    metrics = ServiceMetrics()
    metrics.watch_drift(DriftTracker([window("1h")], min_sample=1))
    settings = Settings(features=VIEWS)
    load_models(settings, [tmp_path / "fraud" / "1"], metrics.drift)
    metrics.serving("fraud", "1")
    assert ("stream_infer_psi_rows", labels("1h")) in scrape(metrics)
    load_models(settings, [tmp_path / "fraud" / "2"], metrics.drift)
    metrics.serving("fraud", "2")
    versions = {dict(k[1])["version"] for k in scrape(metrics) if k[0] == "stream_infer_psi_rows"}
    assert versions == {"2"}


def test_without_a_tracker_nothing_about_drift_is_exported() -> None:
    assert not [k for k in scrape(ServiceMetrics()) if "psi" in k[0]]
