"""``features load`` into a real redis-server, and into a real three-node Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream_infer.adapters.redis import RedisFeatureStore
from stream_infer.config import FeatureView
from stream_infer.demo.embedded import EmbeddedRedis, free_port
from stream_infer.errors import ConfigError, FeatureStoreError
from stream_infer.offline.features import load_features
from stream_infer.service.ports import server_ports
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration
VIEW = FeatureView(key="card:{card_id}", fields=["avg", "count"])


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cards.csv"
    path.write_text(text)
    return path


def test_rows_land_as_hashes_with_only_the_view_fields(redis_client: redis.Redis,
                                                       tmp_path: Path) -> None:
    path = write_csv(tmp_path, "card_id,avg,count,ignored\nc1,1.5,3,x\nc2,,7,y\nc3,,,z\n")
    report = load_features(redis_client, path, "card", VIEW)
    assert (report.rows, report.keys, report.fields) == (3, 3, 3)
    assert redis_client.hgetall("card:c1") == {b"avg": b"1.5", b"count": b"3.0"}
    assert redis_client.hmget("card:c2", ["avg", "count"]) == [None, b"7.0"]
    assert redis_client.exists("card:c3") == 0
    assert sorted(redis_client.keys()) == [b"card:c1", b"card:c2"]


def test_floats_read_back_bit_exact(redis_client: redis.Redis, tmp_path: Path) -> None:
    """The same float64 as the file's, hence the same float32 as training used."""
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(0, 1e6, 500), rng.uniform(0, 1, 500),
                             [0.1 + 0.2, 5e-324, 1e-45, -0.0, 3.0e38, 1e300]])
    lines = [f"c{i},{v!r},{v / 3!r}" for i, v in enumerate(values.tolist())]
    path = write_csv(tmp_path, "card_id,avg,count\n" + "\n".join(lines) + "\n")
    load_features(redis_client, path, "card", VIEW, chunk=97)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(len(values)):
        pipe.hmget(f"card:c{i}", ["avg", "count"])
    back = np.array([[float(v) for v in row] for row in pipe.execute()])
    expected = np.column_stack([values, values / 3])
    assert back.tobytes() == expected.tobytes()


def test_every_chunk_is_flushed(redis_client: redis.Redis, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "card_id,avg,count\n" + "".join(f"c{i},{i},1\n" for i in range(7)))
    for chunk in (1, 3, 7, 100):
        redis_client.flushall()
        assert load_features(redis_client, path, "card", VIEW, chunk=chunk).rows == 7
        assert redis_client.dbsize() == 7


def test_without_replace_fields_merge_into_existing_hashes(redis_client: redis.Redis,
                                                           tmp_path: Path) -> None:
    redis_client.hset("card:c1", mapping={"avg": "1", "count": "2", "legacy": "x"})
    load_features(redis_client, write_csv(tmp_path, "card_id,avg,count\nc1,5,\n"), "card", VIEW)
    assert redis_client.hgetall("card:c1") == {b"avg": b"5.0", b"count": b"2", b"legacy": b"x"}


def test_replace_leaves_each_key_holding_exactly_what_the_file_says(redis_client: redis.Redis,
                                                                    tmp_path: Path) -> None:
    redis_client.hset("card:c1", mapping={"avg": "1", "count": "2", "legacy": "x"})
    redis_client.hset("card:c2", mapping={"avg": "1"})
    redis_client.hset("card:other", mapping={"avg": "9"})
    path = write_csv(tmp_path, "card_id,avg,count\nc1,5,\nc2,,\nc1,,6\n")
    report = load_features(redis_client, path, "card", VIEW, replace=True)
    assert (report.rows, report.keys, report.fields) == (3, 2, 2)
    assert redis_client.hgetall("card:c1") == {b"avg": b"5.0", b"count": b"6.0"}
    assert redis_client.exists("card:c2") == 0
    assert redis_client.hgetall("card:other") == {b"avg": b"9"}


def test_a_parquet_file_loads_like_its_csv(redis_client: redis.Redis, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "cards.parquet"
    pq.write_table(pa.table({"card_id": ["c1", "c2"], "avg": [0.1 + 0.2, float("nan")],
                             "count": [3, None]}), path)
    report = load_features(redis_client, path, "card", VIEW)
    assert (report.rows, report.keys, report.fields) == (2, 2, 2)
    assert redis_client.hgetall("card:c1") == {b"avg": b"0.30000000000000004", b"count": b"3.0"}
    assert redis_client.exists("card:c2") == 0


def test_a_bad_cell_in_the_last_row_writes_nothing(redis_client: redis.Redis,
                                                   tmp_path: Path) -> None:
    path = write_csv(tmp_path, "card_id,avg,count\n" + "".join(f"c{i},1,1\n" for i in range(50))
                     + "c50,oops,1\n")
    with pytest.raises(ConfigError, match="row 51"):
        load_features(redis_client, path, "card", VIEW, chunk=10)
    assert redis_client.dbsize() == 0


def test_an_unreachable_redis_is_a_feature_store_error(tmp_path: Path) -> None:
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    path = write_csv(tmp_path, "card_id,avg,count\nc1,1,1\n")
    with pytest.raises(FeatureStoreError, match="view 'card' failed after 0 rows"):
        load_features(client, path, "card", VIEW)


def test_a_key_of_another_type_is_a_feature_store_error_without_the_number(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    redis_client.set("card:4111111111111111", "not a hash")
    path = write_csv(tmp_path, "card_id,avg,count\n4111111111111111,1,2\n")
    with pytest.raises(FeatureStoreError, match="WRONGTYPE") as caught:
        load_features(redis_client, path, "card", VIEW)
    assert "4111" not in str(caught.value)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    return server_ports(2, stride=10_000)


def command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    """Three masters splitting the 16384 slots, no replicas."""
    with ExitStack() as stack:
        nodes = [stack.enter_context(EmbeddedRedis(port=cluster_port(),
                                                   extra_args=["--cluster-enabled", "yes"]))
                 for _ in range(3)]
        clients = [stack.enter_context(redis.Redis(port=n.port)) for n in nodes]
        for client, slots in zip(clients, np.array_split(np.arange(16384), 3), strict=True):
            command(client, "CLUSTER ADDSLOTS", *slots.tolist())
        for node in nodes[1:]:
            command(clients[0], "CLUSTER MEET", "127.0.0.1", node.port)
        wait_until(lambda: all(command(c, "CLUSTER INFO")["cluster_state"] == "ok"
                               for c in clients), 20, "the cluster to converge", poll_s=0.1)
        yield nodes


@pytest.fixture
def cluster_client(cluster: list[EmbeddedRedis]) -> Iterator[redis.cluster.RedisCluster]:
    with redis.cluster.RedisCluster(host="127.0.0.1", port=cluster[0].port) as client:
        yield client


def dbsize(node: EmbeddedRedis) -> int:
    with redis.Redis(port=node.port) as client:
        return int(client.dbsize())


def test_a_cluster_load_spreads_keys_over_every_node(
        cluster: list[EmbeddedRedis], cluster_client: redis.cluster.RedisCluster,
        tmp_path: Path) -> None:
    client = cluster_client
    client.hset("card:c0", mapping={"legacy": "x"})
    path = write_csv(tmp_path, "card_id,avg,count\n"
                     + "".join(f"c{i},{i / 7!r},{i}\n" for i in range(300)))
    report = load_features(client, path, "card", VIEW, chunk=64, replace=True)
    assert (report.rows, report.keys, report.fields) == (300, 300, 600)
    assert client.hgetall("card:c0") == {b"avg": b"0.0", b"count": b"0.0"}
    assert client.hget("card:c299", "avg") == repr(299 / 7).encode()
    sizes = [dbsize(node) for node in cluster]
    assert sum(sizes) == 300 and min(sizes) > 50


def test_the_feature_store_fetches_from_every_cluster_node(
        cluster_client: redis.cluster.RedisCluster) -> None:
    client = cluster_client
    for i in range(60):
        client.set(f"cardv:c{i}", f"v{i}".encode())
        client.hset(f"card:c{i}", mapping={"avg": str(i)})
    store = RedisFeatureStore(client)
    packed = [(f"cardv:c{i}", None) for i in (*range(60), 99)]
    assert store.fetch(packed) == [*(f"v{i}".encode() for i in range(60)), None]
    mixed = [lookup for i in range(60) for lookup in ((f"card:c{i}", ("avg",)),
                                                      (f"cardv:c{i}", None))]
    assert store.fetch(mixed) == [reply for i in range(60)
                                  for reply in ([str(i).encode()], f"v{i}".encode())]
    assert len({client.keyslot(f"cardv:c{i}") // 5462 for i in range(60)}) == 3
