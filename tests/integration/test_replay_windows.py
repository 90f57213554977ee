"""``stream-infer replay --labels``: a backtest replays with the same windows.

A tiny model reads every window feature and the amount. A Handbook history (time-ordered,
labels a week late, one bad label line) is backfilled with ``features backfill``, then
replayed from the file and from a topic through the live pipeline with the same labels:
every feature vector the replay served equals the backfill's row, bit for bit, and every
score equals the model's score of that row. The bad label line is among the replay's dead
letters with its reason; ``--jobs 2`` is refused with windows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from stream_infer.adapters.xgboost import XGBoostModel
from tests.support.brokers import Broker
from tests.support.configs import write_config
from tests.support.service import cli
from tests.support.topics import produce
from tests.support.windows import (
    WEEK_WINDOWS,
    definition,
    handbook_history,
    json_lines,
    train_on_noise,
)

pytestmark = pytest.mark.integration
NAMES = list(definition(WEEK_WINDOWS).names)
FEATURES = [*NAMES, "amount"]
BAD_LABEL = b'{"event_id": "x", "label": 2, "label_time": 1}'


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The history and labels files, a config and the model over window features, and the
    backfill of the history."""
    root = tmp_path_factory.mktemp("replay-windows")
    events, labels = handbook_history()
    assert [e["event_time"] for e in events] == sorted(e["event_time"] for e in events)
    lines = {"events": json_lines(events), "labels": json_lines(labels)}
    lines["labels"].insert(len(labels) // 2, BAD_LABEL)
    for name, encoded in lines.items():
        (root / f"{name}.jsonl").write_bytes(b"\n".join(encoded) + b"\n")
    train_on_noise(root / "models", FEATURES)
    config = write_config(root / "config.toml", {
        "model": {"dir": str(root / "models"), "name": "win"}, "features": {},
        "windows": WEEK_WINDOWS})
    cli("features", "backfill", str(root / "events.jsonl"), "--labels",
        str(root / "labels.jsonl"), "--out", str(root / "backfill.parquet"), "--config",
        str(config))
    return {"root": root, "config": config, "labels": len(labels),
            "backfill": pq.read_table(root / "backfill.parquet").to_pydict()}


def replay(history: dict[str, Any], out: Path, *source: str, check: bool = True) -> Any:
    return cli("replay", *source, "--labels", str(history["root"] / "labels.jsonl"), "--out",
               str(out), "--config", str(history["config"]), check=check)


def check_served(history: dict[str, Any], out: Path) -> None:
    """Every event scored with the backfill's row, bit for bit, and its score."""
    results = pq.read_table(out).to_pydict()
    backfill = history["backfill"]
    assert results["event_id"] == backfill["event_id"]
    served = np.array([results[f"feature:{name}"] for name in FEATURES], np.float32).T
    rows = np.array([backfill[name] for name in FEATURES], np.float32).T
    assert served.tobytes() == rows.tobytes()
    model = XGBoostModel.load(history["root"] / "models" / "win" / "1")
    assert np.array_equal(np.array(results["score:win:1"], np.float32), model.predict(rows))
    rates = rows[:, NAMES.index("terminal.rate_label_7d")]
    assert (rates > 0).any(), "no fraud known: the labels did not arrive"


def test_a_file_replays_with_the_windows_backfill_computed(history: dict[str, Any]) -> None:
    out = history["root"] / "file.parquet"
    result = replay(history, out, "--input", str(history["root"] / "events.jsonl"))
    check_served(history, out)
    assert "windows: customer, terminal, in memory; labels from" in result.stdout
    read = history["labels"] + 1
    assert f"read {read:,}, dead-lettered 1 (schema 1), applied " in result.stdout
    dead = [json.loads(line) for line in (history["root"] / "file.dead-letters.jsonl")
            .read_text().splitlines()]
    assert [(d["topic"], d["offset"], d["reason"]) for d in dead] == [
        ("labels.jsonl", history["labels"] // 2, "schema")]
    assert dead[0]["value"] == BAD_LABEL.decode()

    again = replay(history, history["root"] / "again.parquet", "--input",
                   str(history["root"] / "events.jsonl"))
    assert (history["root"] / "again.parquet").read_bytes() == out.read_bytes(), again.stdout


def test_jobs_above_one_are_refused_with_windows(history: dict[str, Any]) -> None:
    result = replay(history, history["root"] / "jobs.parquet", "--input",
                    str(history["root"] / "events.jsonl"), "--jobs", "2", check=False)
    assert result.returncode == 2
    assert "--jobs 2" in result.stderr and "[windows.*]" in result.stderr
    assert not (history["root"] / "jobs.parquet").exists()


def test_a_topic_replays_with_the_windows_backfill_computed(
        history: dict[str, Any], broker: Broker, make_topics: Any, tmp_path: Path) -> None:
    """One partition, the events produced in time order: the topic replays as the file."""
    (topic,) = make_topics(1)
    produce(broker.bootstrap_servers, topic,
            [(None, line) for line in
             (history["root"] / "events.jsonl").read_bytes().splitlines()])
    config = write_config(tmp_path / "config.toml", {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers},
        "model": {"dir": str(history["root"] / "models"), "name": "win"}, "features": {},
        "windows": WEEK_WINDOWS})
    out = tmp_path / "topic.parquet"
    cli("replay", "--topic", topic, "--labels", str(history["root"] / "labels.jsonl"),
        "--out", str(out), "--config", str(config))
    check_served(history, out)

