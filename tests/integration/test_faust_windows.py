"""Window features through the Faust engine, as users see them on the scores topic.

The stream of ``test_service_windows`` (three weeks of events keyed by customer on four
partitions, each week's labels on their own topic after it, then a label the schema refuses)
through ``stream-infer run --engine faust``: one Faust agent consumes the events and the
labels topic together, and hands its batches (events, labels or both) to the native
pipeline. Every feature it served equals the in-memory engine fed the same weeks (customer
windows depend only on each customer's own partition, terminal windows, a week late, only on
weeks before: the order in which Faust interleaves the partitions cannot change a value);
the labels were applied (the terminal fraud rates of the later weeks are served, non-zero
where the engine's are), the refused label of each week went to the dead-letter topic with
its coordinates, and Faust committed every event and label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import Broker
from tests.support.service import Service
from tests.support.topics import committed, read_all
from tests.support.windows import BAD_LABEL, check, config_for, expected, served, week, weeks

pytestmark = pytest.mark.integration
RATE = "terminal.rate_label_7d"


def test_the_faust_engine_serves_the_window_features_the_engine_computes(
        tmp_path: Path, broker: Broker, redis_server: Any, redis_client: Any) -> None:
    config, run_id = config_for(tmp_path, broker, redis_server.url)
    all_weeks = weeks()
    # Faust fixes aiokafka's fetch wait at 1.5 s; Tansu holds each fetch that long
    env = {"STREAM_INFER_KAFKA__CONSUMER": json.dumps({"fetch.wait.max.ms": 10})}
    with Service(config, "faust", "--engine", "faust", env=env) as faust:
        for n in range(len(all_weeks)):
            week(broker, run_id, all_weeks, n)
        metrics = faust.metrics()
        assert faust.stop() == 0, faust.log_tail()

    got, want = served(broker, run_id), expected(all_weeks)
    check(got, want)
    assert all(len(vectors) == 1 for vectors in got.values())
    assert metrics.value("stream_infer_events_scored_total") == 360
    assert metrics.value("stream_infer_labels_total") == 360

    labelled = {event_id for event_id, features in want.items() if features[RATE]}
    assert labelled and not any(event_id.startswith("w0-") for event_id in labelled)
    assert {event_id for event_id, (features,) in got.items() if features[RATE]} == labelled

    bootstrap, labels = broker.bootstrap_servers, f"labels-{run_id}"
    dead = read_all(bootstrap, f"dlq-{run_id}")
    assert [r.value for r in dead] == [BAD_LABEL] * 3
    assert {r.headers["dlq.source.topic"] for r in dead} == {labels.encode()}
    assert all(r.headers["dlq.reason"] == b"schema" for r in dead), [r.headers for r in dead]
    assert sorted(int(r.headers["dlq.source.offset"]) for r in dead) == [120, 241, 362]

    group = f"g-{run_id}"
    assert committed(bootstrap, group, labels, 1) == {0: 363}
    events = committed(bootstrap, group, f"tx-{run_id}", 4)
    assert len(events) == 4 and sum(events.values()) == 360  # every partition had events
