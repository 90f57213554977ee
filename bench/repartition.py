"""What a repartition hop would cost per event: the Kafka half of owning window entities.

Issue 23's ratio (windows at >= 0.5x the run without) leaves the window stage about 6 us of
CPU per event on the 2-core machine (docs/BENCHMARKS.md, "How far from the target"). The
design that would let one worker own a terminal's state is Kafka Streams': every event
re-keyed by the window's key through a repartition topic, then read again by the worker
that owns that key. This measures that hop alone, with the service's own clients, configs
and decoder, on the reference workload (``bench/reference.py``, keyed by card as
``bench/e2e.py`` produces it), against what every event already costs at the service's
ingress, in the same run:

- ``ingress``: consume the input topic and decode each batch (``JsonDecoder.many``), as a
  worker does before anything else;
- ``forward``: consume the input topic and produce each record's bytes to the
  repartition topic keyed by its ``merchant_id`` (the service's idempotent, lz4
  producer), until every record is acknowledged: what the re-keying stage adds. The keys
  are looked up by the record's bytes, not decoded: a floor for that stage;
- ``forward_batch``: the same, with each batch handed to librdkafka in one
  ``produce_batch`` call instead of a ``produce`` per record (``KafkaSink``'s way);
- ``reread``: consume the repartition topic and decode it again: what the owning stage
  adds.

Each figure is this process's CPU (librdkafka's threads included) and the broker's, per
event; ``hop`` is the cheaper of the two forwards + ``reread``.

    python bench/repartition.py --json
    python bench/repartition.py --broker kafka --json    # Apache Kafka 4.4 (Java 17+)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from collections.abc import Callable
from typing import Any

import reference
from confluent_kafka import Producer
from e2e import cpu_seconds, host, produce

from stream_infer.adapters.kafka import KafkaSink, KafkaSource
from stream_infer.config import KafkaSettings
from stream_infer.decode import JsonDecoder
from stream_infer.records import Output

BATCH = 2000
IDLE_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    encoded = reference.encoded_events(args.events)
    merchants = {value: json.loads(value)["merchant_id"].encode() for value in encoded}
    result: dict[str, Any] = {
        "events": args.events, "broker": args.broker,
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
                   f"python {platform.python_version()}",
        "load_average_before": round(os.getloadavg()[0], 2)}
    with host(args.broker) as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers,
                                 session_timeout_ms=6000,
                                 consumer={"fetch.wait.max.ms": 100,
                                           "fetch.min.bytes": 1_000_000})
        run = uuid.uuid4().hex[:8]
        source, rekeyed = f"payments-{run}", f"payments-by-merchant-{run}"
        broker.create([source, rekeyed])
        produce(broker, source, encoded)
        decoder = JsonDecoder()

        def decode(values: list[bytes]) -> None:
            decoder.many(values)

        result["ingress"] = consume(settings, source, f"ingress-{run}", args.events,
                                    broker.pid, decode)
        sink = KafkaSink(settings.producer_config())

        def forward(values: list[bytes]) -> None:
            sink.send([Output(rekeyed, merchants[value], value) for value in values])

        result["forward"] = consume(settings, source, f"forward-{run}", args.events,
                                    broker.pid, forward, lambda: sink.flush(60.0))
        sink.close()
        result["forward_batch"] = (  # a client without produce_batch: skipped
            forward_batched(settings, source, rekeyed, f"batch-{run}", merchants, broker.pid,
                            args.events) if hasattr(Producer, "produce_batch") else None)
        result["reread"] = consume(settings, rekeyed, f"reread-{run}", args.events,
                                   broker.pid, decode)
    cheaper = min(filter(None, (result["forward"], result["forward_batch"])),
                  key=lambda f: f["worker_cpu_us_per_event"])
    hop = {side: round(cheaper[side] + result["reread"][side], 2)
           for side in ("worker_cpu_us_per_event", "broker_cpu_us_per_event")}
    result["hop"] = hop
    ingress = result["ingress"]["worker_cpu_us_per_event"]
    result["hop_vs_ingress_worker_cpu"] = round(hop["worker_cpu_us_per_event"] / ingress, 2)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result) if args.json else
          "\n".join(f"{name:>28}  {value}" for name, value in result.items()))


def forward_batched(settings: KafkaSettings, source: str, rekeyed: str, group: str,
                    merchants: dict[bytes, bytes], broker_pid: int, count: int
                    ) -> dict[str, float]:
    """``forward`` with each batch handed to librdkafka in one ``produce_batch`` call."""
    producer = Producer(settings.producer_config())

    def forward(values: list[bytes]) -> None:
        messages = [{"key": merchants[value], "value": value} for value in values]
        while messages:
            queued = producer.produce_batch(rekeyed, messages)
            failed = [m for m in messages if "_error" in m]
            if len(failed) != len(messages) - queued:
                raise SystemExit(f"produce_batch: {len(failed)} failed, "
                                 f"{len(messages) - queued} not queued")
            messages = [{"key": m["key"], "value": m["value"]} for m in failed]
            producer.poll(0.01 if messages else 0)

    def flushed() -> None:
        if producer.flush(60.0):
            raise SystemExit("produce_batch: records left unacknowledged")

    return consume(settings, source, group, count, broker_pid, forward, flushed)


def consume(settings: KafkaSettings, topic: str, group: str, count: int, broker_pid: int,
            handle: Callable[[list[bytes]], None],
            finish: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Consume ``count`` records of ``topic`` from its start in a group of one, handing each
    batch's values to ``handle``, then ``finish``; the wall time, and this process's and the
    broker's CPU per event, from the first record on (the group's join is not the hop's)."""
    reader = KafkaSource({**settings.consumer_config(), "group.id": group}, [topic])
    taken, began, idle = 0, None, time.monotonic()
    try:
        while taken < count:
            values = [message.value() for message in reader.consume(BATCH, 1.0)]
            if not values and time.monotonic() - idle > IDLE_S:
                raise SystemExit(f"{topic}: {taken} of {count} records, then none for "
                                 f"{IDLE_S:.0f} s")
            idle = time.monotonic() if values else idle
            if values and began is None:
                began = time.perf_counter(), time.process_time(), cpu_seconds([broker_pid])
            if values:
                handle(values)
            taken += len(values)
        finish()
    finally:
        reader.close()
    assert began is not None
    wall = time.perf_counter() - began[0]
    mine, theirs = time.process_time() - began[1], cpu_seconds([broker_pid]) - began[2]
    return {"wall_s": round(wall, 2),
            "worker_cpu_us_per_event": round(mine / count * 1e6, 2),
            "broker_cpu_us_per_event": round(theirs / count * 1e6, 2)}


if __name__ == "__main__":
    main()
