"""A running service's /metrics, /healthz and /readyz, scraped over HTTP while events flow."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.demo.embedded import EmbeddedRedis, free_port

from .kafka_io import produce
from .test_cli import cli, write_config

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, metric_name: str, /, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = all(sample.labels.get(k) == v for k, v in labels.items())
            if sample.name == metric_name and wanted:
                return sample.value
    return 0.0


def wait_until(check: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError("condition not reached")


def test_metrics_move_as_events_flow_and_readiness_follows_redis(
    tmp_path: Path, broker: Any
) -> None:
    run_id, port = uuid.uuid4().hex[:8], free_port()
    with EmbeddedRedis() as redis_server:
        config = write_config(tmp_path, broker, redis_server, run_id)
        env = {"STREAM_INFER_OBSERVABILITY__HTTP_PORT": str(port),
               "STREAM_INFER_OBSERVABILITY__HTTP_HOST": "127.0.0.1"}
        service = subprocess.Popen(
            [sys.executable, "-m", "stream_infer", "run", "--config", str(config)],
            stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, **env})
        try:
            wait_until(lambda: _up(port) and get(port, "/readyz")[0] == 200)
            assert get(port, "/healthz")[0] == 200
            cli("simulate", "--config", str(config), "--count", "500", "--cards", "100")
            produce(broker.bootstrap_servers, f"tx-{run_id}", [(None, b"garbage")] * 3)

            def consumed_all() -> bool:
                return metric(get(port, "/metrics")[1],
                              "stream_infer_events_consumed_total") == 503

            wait_until(consumed_all)
            text = get(port, "/metrics")[1]
            assert metric(text, "stream_infer_events_scored_total") == 500
            assert metric(text, "stream_infer_dead_letters_total", reason="undecodable") == 3
            assert metric(text, "stream_infer_model_info", name="demo", version="1") == 1
            assert metric(text, "stream_infer_stage_seconds_count", stage="score") >= 1
            assert metric(text, "stream_infer_alerts_total") == metric(
                text, "stream_infer_event_to_alert_seconds_count")
            wait_until(lambda: "stream_infer_consumer_lag{" in get(port, "/metrics")[1], 15)

            redis_server.stop()
            status, body = get(port, "/readyz")
            assert status == 503 and "redis: FAIL" in body
        finally:
            service.send_signal(signal.SIGTERM)
            _, stderr = service.communicate(timeout=60)
        assert service.returncode == 0, stderr


def _up(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] in (200, 503)
    except OSError:
        return False
