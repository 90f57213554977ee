"""A running service's /metrics, /healthz and /readyz, scraped over HTTP while events flow."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.demo.embedded import EmbeddedRedis
from tests.support.configs import service_config, write_config
from tests.support.service import Service, cli
from tests.support.topics import produce
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def test_metrics_move_as_events_flow_and_readiness_follows_redis(
    tmp_path: Path, broker: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    with EmbeddedRedis() as redis_server:
        config = write_config(tmp_path / "config.toml", service_config(
            run_id, broker.bootstrap_servers, redis_server.url))
        with Service(config, "service") as service:
            wait_until(lambda: service.up() and service.get("/readyz")[0] == 200, 60,
                       "the service to be ready", poll_s=0.3)
            assert service.get("/healthz")[0] == 200
            cli("simulate", "--config", str(config), "--count", "500", "--cards", "100")
            produce(broker.bootstrap_servers, f"tx-{run_id}", [(None, b"garbage")] * 3)
            wait_until(
                lambda: service.metrics().value("stream_infer_events_consumed_total") == 503,
                60, "503 events consumed", poll_s=0.3)
            metrics = service.metrics()
            assert metrics.value("stream_infer_events_scored_total") == 500
            assert metrics.value("stream_infer_dead_letters_total", reason="undecodable") == 3
            assert metrics.value("stream_infer_model_info", name="demo", version="1") == 1
            assert metrics.value("stream_infer_stage_seconds_count", stage="score") >= 1
            assert metrics.value("stream_infer_alerts_total") == metrics.value(
                "stream_infer_event_to_alert_seconds_count")
            wait_until(lambda: service.metrics().series("stream_infer_consumer_lag"), 15,
                       "a consumer lag series", poll_s=0.3)

            redis_server.stop()
            status, body = service.get("/readyz")
            assert status == 503 and "redis: FAIL" in body
            assert service.stop() == 0, service.log_tail()
