"""Fixtures for the fault tests; ``broker``, ``broker_kind`` and ``redis_server`` come from
tests/conftest.py, so every fault test runs on Tansu and on Apache Kafka.

Every fault test records a row (broker, inputs, lost, duplicates, recovery time, peak memory)
with the ``fault_report`` fixture; the rows are printed as a table at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.service.ports import server_ports
from tests.support.brokers import Broker, start
from tests.support.population import load_population

from .harness import FaultReport, Lab
from .proxy import FaultProxy

_ROWS: pytest.StashKey[list[str]] = pytest.StashKey()


@pytest.fixture(scope="session")
def features(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session redis-server with the features loaded (hashes and packed vectors);
    returns its URL."""
    load_population(redis_server.url, tmp_path_factory.mktemp("features"), packed=True)
    return str(redis_server.url)


@pytest.fixture
def lab(broker: Any, features: str, tmp_path: Path) -> Iterator[Lab]:
    """Runs, traffic, output tails and services on the session broker and Redis."""
    made = Lab(broker.bootstrap_servers, features, tmp_path)
    yield made
    made.close()


@pytest.fixture(scope="session")
def proxied_broker(broker_kind: str) -> Iterator[tuple[Broker, FaultProxy]]:
    """A broker of its own (of ``broker_kind``) behind a fault proxy, which it advertises:
    every client goes through the proxy after bootstrap. Each test starts with the proxy
    healed."""
    port = server_ports()
    with FaultProxy(("127.0.0.1", port), kafka=True) as proxy, \
            start(broker_kind, port, advertised_port=proxy.port) as broker:
        yield broker, proxy


@pytest.fixture
def broker_proxy(proxied_broker: tuple[Broker, FaultProxy]) -> Iterator[FaultProxy]:
    _, proxy = proxied_broker
    proxy.heal()
    yield proxy
    proxy.heal()


@pytest.fixture
def proxied_redis(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, FaultProxy]]:
    """A redis-server of its own, with the features loaded, behind a fault proxy."""
    with EmbeddedRedis() as server, FaultProxy((server.host, server.port)) as proxy:
        load_population(server.url, tmp_path, packed=True)
        yield server, proxy


@pytest.fixture
def fault_report(request: pytest.FixtureRequest, broker_kind: str) -> FaultReport:
    return FaultReport(request.config.stash.setdefault(_ROWS, []), broker_kind)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if rows:
        terminalreporter.section("fault tests")
        for line in (FaultReport.HEADER, "|" + " --- |" * FaultReport.COLUMNS, *rows):
            terminalreporter.write_line(line)
