"""The command line as a user runs it, in subprocesses, against the real broker and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.offline import simulate

from .kafka_io import produce, read_all

pytestmark = pytest.mark.integration
MODELS = Path(__file__).resolve().parents[2] / "models"


def cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "stream_infer", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def write_config(tmp_path: Path, broker: Any, redis_server: Any, run_id: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{broker.bootstrap_servers}"
group_id = "cli-{run_id}"
input_topics = ["tx-{run_id}"]
alert_topic = "alerts-{run_id}"
dlq_topic = "dlq-{run_id}"
scores_topic = "scores-{run_id}"
session_timeout_ms = 6000
topic_partitions = 2
commit_interval_ms = 500

[batch]
max_records = 100
max_wait_ms = 20

[redis]
url = "{redis_server.url}"

[features.card]
key = "card:{{card_id}}"
fields = {json.dumps(list(simulate.CARD_FIELDS))}

[features.merchant]
key = "merchant:{{merchant_id}}"
fields = {json.dumps(list(simulate.MERCHANT_FIELDS))}

[model]
dir = "{MODELS}"
name = "demo"
""")
    return path


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
    config = write_config(tmp_path, broker, redis_server, run_id)
    cli("simulate", "--features-out", str(tmp_path), "--cards", "300", "--merchants", "40")
    loaded = cli("features", "load", str(tmp_path / "card_features.csv"), "--view", "card",
                 "--config", str(config))
    assert "loaded 300 rows into view 'card'" in loaded.stdout
    cli("features", "load", str(tmp_path / "merchant_features.csv"), "--view", "merchant",
        "--config", str(config))
    assert redis_client.hget("card:card-000001", "avg_amount_30d") is not None

    cli("simulate", "--config", str(config), "--count", "4000", "--cards", "300",
        "--merchants", "40", "--seed", "5")
    first = subprocess.Popen([sys.executable, "-m", "stream_infer", "run", "--config", str(config)],
                             stderr=subprocess.PIPE, text=True)
    wait_for_scores(broker, f"scores-{run_id}", at_least=500)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert "SIGTERM received" in stderr
    done_before = len(read_all(broker.bootstrap_servers, f"scores-{run_id}"))

    result = cli("run", "--config", str(config), "--max-events", str(4000 - done_before))
    assert "stopped:" in result.stderr
    ids = [json.loads(r.value)["event_id"] for r in
           read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(ids) == len(set(ids)) == 4000  # lost = 0, duplicates = 0


def wait_for_scores(broker: Any, topic: str, at_least: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(read_all(broker.bootstrap_servers, topic, timeout_s=5)) >= at_least:
                return
        except (AssertionError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"fewer than {at_least} records on {topic}")


def test_avro_input_end_to_end(tmp_path: Path, broker: Any, redis_server: Any) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path, broker, redis_server, run_id)
    env = {"STREAM_INFER_DECODE__FORMAT": "avro",
           "STREAM_INFER_DECODE__SCHEMA_DIR": str(MODELS.parent / "schemas")}
    cli("simulate", "--config", str(config), "--count", "300", "--format", "avro", env=env)
    produce(broker.bootstrap_servers, f"tx-{run_id}", [(None, b'{"json": "not avro"}')])
    cli("run", "--config", str(config), "--max-events", "301", env=env)
    assert len(read_all(broker.bootstrap_servers, f"scores-{run_id}")) == 300
    (dead,) = read_all(broker.bootstrap_servers, f"dlq-{run_id}")
    assert dead.headers["dlq.reason"] == b"undecodable"
    assert b"magic byte" in dead.headers["dlq.error"]
