"""Shared fixtures: the brokers and one real redis-server for the whole session.

- ``broker``: the session's broker, once per ``broker_kind``: ``tansu`` (the embedded
  broker) and ``kafka`` (Apache Kafka 4.4, KRaft). Every test that uses it, directly or
  through ``make_topics``, ``unique_topic`` or the fault suite's fixtures, runs on both;
  pytest orders the tests so that each broker starts once. Without Java 17+ the ``kafka``
  runs skip, naming why; with ``CI`` set they fail instead (see ``tests/support/brokers``).
- ``tansu``, ``kafka``: each broker on its own, for tests about that broker. A module about
  Tansu itself overrides ``broker`` with ``tansu``, so that its topics are made there.
- ``redis_server``: an ``EmbeddedRedis``; ``redis_client`` is a client on it, emptied
  (``FLUSHALL``) before each test.
- ``population``: the simulator's population, its features loaded into ``redis_server``.

The services start lazily, on the first test that asks for them (Apache Kafka's jars are
fetched once per machine, before the first test). The terminal summary counts the outcomes
per broker (:class:`BrokerTiers`), and writes them as JSON to the file named by
``STREAM_INFER_TIER_REPORT``, if set (``.ci/run`` checks them). Helpers live in
``tests/support``; test modules add their own fixtures next to their tests.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.demo.apache_kafka import ApacheKafka, fetch, java_available
from stream_infer.demo.embedded import EmbeddedBroker, EmbeddedRedis
from stream_infer.errors import ConfigError
from stream_infer.offline import simulate
from tests.support.brokers import KINDS, Broker, require, start
from tests.support.population import load_population

MakeTopics = Callable[..., list[str]]
TIER_REPORT = "STREAM_INFER_TIER_REPORT"


@pytest.fixture(scope="session", params=KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    """``tansu`` or ``kafka``: which broker this run of the test is on."""
    require(request.param)
    return str(request.param)


@pytest.fixture(scope="session")
def broker(broker_kind: str, request: pytest.FixtureRequest) -> Broker:
    broker: Broker = request.getfixturevalue(broker_kind)
    return broker


@pytest.fixture(scope="session")
def tansu() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def kafka_available() -> None:
    """Skips the test (fails it, in CI) when Apache Kafka cannot run here."""
    require("kafka")


@pytest.fixture(scope="session")
def kafka(kafka_available: None) -> Iterator[ApacheKafka]:
    running = start("kafka")
    assert isinstance(running, ApacheKafka)
    with running:
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
def make_topics(broker: Broker, request: pytest.FixtureRequest) -> MakeTopics:
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


class BrokerTiers:
    """Counts each test's outcome under the broker it ran on: its ``broker_kind``, else
    ``kafka`` for tests of Apache Kafka alone and ``tansu`` for tests of Tansu alone."""

    RANK: ClassVar[dict[str, int]] = {"passed": 0, "skipped": 1, "failed": 2}

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.outcomes: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if kind := tier_of(item):
                self.kinds[item.nodeid] = kind

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.kinds or (report.when != "call" and report.passed):
            return
        outcome = "failed" if report.failed else report.outcome
        seen = self.outcomes.get(report.nodeid, "passed")
        self.outcomes[report.nodeid] = max(seen, outcome, key=self.RANK.__getitem__)

    def counts(self) -> dict[str, dict[str, int]]:
        counted = {kind: Counter({outcome: 0 for outcome in self.RANK}) for kind in KINDS}
        for nodeid, outcome in self.outcomes.items():
            counted[self.kinds[nodeid]][outcome] += 1
        return {kind: dict(counter) for kind, counter in counted.items()}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        counts = self.counts()
        if path := os.environ.get(TIER_REPORT):
            Path(path).write_text(json.dumps(counts, indent=2) + "\n")
        if not self.outcomes:
            return
        terminalreporter.write_line("brokers: " + "; ".join(
            f"{kind} {c['passed']} passed, {c['skipped']} skipped"
            + (f", {c['failed']} failed" if c["failed"] else "") for kind, c in counts.items()))


def tier_of(item: pytest.Item) -> str | None:
    """The broker ``item`` runs on, or None if it needs none of the session's."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "broker_kind" in callspec.params:
        return str(callspec.params["broker_kind"])
    names = getattr(item, "fixturenames", ())
    if "kafka_available" in names:
        return "kafka"
    return "tansu" if "tansu" in names else None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(BrokerTiers(), "broker-tiers")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fetch Apache Kafka's jars (once per machine) before the tests, if any test needs
    them: a first download takes minutes, which must not count against a test's timeout."""
    if not any(tier_of(item) == "kafka" for item in session.items) or java_available():
        return
    try:
        fetch()
    except ConfigError as exc:  # the Kafka tests fail on it, each naming it
        session.config.get_terminal_writer().line(f"Apache Kafka tier: {exc}", red=True)
