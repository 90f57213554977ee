"""The demo's traffic reaches the broker as soon as it is offered: its records carry no wait
of the producer's own into the event-to-alert latency the demo prints."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Producer

from stream_infer.demo.embedded import EmbeddedBroker
from stream_infer.demo.run import default_models_dir, demo_settings, load_generator_config

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tansu: EmbeddedBroker) -> EmbeddedBroker:
    """The demo's broker, Tansu, whose producer-id wait this module is about."""
    return tansu


def first_ack_s(config: dict[str, Any], topic: str) -> float:
    """Seconds from a new producer's first record to its acknowledgement."""
    acked: list[float] = []
    producer = Producer(config)
    started = time.monotonic()
    producer.produce(topic, b"{}", b"k",
                     on_delivery=lambda err, msg: acked.append(time.monotonic() - started))
    while not acked and time.monotonic() - started < 10:
        producer.poll(0.001)
    producer.flush(10)
    assert acked, "never acknowledged"
    return acked[0]


def test_the_load_generator_is_acknowledged_at_once_not_after_a_producer_id(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    settings = demo_settings(broker.bootstrap_servers, "redis://127.0.0.1:1/0",
                             default_models_dir())
    took = first_ack_s(load_generator_config(settings), unique_topic)
    assert took < 0.25, f"the demo's first record waited {took:.3f}s in its producer"
    assert settings.kafka.producer_config()["enable.idempotence"] is True  # the service's
