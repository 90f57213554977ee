"""``monitor report`` from JSON-lines files (terminal, JSON, HTML), and the metrics page a
``monitor run`` serves, on the same stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.cli import main
from stream_infer.monitor.feed import Feed
from stream_infer.monitor.join import DAY_MS, JoinState
from stream_infer.monitor.metrics import MetricsServer
from stream_infer.monitor.run import snapshot

from .streams import AS_OF, encoded, shuffled, stream

S = stream()


def write(tmp_path: Path) -> tuple[Path, Path]:
    scores, labels = tmp_path / "scores.jsonl", tmp_path / "labels.jsonl"
    wire = encoded(shuffled(S, seed=11))
    scores.write_bytes(b"".join(v + b"\n" for k, v in wire if k == "scores") + b"not json\n")
    labels.write_bytes(b"".join(v + b"\n" for k, v in wire if k == "labels"))
    return scores, labels


def test_report_from_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, labels = write(tmp_path)
    first_day = min(r.event_time for r in S.scores) // DAY_MS
    args = ["monitor", "report", "--scores", str(scores), "--labels", str(labels),
            "--from", str((first_day + 2) * DAY_MS), "--to", "2026-11-30", "--as-of",
            "2026-11-30T00:00:00Z", "--k", "10", "--draws", "100",
            "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "champ:1 (champion)" in out and "chal:1 (challenger)" in out
    assert "without a label as genuine" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [m["role"] for m in doc["models"]] == ["champion", "challenger"]
    champ = doc["models"][0]
    kept = [r for r in S.scores if r.model_name == "champ"
            and r.event_time >= (first_day + 2) * DAY_MS]
    assert champ["all"]["events"] == len(kept)
    assert doc["models"][0]["days"][0]["cohort"] != "all"
    assert "scores undecodable 1" in doc["records"]
    (comparison,) = doc["comparisons"]
    assert comparison["average_precision"]["verdict"] == "challenger ahead"
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 2 and "Realized accuracy" in page
    # the same figures as a second read of the same files (idempotent end to end)
    assert main([*args[:-4], "--json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == doc


def test_report_needs_both_files_or_a_config(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    scores, _ = write(tmp_path)
    assert main(["monitor", "report", "--scores", str(scores), "--from", "2026-11-01",
                 "--to", "2026-11-30"]) == 2
    assert "both --scores and --labels" in capsys.readouterr().err


def test_the_metrics_page_shows_the_window_figures() -> None:
    feed = Feed(JoinState())
    for kind, value in encoded(shuffled(S, seed=12)):
        (feed.score if kind == "scores" else feed.label)(value)
    snap = snapshot(feed, as_of_ms=AS_OF, horizon_days=7, k=10)
    server = MetricsServer()
    server.publish(snap)
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(server.registry).decode())}
    matured = {c.model: c for c in snap.windows if c.cohort == "matured_7d"}
    samples = {(s.labels["model"], s.labels["cohort_window"]): s.value
               for s in families["stream_infer_monitor_precision"].samples}
    assert samples["champ", "matured_7d"] == pytest.approx(matured["champ"].precision)
    auc = {s.labels["model"]: s.value for s in families["stream_infer_monitor_auc"].samples
           if s.labels["cohort_window"] == "matured_7d"}
    assert auc["chal"] == pytest.approx(matured["chal"].auc)
    assert not [s for s in families["stream_infer_monitor_auc"].samples
                if s.labels["cohort_window"] == "1d"]  # no mature day in it: no sample
    read = {s.labels["outcome"]: s.value
            for s in families["stream_infer_monitor_labels"].samples}
    assert read["applied"] + read.get("unchanged", 0) == len(S.labels)
    last = families["stream_infer_monitor_last_label_timestamp_seconds"].samples
    assert {s.labels["model"] for s in last} == {"champ", "chal"}
