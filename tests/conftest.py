"""Shared fixtures: one real Tansu broker and one real redis-server for the whole session.

- ``broker``: an :class:`EmbeddedBroker`; create topics with ``make_topics`` or
  ``unique_topic`` so that tests never share one.
- ``redis_server``: an :class:`EmbeddedRedis`; ``redis_client`` is a client on it, emptied
  (``FLUSHALL``) before each test.
- ``population``: the simulator's population, its features loaded into ``redis_server``.

Both services start lazily, on the first test that asks for them. Helpers live in
``tests/support``; test modules add their own fixtures next to their tests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.demo.embedded import EmbeddedBroker, EmbeddedRedis
from stream_infer.offline import simulate
from tests.support.population import load_population

MakeTopics = Callable[..., list[str]]


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as running:
        yield running


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on the session's redis-server, emptied before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def make_topics(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> MakeTopics:
    """``make_topics(n_partitions, count=1)``: create ``count`` new topics, return their names.

    Names start with the test's name and end with a random suffix.
    """
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(n_partitions: int = 1, count: int = 1) -> list[str]:
        names = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, names, create=True,
                      partitions=n_partitions, replication_factor=1)
        return names

    return make


@pytest.fixture
def unique_topic(make_topics: MakeTopics) -> str:
    """A new topic with one partition."""
    return make_topics(1)[0]


@pytest.fixture(scope="module")
def population(redis_server: EmbeddedRedis,
               tmp_path_factory: pytest.TempPathFactory) -> simulate.Population:
    """:func:`~tests.support.population.population`, its features loaded as hashes into the
    session's redis-server; loaded again for each module, since ``redis_client`` empties it."""
    return load_population(redis_server.url, tmp_path_factory.mktemp("features"))
