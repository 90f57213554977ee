"""Fixtures for the fault tests; ``broker`` and ``redis_server`` come from tests/conftest.py.

Every fault test records a row (inputs, lost, duplicates, recovery time, peak memory) with
the ``fault_report`` fixture; the rows are printed as a table at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_infer.adapters.redis import connect
from stream_infer.config import FeatureView, load_settings
from stream_infer.demo.embedded import EmbeddedRedis, free_port
from stream_infer.offline import simulate
from stream_infer.offline.features import load_features

from .harness import Lab, ProxiedBroker, Tally, population
from .proxy import FaultProxy

_ROWS: pytest.StashKey[list[str]] = pytest.StashKey()
HEADER = ("| fault | inputs | lost | duplicates (raw) | alert duplicates (raw) "
          "| duplicates after dedup on alert_id | recovery | peak RSS |")


PACKED_VIEWS = {
    "card": {"key": "cardv:{card_id}", "fields": list(simulate.CARD_FIELDS), "layout": "packed"},
    "merchant": {"key": "merchantv:{merchant_id}", "fields": list(simulate.MERCHANT_FIELDS),
                 "layout": "packed"},
}
"""The feature views as packed vectors (``features`` section of a config), loaded beside
the readable hashes the harness's default config reads."""


def load_population(redis_url: str, directory: Path) -> None:
    """The simulator's card and merchant features into the Redis at ``redis_url``, as hashes
    and as packed vectors (:data:`PACKED_VIEWS`)."""
    client = connect(load_settings(redis={"url": redis_url}).redis)
    views = {"card": ("card:{card_id}", simulate.CARD_FIELDS),
             "merchant": ("merchant:{merchant_id}", simulate.MERCHANT_FIELDS)}
    for path in simulate.write_feature_csvs(population(), directory):
        name = path.name.split("_")[0]
        key, fields = views[name]
        load_features(client, path, name, FeatureView(key=key, fields=list(fields)))
        load_features(client, path, name, FeatureView.model_validate(PACKED_VIEWS[name]))
    client.close()


@pytest.fixture(scope="session")
def features(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session redis-server with the features loaded; returns its URL."""
    load_population(redis_server.url, tmp_path_factory.mktemp("features"))
    return str(redis_server.url)


@pytest.fixture
def lab(broker: Any, features: str, tmp_path: Path) -> Iterator[Lab]:
    """Runs, traffic, output tails and services on the session broker and Redis."""
    made = Lab(broker.bootstrap_servers, features, tmp_path)
    yield made
    made.close()


@pytest.fixture(scope="session")
def proxied_broker() -> Iterator[tuple[ProxiedBroker, FaultProxy]]:
    """A Tansu of its own behind a fault proxy, which it advertises: every client goes through
    the proxy. Each test starts with the proxy healed."""
    port = free_port()
    with FaultProxy(("127.0.0.1", port), kafka=True) as proxy, \
            ProxiedBroker(port, proxy.port) as broker:
        yield broker, proxy


@pytest.fixture
def broker_proxy(proxied_broker: tuple[ProxiedBroker, FaultProxy]) -> Iterator[FaultProxy]:
    _, proxy = proxied_broker
    proxy.heal()
    yield proxy
    proxy.heal()


@pytest.fixture
def proxied_redis(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, FaultProxy]]:
    """A redis-server of its own, with the features loaded, behind a fault proxy."""
    with EmbeddedRedis() as server, FaultProxy((server.host, server.port)) as proxy:
        load_population(server.url, tmp_path)
        yield server, proxy


class FaultReport:
    """Collects one table row per fault."""

    def __init__(self, rows: list[str]) -> None:
        self.rows = rows

    def add(self, fault: str, tally: Tally, recovery_s: float, peak_mib: float) -> None:
        inputs = f"{tally.inputs:,}" + (f" ({tally.input_duplicates} stored twice)"
                                         if tally.input_duplicates else "")
        self.rows.append(
            f"| {fault} | {inputs} | {tally.lost} | {tally.duplicates} "
            f"| {tally.alert_duplicates} | {tally.after_dedup} | {recovery_s:.1f} s "
            f"| {peak_mib:.0f} MiB |")


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(request.config.stash.setdefault(_ROWS, []))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if rows:
        terminalreporter.section("fault tests")
        for line in (HEADER, "|" + " --- |" * 8, *rows):
            terminalreporter.write_line(line)
