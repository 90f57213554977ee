"""``features backfill --topic T --labels-topic L``: a history read from topics gives the
same bytes as the same history read from files, and a record that does not decode is
dead-lettered with its partition and offset; ``--from``/``--to`` write the range's rows,
the earlier events filling the windows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stream_infer.offline import handbook as hb
from tests.support.brokers import Broker
from tests.support.configs import write_config
from tests.support.service import cli
from tests.support.topics import produce
from tests.support.windows import WEEK_WINDOWS, handbook_history, json_lines

pytestmark = pytest.mark.integration


def test_a_backfill_from_topics_equals_the_backfill_from_files(
        tmp_path: Path, broker: Broker, make_topics: object) -> None:
    events, labels = handbook_history()
    lines = {"events": json_lines(events), "labels": json_lines(labels)}
    for name, encoded in lines.items():
        (tmp_path / f"{name}.jsonl").write_bytes(b"\n".join(encoded) + b"\n")
    events_topic, labels_topic = make_topics(1, 2)  # type: ignore[operator]
    produce(broker.bootstrap_servers, events_topic,
            [(None, v) for v in [*lines["events"], b'{"event_id": "half']])
    produce(broker.bootstrap_servers, labels_topic,
            [(None, v) for v in [*lines["labels"], b'{"event_id": "x", "label": 2}']])
    config = write_config(tmp_path / "config.toml", {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers}, "windows": WEEK_WINDOWS})

    cli("features", "backfill", str(tmp_path / "events.jsonl"), "--labels",
        str(tmp_path / "labels.jsonl"), "--out", str(tmp_path / "files.parquet"),
        "--config", str(config))
    result = cli("features", "backfill", "--topic", events_topic, "--labels-topic",
                 labels_topic, "--out", str(tmp_path / "topics.parquet"), "--config",
                 str(config))

    assert (tmp_path / "topics.parquet").read_bytes() == (tmp_path / "files.parquet").read_bytes()
    assert f"read {len(events) + 1:,}, dead-lettered 1" in result.stdout
    dead = [json.loads(line) for line in
            (tmp_path / "topics.dead-letters.jsonl").read_text().splitlines()]
    assert [(d["input"], d["file"], d["position"]) for d in dead] == [
        ("events", f"topic {events_topic}", f"0:{len(events)}"),
        ("labels", f"topic {labels_topic}", f"0:{len(labels)}")]
    assert cli("features", "backfill", "--out", str(tmp_path / "x.parquet"),
               check=False).returncode == 2

    since, until = hb.start_ms("2024-01-10"), hb.start_ms("2024-01-15")
    ranged = cli("features", "backfill", "--topic", events_topic, "--labels-topic",
                 labels_topic, "--out", str(tmp_path / "range.parquet"), "--config",
                 str(config), "--from", "2024-01-10", "--to", str(until))
    whole = pq.read_table(tmp_path / "files.parquet").to_pandas()
    want = whole[(whole.event_time >= since) & (whole.event_time < until)]
    got = pq.read_table(tmp_path / "range.parquet").to_pandas()
    assert 0 < len(got) < len(whole) and f"wrote the {len(got):,} events" in ranged.stdout
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
