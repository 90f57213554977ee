"""``stream-infer demo --loop`` end to end (issue 24's "done when"): events and delayed labels
flow, a shadow challenger is compared with the champion, promoting it swaps the serving model
without a restart, and the monitor report's precision, recall and PSI equal an offline
computation on the records the demo read back from the topics."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score

from stream_infer import drift
from stream_infer.registry import read_manifest
from tests.support.service import cli

pytestmark = pytest.mark.integration
MODELS = Path(__file__).resolve().parents[2] / "models"


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    out_dir = tmp_path_factory.mktemp("loop")
    result = cli("demo", "--loop", "--days", "20", "--customers", "150", "--terminals", "300",
                 "--rate", "2000", "--models-dir", str(MODELS), "--out-dir", str(out_dir),
                 "--json", str(out_dir / "given.json"), timeout=180)
    return result.stdout, json.loads((out_dir / "given.json").read_text()), out_dir


def first_scores(scores: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per version, per event: the record the join keeps (earliest scored_at, lower score)."""
    kept: dict[str, dict[str, dict[str, Any]]] = {}
    for r in scores:
        held = kept.setdefault(r["model_version"], {})
        old = held.get(r["event_id"])
        if old is None or (r["scored_at"], r["score"]) < (old["scored_at"], old["score"]):
            held[r["event_id"]] = r
    return kept


def test_promotion_swaps_the_serving_model_without_a_restart(
        run: tuple[str, dict[str, Any], Path]) -> None:
    out, doc, out_dir = run
    loop = doc["loop"]
    assert "swapped the service serves demo v3 (shadow v2)" in out, out
    # one serve() of one runner consumed both parts, before and after the swap
    assert loop["one_run"] == {"consumed": loop["payments"] + loop["labels"],
                               "scored": loop["payments"], "labels": loop["labels"]}
    assert loop["pointer_before"] == "2" and loop["swapped_after_s"] < 5
    cut = loop["cut_ms"]
    scores, alerts = jsonl(out_dir / "scores.jsonl"), jsonl(out_dir / "alerts.jsonl")
    roles = Counter((r["event_time"] >= cut, r["model_version"], r["shadow"]) for r in scores)
    before, after = loop["payments_before"], loop["payments"] - loop["payments_before"]
    assert roles == {(False, "2", False): before, (False, "3", True): before,
                     (True, "3", False): after, (True, "2", True): after}
    assert {(a["event_time"] >= cut, a["model_version"]) for a in alerts} == {
        (False, "2"), (True, "3")}
    assert loop["served"]["after"]["scores v3 champion"] == after > 0


def test_realized_precision_and_recall_equal_scikit_learn_s(
        run: tuple[str, dict[str, Any], Path]) -> None:
    out, doc, out_dir = run
    labels = {lab["event_id"]: lab["label"] for lab in jsonl(out_dir / "labels.jsonl")}
    kept = first_scores(jsonl(out_dir / "scores.jsonl"))
    assert {m["version"]: m["role"] for m in doc["models"]} == {"2": "champion",
                                                               "3": "challenger"}
    for model in doc["models"]:
        rows = [r for r in kept[model["version"]].values() if r["event_id"] in labels]
        y = [labels[r["event_id"]] for r in rows]
        alerted = [int(r["alerted"]) for r in rows]
        figures = model["all"]
        assert figures["labelled"] == len(rows) == len(kept[model["version"]])
        assert figures["precision"] == pytest.approx(precision_score(y, alerted), abs=1e-12)
        assert figures["recall"] == pytest.approx(recall_score(y, alerted), abs=1e-12)
        assert re.search(rf"demo:{model['version']} \({model['role']}\): .*precision "
                         rf"{figures['precision']:.4f}, recall {figures['recall']:.4f}", out)


def test_psi_equals_drift_psi_of_the_logged_vectors(
        run: tuple[str, dict[str, Any], Path]) -> None:
    _, doc, out_dir = run
    kept = first_scores(jsonl(out_dir / "scores.jsonl"))
    for model in doc["models"]:
        profile = drift.Profile.from_json(read_manifest(MODELS / "demo" / model["version"])
                                          .profile)
        rows = [kept[model["version"]][e] for e in sorted(kept[model["version"]])]
        got = {f["feature"]: f["psi"] for f in model["drift"]["features"]}
        assert set(got) == {*profile.features, drift.SCORE}
        assert model["drift"]["rows"] == len(rows)
        for name, bins in profile.features.items():
            values = np.array([np.nan if r["features"].get(name) is None
                               else r["features"][name] for r in rows], dtype=np.float64)
            assert got[name] == pytest.approx(drift.psi(bins.counts(values), bins.shares),
                                              abs=1e-12), name
        assert profile.score is not None
        assert got[drift.SCORE] == pytest.approx(drift.psi(
            profile.score.counts([r["score"] for r in rows]), profile.score.shares), abs=1e-12)


def test_the_challenger_is_compared_with_the_champion(
        run: tuple[str, dict[str, Any], Path]) -> None:
    out, doc, out_dir = run
    (comparison,) = doc["comparisons"]
    assert (comparison["champion"], comparison["challenger"]) == ("demo:2", "demo:3")
    assert comparison["events"] > 0 and comparison["frauds"] > 0
    assert comparison["average_precision"]["verdict"]
    assert "demo:3 (challenger) against demo:2 (champion)" in out
    assert re.search(r"PSI against training, demo:2 .* top 5: \S+ \d", out)
    assert json.loads((out_dir / "report.json").read_text()) == doc
