"""The embedded services the demo, the benchmarks and the tests stand on."""

from __future__ import annotations

import socket

import pytest
import redis

from stream_infer.embedded import EmbeddedBroker, EmbeddedRedis
from stream_infer.errors import BrokerError

from .kafka_io import produce, read_all

pytestmark = pytest.mark.integration


def test_broker_round_trip_and_clean_stop() -> None:
    with EmbeddedBroker() as broker:
        placed = produce(broker.bootstrap_servers, "roundtrip", [(b"k", b"v1"), (b"k", b"v2")])
        assert [p for p, _ in placed] == [placed[0][0]] * 2
        assert [r.value for r in read_all(broker.bootstrap_servers, "roundtrip")] == [b"v1", b"v2"]
        process = broker.process
        assert process is not None
    assert process.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=0.5)


def test_a_port_in_use_is_a_clear_broker_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match="tansu"):
            EmbeddedBroker(port=port, startup_timeout_s=3).start()


def test_redis_restart_comes_back_empty_on_the_same_port() -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        assert client.get("k") is None and client.ping()
