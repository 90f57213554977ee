"""The command line as a user runs it, in subprocesses, against the real broker and Redis."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import SCHEMAS, service_config, write_config
from tests.support.service import Service, cli
from tests.support.topics import produce, read_all, wait_for_records

pytestmark = pytest.mark.integration


def test_bad_configuration_exits_2_with_every_problem_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[batch]\nmax_records = -1\n[redis]\non_error = "ignore"\n')
    result = cli("run", "--config", str(path), check=False)
    assert result.returncode == 2
    assert "batch.max_records" in result.stderr and "redis.on_error" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[redis]\nurl = "redis://app:hunter2@redis:6379/0"\n')
    result = cli("config", "show", "--config", str(path),
                 env={"STREAM_INFER_KAFKA__PRODUCER": '{"sasl.password": "pa55"}'})
    assert "hunter2" not in result.stdout and "pa55" not in result.stdout
    assert json.loads(result.stdout)["kafka"]["producer"]["sasl.password"] == "**********"


def test_simulate_features_load_and_sigterm_then_restart_lose_and_duplicate_nothing(
    tmp_path: Path, broker: Any, redis_server: Any, redis_client: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url))
    cli("simulate", "--features-out", str(tmp_path), "--cards", "300", "--merchants", "40")
    loaded = cli("features", "load", str(tmp_path / "card_features.csv"), "--view", "card",
                 "--config", str(config))
    assert "loaded 300 rows into view 'card'" in loaded.stdout
    cli("features", "load", str(tmp_path / "merchant_features.csv"), "--view", "merchant",
        "--config", str(config))
    assert redis_client.hget("card:card-000001", "avg_amount_30d") is not None

    cli("simulate", "--config", str(config), "--count", "4000", "--cards", "300",
        "--merchants", "40", "--seed", "5")
    with Service(config, "first") as first:
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=500)
        assert first.stop() == 0, first.log_tail()
    assert "SIGTERM received" in first.log()
    done_before = len(read_all(broker.bootstrap_servers, f"scores-{run_id}"))

    result = cli("run", "--config", str(config), "--max-events", str(4000 - done_before))
    assert "stopped:" in result.stderr
    ids = [json.loads(r.value)["event_id"] for r in
           read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(ids) == len(set(ids)) == 4000  # lost = 0, duplicates = 0


def test_avro_input_end_to_end(tmp_path: Path, broker: Any, redis_server: Any) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url))
    env = {"STREAM_INFER_DECODE__FORMAT": "avro", "STREAM_INFER_DECODE__SCHEMA_DIR": str(SCHEMAS)}
    cli("simulate", "--config", str(config), "--count", "300", "--format", "avro", env=env)
    produce(broker.bootstrap_servers, f"tx-{run_id}", [(None, b'{"json": "not avro"}')])
    cli("run", "--config", str(config), "--max-events", "301", env=env)
    assert len(read_all(broker.bootstrap_servers, f"scores-{run_id}")) == 300
    (dead,) = read_all(broker.bootstrap_servers, f"dlq-{run_id}")
    assert dead.headers["dlq.reason"] == b"undecodable"
    assert b"magic byte" in dead.headers["dlq.error"]


def test_topics_create_makes_every_configured_topic_the_labels_too(
        tmp_path: Path, broker: Any, redis_server: Any) -> None:
    from confluent_kafka.admin import AdminClient

    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url,
        kafka={"labels_topic": f"labels-{run_id}"}))
    assert "created" in cli("topics", "create", "--config", str(config)).stdout
    listed = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(
        timeout=10).topics
    want = {f"{kind}-{run_id}" for kind in ("tx", "labels", "alerts", "dlq", "scores")}
    assert want <= set(listed), sorted(set(listed))
    assert cli("topics", "create", "--config", str(config)).stdout.strip() == "all topics exist"
