"""The Redis edge on a real redis-server: pipelined lookups, loading, and outages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stream_infer.adapters.redis import RedisFeatureStore, connect, send_streamed
from stream_infer.config import FeatureView, RedisSettings
from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.errors import FeatureStoreError
from stream_infer.offline.features import load_features

pytestmark = pytest.mark.integration
VIEW = FeatureView(key="card:{card_id}", fields=["avg", "count"])


def test_load_then_fetch_round_trips_values_exactly(redis_client: redis.Redis,
                                                     redis_server: EmbeddedRedis,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "cards.csv"
    path.write_text("card_id,avg,count,ignored\nc1,0.30000000000000004,3,x\nc2,,7,y\n")
    report = load_features(redis_client, path, "card", VIEW)
    assert (report.rows, report.fields) == (2, 3)
    store = RedisFeatureStore(redis.Redis.from_url(redis_server.url))
    values = store.fetch([("card:c1", ("avg", "count")), ("card:c2", ("avg", "count")),
                          ("card:none", ("avg",))])
    assert float(values[0][0]) == 0.1 + 0.2
    assert values[1] == [None, b"7.0"] and values[2] == [None]
    assert redis_client.hgetall("card:c1").keys() == {b"avg", b"count"}


def test_replace_drops_fields_no_longer_in_the_table(redis_client: redis.Redis,
                                                     tmp_path: Path) -> None:
    redis_client.hset("card:c1", mapping={"avg": "1", "count": "2"})
    path = tmp_path / "cards.csv"
    path.write_text("card_id,avg,count\nc1,5,\n")
    load_features(redis_client, path, "card", VIEW)
    assert redis_client.hget("card:c1", "count") == b"2"
    load_features(redis_client, path, "card", VIEW, replace=True)
    assert redis_client.hgetall("card:c1") == {b"avg": b"5.0"}


class CountingConnection(redis.Connection):
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def test_a_batch_is_one_round_trip(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    pool = redis.ConnectionPool(connection_class=CountingConnection, host=redis_server.host,
                                port=redis_server.port)
    store = RedisFeatureStore(redis.Redis(connection_pool=pool))
    store.ping()
    CountingConnection.sends = 0
    store.fetch([(f"card:{i}", ("avg", "count")) for i in range(500)])
    assert CountingConnection.sends == 1


def test_a_hung_redis_is_a_feature_store_error_within_the_socket_timeout() -> None:
    with EmbeddedRedis() as server:
        store = RedisFeatureStore.from_settings(
            RedisSettings(url=server.url, socket_timeout_ms=200))  # type: ignore[arg-type]
        assert store.ping()
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(FeatureStoreError, match="unavailable"):
                store.fetch([("card:c1", ("avg",))])
            assert time.monotonic() - started < 2.0
        finally:
            server.resume()
        server.stop()
        with pytest.raises(FeatureStoreError):
            store.fetch([("card:c1", ("avg",))])
        assert not store.ping()


def test_connect_honours_the_settings(redis_server: EmbeddedRedis) -> None:
    client = connect(RedisSettings(url=redis_server.url, socket_timeout_ms=123))  # type: ignore[arg-type]
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.123
    assert client.ping()


def test_packed_vectors_load_and_fetch_with_hashes_in_one_round_trip(
        redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path) -> None:
    import numpy as np

    packed = FeatureView(key="cardv:{card_id}", fields=["avg", "count"], layout="packed")
    path = tmp_path / "cards.csv"
    path.write_text("card_id,avg,count\nc1,0.30000000000000004,3\nc2,,7\n")
    load_features(redis_client, path, "card", VIEW)
    report = load_features(redis_client, path, "cardv", packed)
    assert (report.rows, report.keys, report.fields) == (2, 2, 3)
    assert redis_client.get("cardv:c1") == np.array([0.1 + 0.2, 3], dtype="<f4").tobytes()

    pool = redis.ConnectionPool(connection_class=CountingConnection, host=redis_server.host,
                                port=redis_server.port)
    store = RedisFeatureStore(redis.Redis(connection_pool=pool))
    store.ping()
    CountingConnection.sends = 0
    values = store.fetch([("cardv:c1", None), ("card:c1", ("avg",)), ("cardv:c2", None),
                          ("cardv:none", None), ("card:c2", ("count",))])
    assert CountingConnection.sends == 1
    assert np.frombuffer(values[0], "<f4").tolist() == [np.float32(0.3), 3.0]
    assert float(values[1][0]) == 0.1 + 0.2
    assert np.isnan(np.frombuffer(values[2], "<f4")[0]) and values[3] is None
    assert values[4] == [b"7.0"]


def test_packed_lookups_are_one_mget_as_redis_py_would_answer_it(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    keys = [f"cardv:{i:05d}" for i in range(300)] + ["cardv:é", "cardv:long-one"]
    redis_client.mset({k: f"v{i}".encode() for i, k in enumerate(keys) if i % 3})
    pool = redis.ConnectionPool(connection_class=CountingConnection, host=redis_server.host,
                                port=redis_server.port)
    store = RedisFeatureStore(redis.Redis(connection_pool=pool))
    store.ping()
    for batch in (keys[:300], keys):  # one key length (one join), then mixed lengths
        CountingConnection.sends = 0
        assert store.fetch([(k, None) for k in batch]) == redis_client.mget(batch)
        assert CountingConnection.sends == 1
    assert pool._in_use_connections == set()  # handed back to the pool


def test_packed_lookups_survive_a_restart_and_report_an_outage() -> None:
    with EmbeddedRedis() as server:
        store = RedisFeatureStore.from_settings(
            RedisSettings(url=server.url, socket_timeout_ms=200))  # type: ignore[arg-type]
        store.client.set("cardv:c1", b"\x00\x00\x80\x3f")
        assert store.fetch([("cardv:c1", None), ("cardv:c2", None)]) == [b"\x00\x00\x80\x3f", None]
        server.restart()  # the pooled connection is dead now: the client's retry reconnects
        assert store.fetch([("cardv:c1", None)]) == [None]
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(FeatureStoreError, match="unavailable"):
                store.fetch([("cardv:c1", None)])
            assert time.monotonic() - started < 2.0
        finally:
            server.resume()


class DroppingConnection(redis.Connection):
    """Loses the connection in the middle of the next ``drops`` replies to an ``MGET``."""

    drops = 0
    mget_sent = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        super().send_packed_command(command, check_health)
        self.mget_sent = b"\r\nMGET\r\n" in b"".join(command)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if DroppingConnection.drops and self.mget_sent:
            DroppingConnection.drops -= 1
            self.disconnect()
            raise redis.exceptions.ConnectionError("connection lost mid-reply")
        return super().read_response(*args, **kwargs)


@pytest.mark.parametrize("retries", [0, 1])
def test_packed_lookups_follow_the_clients_retry_policy(
        redis_server: EmbeddedRedis, redis_client: redis.Redis, retries: int) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    redis_client.set("cardv:c1", b"v")
    pool = redis.ConnectionPool(connection_class=DroppingConnection, host=redis_server.host,
                                port=redis_server.port, retry=Retry(NoBackoff(), retries))
    store = RedisFeatureStore(redis.Redis(connection_pool=pool))
    DroppingConnection.drops = 1
    if retries:
        assert store.fetch([("cardv:c1", None)]) == [b"v"]
    else:
        with pytest.raises(FeatureStoreError, match="connection lost mid-reply"):
            store.fetch([("cardv:c1", None)])
    assert DroppingConnection.drops == 0


def test_a_client_with_another_key_encoding_gets_its_own_mget(
        redis_server: EmbeddedRedis) -> None:
    """redis-py with hiredis sends str keys as UTF-8 whatever the ``encoding``; its Python
    packer honours it. A latin-1 client keeps redis-py's MGET, so the keys it wrote match."""
    from redis.connection import Encoder, PythonRespSerializer

    latin1 = PythonRespSerializer(6000, Encoder("latin-1", "strict", False).encode)
    client = redis.Redis(connection_pool=redis.ConnectionPool(
        host=redis_server.host, port=redis_server.port, encoding="latin-1",
        command_packer=latin1))
    client.set("cardv:é", b"v")  # stored under the key's latin-1 bytes
    assert client.get("cardv:é") == b"v" and redis.Redis(
        host=redis_server.host, port=redis_server.port).get("cardv:é") is None
    assert RedisFeatureStore(client).fetch([("cardv:é", None)]) == [b"v"]


def packet(*args: str) -> tuple[bytes, int]:
    return redis.Connection().pack_command(*args)[0], 1


def test_streamed_commands_are_sent_as_they_come(redis_server: EmbeddedRedis,
                                                  redis_client: redis.Redis) -> None:
    """Each packet is on its way before the next is produced: the producer sees its first
    command's effect in Redis before it yields the second."""
    client = redis.Redis.from_url(redis_server.url)

    def packets() -> Iterator[tuple[bytes, int]]:
        yield packet("SET", "streamed", "1")
        deadline = time.monotonic() + 5
        while redis_client.get("streamed") is None:
            assert time.monotonic() < deadline, "the first command was held back"
            time.sleep(0.005)
        yield packet("GET", "streamed")

    assert send_streamed(client, packets()) == [b"OK", b"1"]


def test_a_failing_producer_leaves_no_reply_unread_for_the_next_command(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """The producer's error propagates, and the connection whose replies were left unread
    is closed, not handed to the next command (which would read the stale ``OK``)."""
    redis_client.set("kept", "v")
    client = redis.Redis.from_url(redis_server.url, single_connection_client=False)

    def packets() -> Iterator[tuple[bytes, int]]:
        yield packet("SET", "other", "1")
        raise ValueError("the worker's computation failed")

    with pytest.raises(ValueError, match="computation failed"):
        send_streamed(client, packets())
    assert client.get("kept") == b"v"


class FailingSend(redis.Connection):
    """Loses the connection on the next ``fails`` sends of a second packet."""

    fails = 0
    packets = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        FailingSend.packets += 1
        if FailingSend.fails and FailingSend.packets == 2:
            FailingSend.fails -= 1
            self.disconnect()
            raise redis.exceptions.ConnectionError("connection lost mid-stream")
        super().send_packed_command(command, check_health)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_stream_that_loses_its_connection_is_sent_again_under_the_retry_policy(
        redis_server: EmbeddedRedis, retries: int) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = redis.ConnectionPool(connection_class=FailingSend, host=redis_server.host,
                                port=redis_server.port, retry=Retry(NoBackoff(), retries))
    client = redis.Redis(connection_pool=pool)
    FailingSend.fails, FailingSend.packets = 1, 0
    packets = [packet("SET", "sent", "v"), packet("GET", "sent")]
    if retries:
        # the whole exchange again (the first command may run twice: a window write whose
        # first run landed is refused the second time, and computed again)
        assert send_streamed(client, iter(packets)) == [b"OK", b"v"]
    else:
        with pytest.raises(redis.exceptions.ConnectionError, match="lost mid-stream"):
            send_streamed(client, iter(packets))
    assert FailingSend.fails == 0
