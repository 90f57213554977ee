"""The Kafka adapter: consumer group source, idempotent producer sink, topic admin.

The only module that imports ``confluent_kafka``. librdkafka errors are translated into
:class:`~stream_infer.errors.BrokerError` / :class:`~stream_infer.errors.DeliveryError` here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from ..delivery import Delivery
from ..errors import BrokerError, DeliveryError
from ..records import Output

log = logging.getLogger(__name__)
TP = tuple[str, int]
_QUIET = {KafkaError._PARTITION_EOF, KafkaError._NO_OFFSET}
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


class AssignmentWatch:
    """How long a group member has waited for an assignment; one warning when it is too long.

    The wait starts when the member subscribes and when a rebalance begins for it
    (:meth:`rebalancing`), and ends when the group hands it an assignment (:meth:`settled`),
    even one of no partitions: a member of a group with more members than partitions is
    idle, not waiting. Past ``sessions`` session timeouts the group is taken to be stuck:
    :meth:`check` logs one warning naming the group (another only after it settled and got
    stuck again) and :meth:`stalled` says so, for readiness.
    """

    def __init__(self, group: str, session_timeout_s: float, *, sessions: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self.sessions = sessions
        self.after_s = sessions * session_timeout_s
        self._clock = clock
        self._since: float | None = clock()
        self._warned = False

    def unassigned_for(self) -> float | None:
        """Seconds the member has waited for an assignment; None while it has one."""
        since = self._since
        return None if since is None else self._clock() - since

    def stalled(self) -> str | None:
        """A sentence naming the group and the wait once it passed the limit, else None."""
        waited = self.unassigned_for()
        if waited is None or waited < self.after_s:
            return None
        return (f"no assignment from group {self.group!r} for {waited:.0f}s "
                f"(over {self.sessions} session timeouts)")

    def rebalancing(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def settled(self) -> None:
        waited = self.unassigned_for()
        if self._warned and waited is not None:
            log.info("group %r assigned this member again after %.0fs", self.group, waited)
        self._since, self._warned = None, False

    def check(self) -> None:
        """Log the warning if the wait just passed the limit."""
        if not self._warned and (stall := self.stalled()):
            self._warned = True
            log.warning("%s: is the group stuck in a rebalance?", stall)


class KafkaSource:
    """A consumer-group member with offsets stored by the application.

    Tracks its assignment through the rebalance callbacks, so that records and offsets of a
    partition revoked (or lost) during a ``consume`` call are never handed out or stored.
    Stored offsets are committed periodically by librdkafka, synchronously on revoke, and on
    :meth:`close`.

    :attr:`watch` notices a group that stops assigning (see :class:`AssignmentWatch`): a
    rebalance begins when partitions are revoked or lost, or when librdkafka's statistics
    (every ``statistics.interval.ms``, 5 s unless configured) show the member's join state
    leave ``steady``, which catches a rebalance that never ends while the member keeps its
    partitions (cooperative-sticky lets it).
    """

    LAG_REFRESH_S = 5.0
    STALL_SESSIONS = 3

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        session_s = float(config.get("session.timeout.ms", 45_000)) / 1000
        self.watch = AssignmentWatch(str(config.get("group.id")), session_s,
                                     sessions=self.STALL_SESSIONS, clock=clock)
        self.consumer = Consumer({"statistics.interval.ms": 5000, **config,
                                  "stats_cb": self._on_stats})
        self.assigned: set[TP] = set()
        self.lag: dict[TP, int] = {}
        self._lag_at = 0.0
        self.rebalances = 0
        self._paused = False
        self._revoked = False
        self.consumer.subscribe(
            list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to ``max_records`` records, waiting at most ``timeout_s``; errors handled here."""
        self._revoked = False
        messages = self.consumer.consume(max_records, timeout_s)
        records = [m for m in messages if m.error() is None]
        if len(records) != len(messages):
            for m in messages:
                error = m.error()
                if error is not None:
                    self._on_error(error)
        if self._revoked:
            records = [m for m in records if (m.topic(), m.partition()) in self.assigned]
        if time.monotonic() - self._lag_at > self.LAG_REFRESH_S:
            self._refresh_lag()
        self.watch.check()
        return records

    def store(self, offsets: Mapping[TP, int]) -> None:
        """Store next-offsets for commit, skipping partitions no longer assigned."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in self.assigned]
        if tps:
            try:
                self.consumer.store_offsets(offsets=tps)
            except KafkaException as exc:
                log.warning("offset store refused: %s", exc.args[0])

    def seek(self, offsets: Mapping[TP, int]) -> None:
        """Rewind assigned partitions so a batch whose outputs failed is consumed again."""
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in self.assigned:
                try:
                    self.consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as exc:
                    log.warning("seek %s[%d] failed: %s", topic, partition, exc.args[0])

    def pause(self) -> None:
        self._paused = True
        self.consumer.pause(self.consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        self.consumer.resume(self.consumer.assignment())

    def commit(self) -> None:
        """Commit the stored offsets now (synchronously)."""
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _QUIET:
                log.warning("commit failed: %s", exc.args[0])

    def _refresh_lag(self) -> None:
        """Records behind the high watermark per assigned partition, from local state only.

        Computed on the consuming thread (librdkafka calls on a consumer that another thread
        is polling can block); :attr:`lag` is what metrics scrapes read.
        """
        self._lag_at = time.monotonic()
        lags = {}
        try:
            for tp in self.consumer.position([TopicPartition(t, p) for t, p in self.assigned]):
                _, high = self.consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
                if tp.offset >= 0 and high >= 0:
                    lags[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        except KafkaException as exc:
            log.debug("lag unavailable: %s", exc)
        self.lag = lags

    def close(self) -> None:
        """Commit stored offsets and leave the group."""
        self.commit()
        self.consumer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self.watch.settled()
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self._lag_at = 0.0
        log.info("assigned %s", _names(partitions))
        if self._paused and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self.commit()
        self._drop(partitions)
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self._drop(partitions)
        log.warning("assignment lost (nothing committed for it): %s", _names(partitions))

    def _drop(self, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        self._revoked = True
        self.watch.rebalancing()

    def _on_stats(self, stats: str) -> None:
        state = json.loads(stats).get("cgrp", {}).get("join_state")
        if state == "steady":
            self.watch.settled()
        elif state is not None:
            self.watch.rebalancing()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise BrokerError(f"fatal consumer error: {error.str()}")
        if error.code() not in _QUIET:
            log.warning("consumer: %s", error.str())


def _produce(producer: Producer, output: Output,
             on_delivery: Callable[[KafkaError | None, Message], None] | None = None) -> None:
    """Queue one output, waiting for queue space instead of dropping it."""
    while True:
        try:
            producer.produce(output.topic, output.value, output.key,
                             headers=output.headers or None, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


class KafkaSink:
    """An idempotent producer; :meth:`flush` raises unless every output was acknowledged."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = {**config, "error_cb": self._on_client_error}
        self.producer = Producer(self._config)
        self._failures = 0
        self._last_failure: KafkaError | None = None
        self._fatal: KafkaError | None = None

    def send(self, outputs: Sequence[Output]) -> None:
        """Queue outputs for delivery; waits for queue space instead of dropping."""
        self.send_tracked(outputs)

    def send_tracked(self, outputs: Sequence[Output]) -> Delivery:
        """Queue outputs like :meth:`send`; the returned :class:`Delivery` fills in as
        :meth:`poll`, :meth:`wait` or :meth:`flush` serve their acknowledgements."""
        self._raise_if_fatal()
        delivery = Delivery(len(outputs))

        def acknowledged(error: KafkaError | None, message: Message) -> None:
            delivery.settle(None if error is None else error.str())
            self._on_delivery(error, message)

        for out in outputs:
            _produce(self.producer, out, acknowledged)
        self.producer.poll(0)
        return delivery

    def poll(self) -> None:
        """Serve the acknowledgements that have arrived; never blocks."""
        self.producer.poll(0)
        self._raise_if_fatal()

    def wait(self, delivery: Delivery, timeout_s: float) -> None:
        """Serve acknowledgements until ``delivery`` is settled or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while delivery.pending and (left := deadline - time.monotonic()) > 0:
            self.producer.poll(min(left, 0.1))
        self._raise_if_fatal()

    def flush(self, timeout_s: float) -> None:
        """Wait for every queued output; raise DeliveryError if any was not acknowledged."""
        remaining = self.producer.flush(timeout_s)
        failures, last = self._failures, self._last_failure
        self._failures, self._last_failure = 0, None
        self._raise_if_fatal()
        if remaining or failures:
            reason = last.str() if last else "timed out"
            if last is not None and last.code() in _FENCED:
                self._renew(reason)
            raise DeliveryError(
                f"{failures} outputs failed, {remaining} unacknowledged after {timeout_s}s: "
                f"{reason}"
            )

    def _renew(self, reason: str) -> None:
        """Replace a producer the broker no longer accepts (its epoch was bumped after an
        in-flight timeout and answered as fenced), dropping what it still holds: the runner
        rewinds the batch and sends it again through the new one."""
        log.warning("producer refused as fenced (%s): starting a new producer", reason)
        self.producer.purge()
        self.producer.flush(0)
        self.producer = Producer(self._config)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``) and release the client."""
        self.producer.flush(timeout_s)
        del self.producer

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures += 1
            self._last_failure = error

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        else:
            log.warning("producer: %s", error.str())

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise BrokerError(f"fatal producer error: {self._fatal.str()}")


class KafkaTransactions:
    """Exactly-once within Kafka: a batch's outputs and its input offsets in one transaction.

    ``commit`` begins a transaction, produces the outputs, adds the next offsets with the
    consumer's group metadata (``send_offsets_to_transaction``, so a zombie from an older
    group generation is fenced) and commits. An abortable error aborts the transaction and
    raises :class:`DeliveryError` (the runner rewinds and retries the batch); a fatal one
    (this producer was fenced by a newer instance) raises :class:`BrokerError`, and the
    process must exit. Consumers of the outputs read with ``isolation.level=read_committed``.
    """

    def __init__(self, config: Mapping[str, Any], consumer: Consumer,
                 timeout_s: float = 30.0) -> None:
        self.producer = Producer(dict(config))
        self.consumer = consumer
        self.timeout_s = timeout_s
        try:
            self.producer.init_transactions(timeout_s)
        except KafkaException as exc:
            raise BrokerError(f"cannot initialise transactions: {exc.args[0].str()}") from exc

    def commit(self, outputs: Sequence[Output], offsets: Mapping[TP, int]) -> None:
        try:
            self.producer.begin_transaction()
            for output in outputs:
                _produce(self.producer, output)
            self.producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                self.consumer.consumer_group_metadata(), self.timeout_s)
            self.producer.commit_transaction(self.timeout_s)
        except KafkaException as exc:
            self._fail(exc.args[0])

    def close(self) -> None:
        self.producer.flush(self.timeout_s)

    def _fail(self, error: KafkaError) -> None:
        if error.code() in _FENCED:
            raise BrokerError(f"fenced by a newer instance of this producer: {error.str()}")
        if error.fatal():
            raise BrokerError(f"transactional producer failed for good: {error.str()}")
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise BrokerError(f"abort failed for good: {exc.args[0].str()}") from exc
        raise DeliveryError(f"transaction aborted: {error.str()}")


def broker_reachable(config: Mapping[str, Any], timeout_s: float = 2.0) -> Callable[[], bool]:
    """A readiness check with its own admin client (never the consumer's, which is busy)."""
    admin = AdminClient(dict(config))

    def check() -> bool:
        try:
            admin.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return True

    return check


def ensure_topics(
    config: Mapping[str, Any],
    topics: Sequence[str],
    *,
    create: bool,
    partitions: int,
    replication_factor: int,
    timeout_s: float = 10.0,
    topic_config: Mapping[str, str] | None = None,
) -> list[str]:
    """Check that ``topics`` exist, creating the missing ones if allowed; return those created.

    ``topic_config`` (e.g. ``{"retention.ms": "-1"}``) is set on the topics created here only:
    a topic that exists keeps its configuration."""
    admin = AdminClient(dict(config))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {config.get('bootstrap.servers')} within {timeout_s:g}s: "
            f"{exc.args[0].str()}"
        ) from exc
    missing = [t for t in dict.fromkeys(topics)
               if t not in metadata.topics or metadata.topics[t].error is not None]
    if missing and not create:
        raise BrokerError(
            f"missing topics {missing} and kafka.create_topics is off: create them or turn it on"
        )
    futures = admin.create_topics(
        [NewTopic(t, partitions, replication_factor, config=dict(topic_config or {}))
         for t in missing], request_timeout=timeout_s
    ) if missing else {}
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from exc
    return missing


def topic_configs(config: Mapping[str, Any], topic: str, timeout_s: float = 10.0
                  ) -> dict[str, str]:
    """The configuration of ``topic`` as the broker describes it (DescribeConfigs), name to
    value; entries without a value are left out, and a broker may list only the entries set
    on the topic (Tansu does). Raises :class:`~stream_infer.errors.BrokerError` when the
    broker does not answer, does not know the topic, or does not support the request."""
    admin = AdminClient(dict(config))
    try:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)],
                                         request_timeout=timeout_s)
        entries = next(iter(futures.values())).result(timeout=timeout_s + 5)
    except (KafkaException, TimeoutError) as exc:
        error = exc.args[0] if exc.args else None
        why = error.str() if isinstance(error, KafkaError) else str(exc) or "timed out"
        raise BrokerError(f"cannot describe topic {topic!r}: {why}") from exc
    return {name: str(entry.value) for name, entry in entries.items() if entry.value is not None}


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def produce_stream(
    config: Mapping[str, Any],
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    rate_per_s: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Produce ``(key, value)`` pairs at ``rate_per_s`` (0 = as fast as possible); return count.

    Used by ``stream-infer simulate`` and the demo. Raises DeliveryError if any record failed.
    """
    sink = KafkaSink(config)
    started, sent = time.monotonic(), 0
    for key, value in records:
        if should_stop():
            break
        sink.send([Output(topic, key, value)])
        sent += 1
        if rate_per_s > 0 and sent % 100 == 0:
            ahead = sent / rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    try:
        sink.flush(60.0)
    finally:
        sink.close()
    return sent


def read_one(config: Mapping[str, Any], topic: str, timeout_s: float = 5.0) -> bytes | None:
    """The value of the first record of ``topic`` (any partition), without joining a group."""
    consumer = Consumer({**config, "group.id": "stream-infer-peek", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                return message.value()
        return None
    finally:
        consumer.close()


PartitionRange = tuple[int, int]
"""``[start, end)`` offsets of one partition."""

BEGINNING = OFFSET_BEGINNING
"""A start offset: the first record the partition still holds."""


@dataclass(frozen=True, slots=True)
class BrokerOffsets:
    """What the broker says of one partition, unverified: its low and high watermarks and,
    for a time, the offset ``offsets_for_times`` gave (None: no record at or after it)."""

    low: int
    high: int
    at_time: int | None = None


@dataclass(slots=True)
class PartitionRead:
    """One partition of a bounded read, and what reading it found.

    Reading starts at ``start`` (an offset, or :data:`BEGINNING`) and stops after offset
    ``end - 1``, or at the partition's end of log as found by reading to it (librdkafka's
    partition EOF), never at a watermark. :func:`read_range` fills in the rest as records
    arrive: records read, first and last offset read, ``reached`` (reading proved it got to
    this offset: past a record, or the end of log), ``end_of_log`` if reading got there, and
    ``reported_end``, the high watermark the broker reported before reading (a claim, to
    compare). ``why`` says, for a summary, why reading starts at ``start``.
    """

    partition: int
    start: int = BEGINNING
    end: int | None = None
    why: str = "the beginning"
    records: int = 0
    first: int | None = None
    last: int | None = None
    reached: int | None = None
    end_of_log: int | None = None
    reported_end: int | None = None

    @property
    def done(self) -> bool:
        """Reading got to ``end`` or to the end of log."""
        return self.end_of_log is not None or (
            self.end is not None and self.reached is not None and self.reached >= self.end)


def broker_offsets(config: Mapping[str, Any], topic: str, when_ms: int | None = None, *,
                   timeout_s: float = 10.0) -> dict[int, BrokerOffsets]:
    """What the broker says of each partition of ``topic``, and of ``when_ms`` if given.

    Claims, not facts: a broker may under-report its high watermark, or answer
    ``offsets_for_times`` by append time or by batch (Tansu does all three).
    """
    consumer = _reader(config)
    try:
        claims = {}
        for partition in _partitions(consumer, topic, timeout_s):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout_s)
            at = _offset_at(consumer, topic, partition, when_ms, -1, timeout_s)
            claims[partition] = BrokerOffsets(int(low), int(high), at if at >= 0 else None)
        return claims
    except KafkaException as exc:
        raise BrokerError(f"cannot list the offsets of {topic!r}: {exc}") from exc
    finally:
        consumer.close()


def resolve_range(config: Mapping[str, Any], topic: str, *, from_ms: int | None = None,
                  to_ms: int | None = None, timeout_s: float = 10.0) -> dict[int, PartitionRange]:
    """The broker's ``[start, end)`` offsets per partition for a time range: for each bound,
    ``offsets_for_times`` (the first offset whose timestamp is at or after it); without one,
    the low / high watermark.

    Unverified (see :func:`broker_offsets`): replay reads by :class:`PartitionRead` instead,
    to each end of log, and uses the broker's offset for a time only as a hint it checks.
    """
    starts = broker_offsets(config, topic, from_ms, timeout_s=timeout_s)
    ends = starts if to_ms is None else broker_offsets(config, topic, to_ms, timeout_s=timeout_s)
    ranges = {}
    for partition, claim in starts.items():
        start = claim.low if from_ms is None or claim.at_time is None else claim.at_time
        upto = ends[partition].at_time
        end = claim.high if to_ms is None or upto is None else min(upto, claim.high)
        ranges[partition] = (max(start, claim.low), max(end, start))
    return ranges


def read_range(config: Mapping[str, Any], topic: str, parts: Mapping[int, PartitionRead], *,
               batch: int = 5000, idle_timeout_s: float = 30.0, timeout_s: float = 10.0
               ) -> Iterator[list[Message]]:
    """Batches of the records of ``parts`` (see :class:`PartitionRead`), by assignment: no
    group join, no commits.

    Each partition is read from its start to its ``end``, or to its end of log when that
    comes first or there is no ``end``; ``parts`` are filled in as records arrive, so the
    caller can tell a range read whole from one the log cut short. Raises BrokerError on a
    broker error, on a record before a partition's start (its start was past the end of
    the log), or when nothing arrives for ``idle_timeout_s`` before every partition is done.
    """
    pending = {p: part for p, part in parts.items()
               if part.end is None or part.end > max(part.start, 0)}
    if not pending:
        return
    consumer = _reader(config)
    try:
        for p, claimed in pending.items():
            claimed.reported_end = int(consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s)[1])
        consumer.assign([TopicPartition(topic, p, part.start) for p, part in pending.items()])
        last_progress = time.monotonic()
        while pending:
            kept = []
            for message in consumer.consume(batch, 0.5):
                part = pending.get(message.partition() or 0)
                if part is None:
                    continue
                if _take(topic, part, message):
                    kept.append(message)
                if part.done:
                    del pending[part.partition]
            if kept:
                last_progress = time.monotonic()
                yield kept
            elif time.monotonic() - last_progress > idle_timeout_s:
                raise BrokerError(
                    f"no record and no end of log from {topic} for {idle_timeout_s:.0f}s; "
                    "unfinished: " + ", ".join(map(_standing, pending.values())))
    except KafkaException as exc:
        raise BrokerError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def read_to_end(config: Mapping[str, Any], topic: str, *, batch: int = 5000
                ) -> Iterator[list[Message]]:
    """Every record of ``topic`` from the beginning to each partition's end of log."""
    parts = {p: PartitionRead(p) for p in broker_offsets(config, topic)}
    return read_range(config, topic, parts, batch=batch)


def _take(topic: str, part: PartitionRead, message: Message) -> bool:
    """Account ``message`` to ``part``; whether it is a record of the range."""
    error, offset = message.error(), message.offset() or 0
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            raise BrokerError(f"reading {topic}[{part.partition}]: {error}")
        part.end_of_log = part.reached = offset
        return False
    if offset < part.start:
        raise BrokerError(f"reading {topic}[{part.partition}] from offset {part.start:,}: the "
                          f"broker sent offset {offset:,} (the log ends before the start?)")
    if part.end is not None and offset >= part.end:
        part.reached = offset
        return False
    part.records += 1
    if part.first is None:
        part.first = offset
    part.last, part.reached = offset, offset + 1
    return True


def _standing(part: PartitionRead) -> str:
    read = "nothing read" if part.last is None else f"read to offset {part.last:,}"
    return f"[{part.partition}] {read}, the broker's high watermark {part.reported_end}"


def _reader(config: Mapping[str, Any]) -> Consumer:
    return Consumer({**config, "group.id": "stream-infer-replay", "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "enable.partition.eof": True,
                     "auto.offset.reset": "earliest", "isolation.level": "read_committed"})


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise BrokerError(f"topic {topic!r} not found")
    return sorted(metadata.partitions)


def _offset_at(consumer: Consumer, topic: str, partition: int, when_ms: int | None,
               default: int, timeout_s: float) -> int:
    if when_ms is None:
        return int(default)
    (found,) = consumer.offsets_for_times([TopicPartition(topic, partition, when_ms)],
                                          timeout=timeout_s)
    return int(default) if found.offset < 0 else int(found.offset)
