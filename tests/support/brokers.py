"""The brokers the tests run on: Tansu (embedded, always there) and Apache Kafka 4.4.

:func:`start` starts either, optionally advertising another port than the one it listens on
(the fault proxy's). :func:`require` skips a test that needs Apache Kafka where Java 17+ (or
Maven, for jars not cached yet) is missing, and fails it instead when ``CI`` is set: CI must
run the Kafka tier, not skip it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream_infer.demo.apache_kafka import ApacheKafka, java_available
from stream_infer.demo.embedded import EmbeddedBroker

KINDS = ("tansu", "kafka")
Broker = EmbeddedBroker | ApacheKafka

KAFKA_CONFIG = {
    "group.min.session.timeout.ms": "1000",
    "log.retention.ms": "-1",
    "log.message.timestamp.after.max.ms": str(2**63 - 1),
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
}
"""What the tests assume of a broker, beyond :func:`~stream_infer.demo.apache_kafka.
server_properties`: sessions of a few seconds (the broker's minimum is 6 s by default),
records stamped years ago never deleted by time retention (replay histories) and records
stamped a day ahead accepted (by default no more than an hour ahead); a transaction left
open by a killed process aborted soon after its timeout."""


def require(kind: str) -> None:
    """Skip the test when ``kind`` cannot run here; fail it instead when ``CI`` is set."""
    reason = java_available() if kind == "kafka" else None
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Apache Kafka tier, but {reason}", pytrace=False)
    pytest.skip(f"Apache Kafka tier: {reason}")


def start(kind: str, port: int | None = None, advertised_port: int | None = None) -> Broker:
    """A started broker of ``kind`` on ``port`` (a free one if ``None``) that advertises
    ``advertised_port`` (its own if ``None``): clients bootstrap on either, then talk to the
    advertised one. The caller stops it."""
    if kind == "tansu":
        return _AdvertisingTansu(port, advertised_port).start()
    if kind != "kafka":
        raise ValueError(f"unknown broker kind {kind!r} (known: {', '.join(KINDS)})")
    config = dict(KAFKA_CONFIG)
    if advertised_port is not None:
        config["advertised.listeners"] = f"PLAINTEXT://127.0.0.1:{advertised_port}"
    return ApacheKafka(port, broker_config=config).start()


class _AdvertisingTansu(EmbeddedBroker):
    """A Tansu that may advertise another port than the one it listens on."""

    def __init__(self, port: int | None, advertised_port: int | None) -> None:
        super().__init__(port)
        self.advertised_port = advertised_port

    def command(self, workdir: Path) -> list[str]:
        command = super().command(workdir)
        if self.advertised_port is not None:
            command[command.index("--advertised-listener-url") + 1] = \
                f"tcp://{self.host}:{self.advertised_port}"
        return command
