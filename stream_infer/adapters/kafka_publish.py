"""A producer whose records carry the caller's timestamps (``stream-infer topics publish``).

History published for a backtest must keep its event times as record timestamps: a replay's
``--from``/``--to`` select by them. :class:`TimestampedSink` is :class:`~.kafka.KafkaSink`
(idempotent, ``acks=all``, :meth:`flush` raises unless every record was acknowledged) with
one more way to send.
"""

from __future__ import annotations

from .kafka import KafkaSink


class TimestampedSink(KafkaSink):
    """:class:`~.kafka.KafkaSink` plus :meth:`send_at`: one record, its own timestamp."""

    def send_at(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int) -> None:
        """Queue one record with CreateTime ``timestamp_ms`` (epoch ms, at least 1: librdkafka
        reads 0 as "now"); waits for queue space instead of dropping."""
        if timestamp_ms < 1:
            raise ValueError(f"a Kafka timestamp is at least 1 ms after the epoch: {timestamp_ms}")
        while True:
            try:
                self.producer.produce(topic, value, key, timestamp=timestamp_ms,
                                      on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
