"""``stream-infer dev up`` as a developer uses it: the services come up with a config that
``stream-infer run`` takes as it is, and Ctrl-C takes both services down."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream_infer.config import load_settings
from stream_infer.offline import simulate
from stream_infer.service.ports import server_ports
from tests.support.events import good_events, keyed
from tests.support.population import load_population
from tests.support.service import cli
from tests.support.topics import produce
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration
EVENTS = 300


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def test_run_scores_against_dev_up_and_ctrl_c_stops_the_broker_and_redis(
    tmp_path: Path
) -> None:
    config, log = tmp_path / "dev.toml", tmp_path / "dev-up.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen([sys.executable, "-m", "stream_infer", "dev", "up",
                                "--config-out", str(config)], stdout=out,
                               stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until(config.exists, 60, f"dev up's config ({log.read_text()})")
        services = children(dev.pid)
        settings = load_settings(config)
        kafka, redis_url = settings.kafka, settings.redis.url.get_secret_value()
        printed = log.read_text()
        assert f"broker  Tansu at {kafka.bootstrap_servers}" in printed
        assert f"redis   {redis_url}" in printed and f"config  {config}" in printed
        assert "stream-infer run --config dev.toml --max-events" in printed  # from its cwd
        assert kafka.session_timeout_ms <= 10_000 and kafka.consumer["fetch.wait.max.ms"] <= 50

        pop = load_population(redis_url, tmp_path / "features", pop=simulate.make_population())
        assert "created" in cli("topics", "create", "--config", str(config)).stdout
        produce(kafka.bootstrap_servers, kafka.input_topics[0],
                keyed(good_events(pop, EVENTS, seed=4)))
        run = cli("run", "--config", str(config), "--max-events", str(EVENTS),
                  env={"STREAM_INFER_OBSERVABILITY__HTTP_PORT": str(server_ports())})
        assert f"stopped: {EVENTS} consumed, {EVENTS} scored" in run.stderr
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            code = dev.wait(30)
        except subprocess.TimeoutExpired:
            dev.kill()
            raise

    assert code == 0, log.read_text()
    assert len(services) == 2
    assert not [pid for pid in services if Path(f"/proc/{pid}").exists()]
    assert not listening(kafka.bootstrap_servers) and not listening(
        redis_url.removeprefix("redis://").removesuffix("/0"))
    assert "stopping the broker and Redis" in log.read_text()
