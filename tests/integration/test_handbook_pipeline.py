"""The window features from the command line, end to end: the Handbook's simulator to files,
``features backfill`` and ``model train`` on its output (a time split, better than random);
and the simulator's events and labels produced to a real broker with their times as
timestamps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stream_infer.cli import main
from stream_infer.decode import JsonDecoder, JsonLabelDecoder
from stream_infer.demo.embedded import EmbeddedBroker
from tests.support.topics import stamped_records

WINDOWS = """
[windows.customer]
key = "customer_id"
lengths = ["1d", "7d", "30d"]
aggregates = ["count", "mean:amount"]

[windows.terminal]
key = "terminal_id"
lengths = ["1d", "7d", "30d"]
delay = "7d"
aggregates = ["count", "rate:label"]
"""
SMALL = ["--population", "handbook", "--customers", "500", "--terminals", "1000"]


def test_simulate_backfill_and_train_beat_random_on_a_time_split(tmp_path: Path) -> None:
    config = tmp_path / "windows.toml"
    config.write_text(WINDOWS)
    events, labels, out = (tmp_path / n for n in ("events.jsonl", "labels.jsonl",
                                                  "features.parquet"))
    assert main(["simulate", *SMALL, "--days", "75", "--jsonl-out", str(events),
                 "--labels-out", str(labels), "--label-delay", "7d"]) == 0
    assert main(["features", "backfill", str(events), "--labels", str(labels), "--out",
                 str(out), "--config", str(config)]) == 0
    columns = pq.read_schema(out).names
    assert main(["model", "train", str(out), "--models-dir", str(tmp_path / "models"),
                 "--name", "windows", "--train-from", "2018-05-01", "--train-until",
                 "2018-05-25", "--gap", "7d", "--test-until", "2018-06-15", "--trees", "60",
                 "--nthread", "1"]) == 0
    manifest = json.loads((tmp_path / "models" / "windows" / "1" / "manifest.json").read_text())
    assert manifest["features"] == columns[columns.index("label") + 1:]
    assert "terminal.rate_label_7d" in manifest["features"]
    assert manifest["training"]["test_positives"] > 50
    assert manifest["training"]["auc"] > 0.7


@pytest.mark.integration
def test_simulate_handbook_produces_events_and_labels_stamped_with_their_times(
        broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suffix = str(time.time_ns())
    topic, labels_topic = f"handbook-events-{suffix}", f"handbook-labels-{suffix}"
    events_file, labels_file = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    assert main(["simulate", "--population", "handbook", "--customers", "40",
                 "--terminals", "60", "--days", "10", "--label-delay", "1d..3d",
                 "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                 "--labels-topic", labels_topic, "--jsonl-out", str(events_file),
                 "--labels-out", str(labels_file)]) == 0
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    written_labels = [json.loads(line) for line in labels_file.read_text().splitlines()]
    assert f"produced {len(written):,} events to {topic} and {len(written_labels):,} labels " \
           f"to {labels_topic}" in capsys.readouterr().out

    decode, decode_label = JsonDecoder(), JsonLabelDecoder()
    got = stamped_records(broker.bootstrap_servers, topic, 60)
    events = {e.event_id: (key, e, stamp) for key, value, stamp in got
              for e in [decode(value)]}
    assert len(got) == len(events) == len(written)
    for key, event, stamp in events.values():
        assert stamp == event.event_time_ms and key == event.card_id.encode()
    got_labels = stamped_records(broker.bootstrap_servers, labels_topic, 60)
    assert len(got_labels) == len(written_labels)
    for key, value, stamp in got_labels:
        label = decode_label(value)
        assert stamp == label.label_time_ms and key == (label.card_id or "").encode()
        assert label.label == events[label.event_id][1].label
        assert 86_400_000 <= stamp - events[label.event_id][1].event_time_ms <= 3 * 86_400_000
