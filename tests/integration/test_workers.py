"""``stream-infer run --workers N``: N processes in one group share the partitions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_infer.demo.embedded import free_port

from .kafka_io import read_all
from .test_cli import cli, wait_for_scores, write_config

pytestmark = pytest.mark.integration


def consumed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    line = next(x for x in text.splitlines()
                if x.startswith("stream_infer_events_consumed_total "))
    return float(line.split()[1])


def test_two_workers_split_the_partitions_and_score_everything_once(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    config = write_config(tmp_path, broker, redis_server, run_id)
    config.write_text(config.read_text().replace("topic_partitions = 2", "topic_partitions = 4")
                      + f'[observability]\nhttp_host = "127.0.0.1"\nhttp_port = {port}\n')
    cli("simulate", "--config", str(config), "--count", "3000", "--cards", "300",
        "--merchants", "40", "--seed", "8")
    supervisor = subprocess.Popen([sys.executable, "-m", "stream_infer", "run", "--config",
                                   str(config), "--workers", "2"],
                                  stderr=subprocess.PIPE, text=True)
    try:
        wait_for_scores(broker, f"scores-{run_id}", at_least=3000, timeout_s=90)
        time.sleep(0.5)
        per_worker = [consumed(port), consumed(port + 1)]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0, stderr
    assert stderr.count("SIGTERM received") == 2  # forwarded to both workers

    ids = [json.loads(r.value)["event_id"]
           for r in read_all(broker.bootstrap_servers, f"scores-{run_id}")]
    assert len(ids) == len(set(ids)) == 3000
    assert sum(per_worker) >= 3000 and all(n > 0 for n in per_worker), per_worker


def test_a_worker_that_dies_takes_the_unit_down_with_its_exit_code(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config = write_config(tmp_path, broker, redis_server, run_id)
    config.write_text(config.read_text().replace('name = "demo"', 'name = "no-such-model"'))
    result = subprocess.run([sys.executable, "-m", "stream_infer", "run", "--config",
                             str(config), "--workers", "2"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "a worker exited with 2" in result.stderr
