"""Hot reload under load, shadow models, and replay from a topic: real broker, real Redis."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.offline import simulate
from stream_infer.registry import read_manifest, write_model
from tests.support.configs import MODELS, service_config, write_config
from tests.support.population import load_population
from tests.support.service import Service, cli
from tests.support.topics import committed, produce, read_all, wait_for_records
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def copy_model(root: Path, name: str, version: str, threshold: float | None = None) -> Path:
    """The shipped demo model under another name/version (same booster bytes)."""
    source = MODELS / "demo" / "1"
    manifest = read_manifest(source)
    return write_model(root, name, version, (source / manifest.model_file).read_bytes(),
                       features=manifest.features,
                       threshold=manifest.threshold if threshold is None else threshold)


def test_hot_reload_under_load_loses_and_duplicates_nothing_and_never_mixes_a_batch(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    models = tmp_path / "models"
    copy_model(models, "demo", "1")
    copy_model(models, "challenger", "1", threshold=0.2)
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url,
        model={"dir": str(models), "shadows": ["challenger"], "reload_poll_s": 0.3}))
    load_population(redis_server.url, tmp_path)

    def feed(count: int, seed: int, rate: str = "0") -> Service:
        return Service(config, f"feeder-{seed}", command=[
            "-m", "stream_infer", "simulate", "--config", str(config), "--count", str(count),
            "--cards", "300", "--merchants", "40", "--seed", str(seed), "--rate", rate]).start()

    def reloads(result: str) -> float:
        return service.metrics().value("stream_infer_model_reloads_total", result=result)

    def finished(feeder: Service) -> None:
        assert feeder.wait(60) == 0, feeder.log_tail()

    finished(feed(2000, seed=1))  # before: all version 1
    with Service(config, "service") as service:
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=2 * 2000)
        during = feed(3000, seed=2, rate="800")  # under load: the switch happens here
        wait_until(lambda: service.metrics().value("stream_infer_events_consumed_total")
                   >= 2000 + 400, 60, "the service to consume under load", poll_s=0.1)
        copy_model(models, "demo", "2")  # picked up by the registry poll
        wait_until(lambda: reloads("ok") >= 1, 30, "version 2 to be loaded", poll_s=0.1)
        finished(during)
        broken = copy_model(tmp_path / "staging", "demo", "3")
        (broken / "model.json").write_bytes(b'{"learner": "tampered"}')
        broken.rename(models / "demo" / "3")  # appears whole, as a deploy would do it
        service.signal(signal.SIGHUP)  # asks as well: refused, version 2 keeps serving
        wait_until(lambda: reloads("refused") >= 1, 30, "version 3 to be refused", poll_s=0.1)
        finished(feed(1000, seed=3))  # after: all version 2
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=2 * 6000)
        time.sleep(1.0)
        metrics = service.metrics()
        ready = service.get("/readyz")[1]
        assert service.stop() == 0, service.log_tail()
    count = 6000

    scores = [json.loads(r.value) for r in read_all(broker.bootstrap_servers,
                                                    f"scores-{run_id}")]
    champion = [s for s in scores if not s["shadow"]]
    shadow = [s for s in scores if s["shadow"]]
    ids = [s["event_id"] for s in champion]
    assert len(ids) == len(set(ids)) == count  # lost = 0, duplicates = 0
    assert sorted(s["event_id"] for s in shadow) == sorted(ids)
    assert {s["model_name"] for s in shadow} == {"challenger"}
    by_seed: dict[str, set[str]] = defaultdict(set)
    for s in champion:
        by_seed[s["event_id"].split("-")[1]].add(s["model_version"])
    assert by_seed == {"1": {"1"}, "2": {"1", "2"}, "3": {"2"}}, by_seed  # 3 never served
    by_batch: dict[int, set[str]] = defaultdict(set)
    for s in champion:
        by_batch[s["scored_at"]].add(s["model_version"])
    assert all(len(v) == 1 for v in by_batch.values()), "a batch mixed model versions"

    alerts = [json.loads(r.value) for r in read_all(broker.bootstrap_servers, f"alerts-{run_id}")]
    assert {a["model_name"] for a in alerts} == {"demo"}  # the shadow never alerts
    assert metrics.value("stream_infer_model_reloads_total", result="ok") == 1
    # the poll and/or the SIGHUP saw 3
    assert metrics.value("stream_infer_model_reloads_total", result="refused") >= 1
    assert metrics.value("stream_infer_model_info", name="demo", role="champion",
                         version="2") == 1
    assert metrics.value("stream_infer_model_info", name="challenger", role="shadow",
                         version="1") == 1
    assert metrics.series("stream_infer_shadow_alerts_total")
    assert "model reload refused" in service.log() and "now serving demo 2" in service.log()
    assert "model: ok demo 2" in ready  # readiness names the model serving now


def test_replay_of_a_topic_time_range_accounts_for_every_offset_and_commits_nothing(
    tmp_path: Path, broker: Any, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream_infer.cli import main

    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url))
    pop = load_population(redis_server.url, tmp_path,
                          pop=simulate.make_population(cards=300, merchants=40, seed=7))
    events = [json.dumps(e).encode()
              for e in simulate.transactions(pop, count=1300, seed=9)]
    topic = f"history-{run_id}"
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [topic], create=True,
                  partitions=2, replication_factor=1)
    produce(broker.bootstrap_servers, topic, [(None, e) for e in events[:500]])
    time.sleep(0.05)
    start_ms = time.time_ns() // 1_000_000
    time.sleep(0.05)
    middle = produce(broker.bootstrap_servers, topic, [(None, e) for e in events[500:1000]]
                     + [(None, b"{not json")])
    time.sleep(0.05)
    end_ms = time.time_ns() // 1_000_000
    time.sleep(0.05)
    produce(broker.bootstrap_servers, topic, [(None, e) for e in events[1000:]])

    out = tmp_path / "results.parquet"
    report = tmp_path / "report.json"
    code = main(["replay", "--config", str(config), "--topic", topic, "--from", str(start_ms),
                 "--to", str(end_ms), "--features", "redis", "--out", str(out),
                 "--json", str(report), "--output-topic", f"replay-alerts-{run_id}"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    figures = json.loads(report.read_text())
    assert figures["scored"] == 500 and figures["dead_lettered"] == 1
    assert figures["dlq_reasons"] == {"undecodable": 1}
    assert figures["scored"] + figures["dead_lettered"] + figures["out_of_range"] == (
        figures["offsets_in_range"])
    assert figures["features"] == "redis"
    assert any("not point-in-time" in warning for warning in figures["warnings"])
    assert f"accounted for {figures['offsets_in_range']:,}" in printed

    import pyarrow.parquet as pq

    results = pq.read_table(out).to_pydict()
    expected = [json.loads(e)["event_id"] for e in events[500:1000]]
    assert sorted(results["event_id"]) == sorted(expected)
    alerts = read_all(broker.bootstrap_servers, f"replay-alerts-{run_id}")
    assert len(alerts) == figures["models"][0]["alerts"] > 0

    spans = {p: (min(o for q, o in middle if q == p), max(o for q, o in middle if q == p))
             for p in {q for q, _ in middle}}
    explicit = ",".join(f"{p}:{first}-{last}" for p, (first, last) in spans.items())
    assert main(["replay", "--config", str(config), "--topic", topic, "--offsets", explicit,
                 "--out", str(tmp_path / "by_offsets.parquet"), "--json", str(report)]) == 0
    by_offsets = json.loads(report.read_text())
    assert (by_offsets["scored"], by_offsets["dead_lettered"]) == (500, 1)
    assert by_offsets["offsets_in_range"] == 501 and by_offsets["out_of_range"] == 0

    assert committed(broker.bootstrap_servers, "stream-infer-replay", topic, 2) == {}, (
        "replay committed an offset")


def test_replay_with_the_logged_feature_vectors_rescores_exactly_what_production_saw(
    tmp_path: Path, broker: Any, redis_server: Any, redis_client: Any,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from stream_infer.cli import main

    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url))
    load_population(redis_server.url, tmp_path)
    cli("simulate", "--config", str(config), "--count", "800", "--cards", "300",
        "--merchants", "40", "--seed", "3")
    for partition in (0, 1):  # Tansu's high watermark is the last batch's base offset + 1:
        produce(broker.bootstrap_servers, f"tx-{run_id}", [(None, b"{end")], partition)
    cli("run", "--config", str(config), "--max-events", "802")
    live = {s["event_id"]: s["score"] for s in
            (json.loads(r.value) for r in read_all(broker.bootstrap_servers, f"scores-{run_id}"))}
    assert len(live) == 800
    redis_client.flushall()  # the features production saw are gone from the store

    out = tmp_path / "rescored.parquet"
    assert main(["replay", "--config", str(config), "--topic", f"tx-{run_id}",
                 "--features", "scores", "--out", str(out)]) == 0
    capsys.readouterr()
    import pyarrow.parquet as pq

    replayed = pq.read_table(out).to_pydict()
    assert len(replayed["event_id"]) == 800  # a one-record batch ends each partition
    rescored = dict(zip(replayed["event_id"], replayed["score:demo:1"], strict=True))
    assert rescored == {e: live[e] for e in rescored}
    logged = np.array(replayed["feature:card.avg_amount_30d"], dtype=np.float32)
    assert not np.isnan(logged).any()  # the logged values, although Redis is empty now
