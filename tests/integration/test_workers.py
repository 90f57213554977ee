"""``stream-infer run --workers N``: N processes in one group share the partitions."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.service.ports import free_port
from tests.support.configs import service_config, write_config
from tests.support.service import Service, cli
from tests.support.topics import read_all, wait_for_records

pytestmark = pytest.mark.integration


def test_two_workers_split_the_partitions_and_score_everything_once(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url, kafka={"topic_partitions": 4}))
    cli("simulate", "--config", str(config), "--count", "3000", "--cards", "300",
        "--merchants", "40", "--seed", "8")
    with Service(config, "supervisor", "--workers", "2") as supervisor:
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=3000,
                         timeout_s=90)
        time.sleep(0.5)
        per_worker = [supervisor.metrics(worker).value("stream_infer_events_consumed_total")
                      for worker in (1, 2)]
        assert supervisor.stop() == 0, supervisor.log_tail()
    assert supervisor.log().count("SIGTERM received") == 2  # forwarded to both workers

    ids = [json.loads(r.value)["event_id"]
           for r in read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(ids) == len(set(ids)) == 3000
    assert sum(per_worker) >= 3000 and all(n > 0 for n in per_worker), per_worker


def test_a_worker_that_dies_takes_the_unit_down_with_its_exit_code(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url, model={"name": "no-such-model"},
        observability={"http_port": free_port()}))  # never the default 9464 another may hold
    result = cli("run", "--config", str(config), "--workers", "2", check=False)
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "a worker exited with 2" in result.stderr
