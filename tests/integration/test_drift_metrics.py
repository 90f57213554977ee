"""Drift as a user sees it: a running service serving a model whose manifest has a reference
profile shows PSI per feature and window on /metrics, equal to PSI computed offline from the
feature vectors and scores it logged to the scores topic."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.drift import SCORE, Bins, fit_profile, no_drift, psi
from stream_infer.offline import simulate
from tests.support.configs import MODELS, service_config, write_config
from tests.support.population import population
from tests.support.service import Service, cli
from tests.support.topics import read_all
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration
EVENTS = 600


def profiled_demo(root: Path) -> Path:
    """The shipped demo model, its manifest given a profile of simulated training rows."""
    target = root / "demo" / "1"
    shutil.copytree(MODELS / "demo" / "1", target)
    model = XGBoostModel.load(target, nthread=1)
    pop = population()
    rows = list(simulate.training_rows(pop, simulate.transactions(pop, count=4000, seed=9),
                                       list(model.features)))
    matrix = np.array([[math.nan if r[f] is None else r[f] for f in model.features]
                       for r in rows], dtype=np.float32)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["profile"] = fit_profile(matrix, model.features, model.predict(matrix)).to_json()
    (target / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_metrics_show_psi_per_feature_as_computed_from_the_logged_vectors(
        tmp_path: Path, broker: Any) -> None:
    run_id = uuid.uuid4().hex[:8]
    models = profiled_demo(tmp_path / "models")
    with EmbeddedRedis() as redis_server:
        config = write_config(tmp_path / "config.toml", service_config(
            run_id, broker.bootstrap_servers, redis_server.url, model={"dir": str(models)},
            drift={"min_sample": 200, "windows": ["15m", "24h"]}))
        with Service(config, "service") as service:
            wait_until(lambda: service.up() and service.get("/readyz")[0] == 200, 60,
                       "the service to be ready", poll_s=0.3)
            cli("simulate", "--config", str(config), "--count", str(EVENTS), "--cards", "100")
            wait_until(lambda: service.metrics().value(
                "stream_infer_events_scored_total") == EVENTS, 60, "every event scored",
                poll_s=0.3)
            metrics = service.metrics()
            assert service.stop() == 0, service.log_tail()

    profile = json.loads((models / "demo" / "1" / "manifest.json").read_text())["profile"]
    bins = {name: Bins.from_json(b) for name, b in profile["features"].items()}
    bins[SCORE] = Bins.from_json(profile[SCORE])
    logged = [json.loads(r.value) for r in read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(logged) == EVENTS
    offline = {name: np.array([math.nan if r["features"][name] is None else r["features"][name]
                               for r in logged]) for name in profile["features"]}
    offline[SCORE] = np.array([r["score"] for r in logged])
    for span in ("15m", "24h"):
        where = {"model": "demo", "version": "1", "window": span}
        assert metrics.value("stream_infer_psi_rows", **where) == EVENTS
        assert {s.labels["feature"] for s in metrics.series("stream_infer_psi", **where)} == (
            set(offline))
        for name, values in offline.items():
            shown = metrics.value("stream_infer_psi", **where, feature=name)
            assert shown == pytest.approx(psi(bins[name].counts(values), bins[name].shares),
                                          rel=1e-12, abs=1e-15), name
            assert metrics.value("stream_infer_psi_expected", **where, feature=name) == (
                pytest.approx(no_drift(bins[name].shares, EVENTS, profile["rows"]).expected))
            assert metrics.value("stream_infer_psi_expected_p99", **where, feature=name) >= (
                metrics.value("stream_infer_psi_expected", **where, feature=name))
