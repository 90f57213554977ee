"""The monitor on a real broker: score records and labels (late, duplicated, corrected) in
their topics; ``monitor report`` reads them to the end of log and its figures equal
scikit-learn's on the same rows; ``monitor run`` exports the same figures on /metrics, and a
restart, which reads everything again, changes none of them."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from stream_infer.service.ports import server_ports
from tests.support.brokers import Broker
from tests.support.configs import write_config
from tests.support.metrics import Samples, scrape
from tests.support.service import Service, cli
from tests.support.topics import produce
from tests.support.wait import wait_until
from tests.unit.monitor.streams import DAY_MS, Stream, stream, truth

pytestmark = pytest.mark.integration
HORIZON = 7
NOW = int(time.time() * 1000)
S = stream(events=300, cards=30, seed=3, as_of_ms=NOW)


def config(tmp_path: Path, broker: Broker, scores: str, labels: str) -> Path:
    return write_config(tmp_path / "monitor.toml", {"kafka": {
        "bootstrap_servers": broker.bootstrap_servers, "group_id": f"g-{uuid.uuid4().hex[:8]}",
        "scores_topic": scores, "labels_topic": labels, "session_timeout_ms": 6000}})


def publish(broker: Broker, scores: str, labels: str) -> None:
    produce(broker.bootstrap_servers, scores,
            [(r.card_id.encode(), msgspec.json.encode(r)) for r in S.scores])
    produce(broker.bootstrap_servers, labels, [
        (None, msgspec.json.encode({"event_id": x.event_id, "label": x.label,
                                    "label_time": x.label_time})) for x in S.labels])


def rows(model: str, first_day: int, last_day: int) -> dict[str, Any]:
    """The model's rows of days [first_day, last_day] with their final labels (-1: none)."""
    known = truth(S)
    mine = [r for r in S.scores
            if r.model_name == model and first_day <= r.event_time // DAY_MS <= last_day]
    return {"score": np.array([r.score for r in mine]),
            "alerted": np.array([bool(r.alerted) for r in mine]),
            "day": np.array([r.event_time // DAY_MS for r in mine]),
            "label": np.array([known.get(r.event_id, (-1, 0, 0))[0] for r in mine])}


def sklearn_figures(r: dict[str, Any], mature: np.ndarray) -> dict[str, float]:
    known = r["label"] >= 0
    y = r["label"][mature] == 1
    return {"precision": precision_score(r["label"][known], r["alerted"][known]),
            "recall": recall_score(r["label"][known], r["alerted"][known]),
            "label_coverage": known.mean(),
            "auc": roc_auc_score(y, r["score"][mature]),
            "average_precision": average_precision_score(y, r["score"][mature])}


def test_report_and_run_on_the_broker(broker: Broker, make_topics: Any,
                                      tmp_path: Path) -> None:
    scores, labels = make_topics(2, count=2)
    publish(broker, scores, labels)
    path = config(tmp_path, broker, scores, labels)
    today = NOW // DAY_MS
    first, last = today - 20, today
    out = tmp_path / "report.json"
    result = cli("monitor", "report", "--config", str(path), "--from", str(first * DAY_MS),
                 "--to", str((last + 1) * DAY_MS), "--as-of", str(NOW), "--k", "10",
                 "--draws", "200", "--json", str(out))
    assert "champ:1 (champion)" in result.stdout
    doc = json.loads(out.read_text())
    champ = next(m for m in doc["models"] if m["model"] == "champ")
    r = rows("champ", first, last)
    want = sklearn_figures(r, (r["day"] + 1 + HORIZON) * DAY_MS <= NOW)
    for name, value in want.items():
        assert champ["all"][name] == pytest.approx(value, abs=1e-12), name
    assert champ["all"]["events"] == len(r["score"])
    assert f"scores applied {len(S.scores):,}" in doc["records"]
    (comparison,) = doc["comparisons"]
    assert comparison["challenger"] == "chal:1"

    port = server_ports()
    command = ["-m", "stream_infer", "monitor", "run", "--config", str(path), "--host",
               "127.0.0.1", "--port", str(port), "--refresh-s", "0.3", "--k", "10"]
    for attempt in range(2):  # the second run is a restart: it reads everything again
        with Service(path, f"monitor-{attempt}", command=command) as monitor:
            metrics, day = wait_for_everything(monitor, port, S)
            matured_last = day - HORIZON - 1
            r = rows("chal", matured_last - 6, matured_last)
            want = sklearn_figures(r, np.ones(len(r["score"]), dtype=bool))
            for name, value in want.items():
                got = metrics.value(f"stream_infer_monitor_{name}", model="chal",
                                    cohort_window="matured_7d")
                assert got == pytest.approx(value, abs=1e-12), name
            assert metrics.value("stream_infer_monitor_events", model="chal",
                                 cohort_window="matured_7d") == len(r["score"])
            assert monitor.stop(30) == 0


def wait_for_everything(monitor: Service, port: int, s: Stream) -> tuple[Samples, int]:
    """/metrics once the monitor has read every score and label and published them, and the
    UTC day its figures were computed on: ``monitor run`` judges maturity by the wall clock,
    so a scrape is kept only when a refresh (0.3 s) before it fell on the same day (a run
    across midnight takes the next scrape)."""
    found: list[tuple[Samples, int]] = []

    def read_all() -> bool:
        assert monitor.running(), monitor.log_tail()
        day = int((time.time() - 1) * 1000) // DAY_MS
        try:
            page = scrape(port)
        except OSError:
            return False
        found[:] = [(page, day)]
        return (day == int(time.time() * 1000) // DAY_MS
                and page.value("stream_infer_monitor_scores_total") == len(s.scores)
                and page.value("stream_infer_monitor_labels_total") == len(s.labels))

    wait_until(read_all, 30, "the monitor to read both topics")
    return found[0]
