"""The Fraud-Detection-Handbook's transaction simulator, step for step and seed for seed
(Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection*, chapter 3,
"Transaction data simulator"), and its labels as a stream that arrives late.

1. customers (``generate_customer_profiles_table``): a point of the 100 x 100 grid, a mean
   amount U(5, 100) with standard deviation mean / 2, U(0, 4) transactions a day;
2. terminals (``generate_terminal_profiles_table``): a point of the grid; each customer uses
   the terminals closer than ``radius`` (5);
3. transactions (``generate_transactions_table``): each day a Poisson number per customer,
   at a time around noon (normal, standard deviation 20,000 s; a time outside the day is
   dropped, as the Handbook drops it), amount normal (a negative one redrawn uniform in
   [0, 2 x mean)), rounded to cents, at one of the customer's terminals at random;
4. frauds (``add_frauds``): every amount over 220 (scenario 1); every day 2 terminals drawn
   at random are compromised for 28 days, all their transactions fraud (scenario 2); every
   day 3 customers drawn at random are compromised for 14 days, a third of their
   transactions of those days (drawn at random) have their amount multiplied by 5 and are
   fraud (scenario 3). The loops run over the days before the last one, as the Handbook's do.

Seed 0 draws what the Handbook draws: the customers from ``RandomState(0)``, the terminals
from ``RandomState(1)``, customer ``c``'s transactions from ``RandomState(c)`` and
``random.seed(c)``, day ``d``'s compromised terminals and customers from ``RandomState(d)``
(pandas' ``sample(random_state=d)``) and its scenario-3 picks from ``random.seed(d)``; seed
``s`` adds ``s`` to each of those seeds. Transactions in the same second are ordered by
customer, then as drawn (the Handbook's unstable sort leaves their order to the machine).

Events carry ``customer_id``, ``terminal_id`` (also the ``merchant_id``), the customer's id
as ``card_id`` (the Handbook's customer is its card), the ``label`` and, an extra field the
decoder ignores, ``fraud_scenario``. Labels (``schemas/label.schema.json``) arrive
``label_time = event_time + delay``, the delay fixed or uniform in a range (:class:`Delay`).
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ..config import KafkaSettings, duration_ms
from ..decode import LABEL_SCHEMA_ID, encode_avro_label, encode_avro_transaction
from ..errors import ConfigError
from ..records import epoch_ms

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
DAY_S = 86_400
START = "2018-04-01"
"""The Handbook's first day."""
FRAUD_AMOUNT = 220.0
TERMINAL_DAYS, CUSTOMER_DAYS = 28, 14
SCENARIOS = ("genuine", "amount over 220", "compromised terminal", "compromised customer")


@dataclass(frozen=True)
class Population:
    """Customers (location, mean and standard deviation of amounts, transactions a day),
    terminals (location) and the terminals each customer uses."""

    customer_xy: Floats
    mean_amount: Floats
    std_amount: Floats
    tx_per_day: Floats
    terminal_xy: Floats
    available: list[list[int]]

    @property
    def customers(self) -> int:
        return len(self.mean_amount)

    @property
    def terminals(self) -> int:
        return len(self.terminal_xy)


def make_population(customers: int = 5000, terminals: int = 10_000, radius: float = 5.0,
                    seed: int = 0) -> Population:
    """Customer and terminal profiles, and each customer's terminals within ``radius``."""
    draws = np.random.RandomState(seed).uniform([0, 0, 5, 0], [100, 100, 100, 4],
                                                (customers, 4))
    terminal_xy = np.random.RandomState(seed + 1).uniform(0, 100, (terminals, 2))
    mean = draws[:, 2]
    available = [np.where(np.sqrt(np.sum(np.square(xy - terminal_xy), axis=1)) < radius)[0]
                 .tolist() for xy in draws[:, :2]]
    return Population(draws[:, :2], mean, mean / 2, draws[:, 3], terminal_xy, available)


@dataclass(frozen=True)
class Transactions:
    """Transactions in time order (the position is the Handbook's ``TRANSACTION_ID``):
    seconds since the first day's midnight, day, customer, terminal, amount, and, once
    :func:`add_frauds` has run, fraud (0/1) and scenario (0-3)."""

    seconds: Ints
    days: Ints
    customers: Ints
    terminals: Ints
    amounts: Floats
    fraud: npt.NDArray[np.int8]
    scenario: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.seconds)


def customer_transactions(pop: Population, customer: int, days: int, seed: int = 0
                          ) -> list[tuple[int, int, int, float]]:
    """One customer's ``(second, day, terminal, amount)``, as the Handbook draws them."""
    draw = np.random.RandomState(seed + customer)
    pick = random.Random(seed + customer)
    mean, std, rate = (float(pop.mean_amount[customer]), float(pop.std_amount[customer]),
                       float(pop.tx_per_day[customer]))
    terminals = pop.available[customer]
    out = []
    for day in range(days):
        for _ in range(draw.poisson(rate)):
            second = int(draw.normal(DAY_S / 2, 20_000))
            if not 0 < second < DAY_S:
                continue
            amount = draw.normal(mean, std)
            if amount < 0:
                amount = draw.uniform(0, mean * 2)
            amount = float(np.round(amount, decimals=2))
            if terminals:
                out.append((second + day * DAY_S, day, pick.choice(terminals), amount))
    return out


def generate(pop: Population, days: int = 183, seed: int = 0) -> Transactions:
    """Every customer's transactions over ``days`` days in time order, frauds added."""
    return add_frauds(draw_transactions(pop, days, seed), pop, seed)


def draw_transactions(pop: Population, days: int = 183, seed: int = 0) -> Transactions:
    """Every customer's transactions over ``days`` days in time order, all genuine."""
    rows = [(second, day, customer, terminal, amount)
            for customer in range(pop.customers)
            for second, day, terminal, amount in customer_transactions(pop, customer, days,
                                                                       seed)]
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    seconds = np.array(columns[0], np.int64)
    order = np.argsort(seconds, kind="stable")
    return Transactions(seconds[order], np.array(columns[1], np.int64)[order],
                        np.array(columns[2], np.int64)[order],
                        np.array(columns[3], np.int64)[order],
                        np.array(columns[4], np.float64)[order],
                        np.zeros(len(rows), np.int8), np.zeros(len(rows), np.int8))


def compromised(population: int, count: int, day: int, seed: int = 0) -> Ints:
    """The ``count`` of ``population`` drawn on ``day``: pandas'
    ``Series.sample(n=count, random_state=day)`` of ``range(population)``."""
    chosen: Ints = np.random.RandomState(seed + day).permutation(population)[:count]
    return chosen


def add_frauds(tx: Transactions, pop: Population, seed: int = 0) -> Transactions:
    """The three scenarios, in the Handbook's order, on ``tx`` (its arrays are changed)."""
    over = tx.amounts > FRAUD_AMOUNT
    tx.fraud[over], tx.scenario[over] = 1, 1
    last = int(tx.days.max()) if len(tx) else 0
    for day in range(last):
        span = _days(tx, day, TERMINAL_DAYS)
        hit = span[np.isin(tx.terminals[span], compromised(pop.terminals, 2, day, seed))]
        tx.fraud[hit], tx.scenario[hit] = 1, 2
    for day in range(last):
        span = _days(tx, day, CUSTOMER_DAYS)
        hit = span[np.isin(tx.customers[span], compromised(pop.customers, 3, day, seed))]
        picked = np.array(random.Random(seed + day).sample(hit.tolist(), k=len(hit) // 3),
                          np.int64)
        tx.amounts[picked] *= 5
        tx.fraud[picked], tx.scenario[picked] = 1, 3
    return tx


def _days(tx: Transactions, first: int, count: int) -> Ints:
    """The positions of the transactions of days ``[first, first + count)``."""
    lo, hi = np.searchsorted(tx.days, [first, first + count])
    return np.arange(lo, hi, dtype=np.int64)


def customer_id(i: int) -> str:
    return f"cust-{i:05d}"


def terminal_id(i: int) -> str:
    return f"term-{i:05d}"


def start_ms(day: str = START) -> int:
    """Midnight UTC of ``day`` (YYYY-MM-DD), in epoch milliseconds."""
    try:
        when = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ConfigError(f"start date {day!r}: expected YYYY-MM-DD") from None
    return epoch_ms(when)


def events(tx: Transactions, *, start: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The transactions as events (``schemas/transaction.schema.json``), in time order."""
    for i in range(len(tx)):
        customer, terminal = customer_id(int(tx.customers[i])), terminal_id(int(tx.terminals[i]))
        yield {"event_id": f"hb-{seed}-{i}", "event_time": start + int(tx.seconds[i]) * 1000,
               "card_id": customer, "merchant_id": terminal, "amount": float(tx.amounts[i]),
               "currency": "EUR", "customer_id": customer, "terminal_id": terminal,
               "label": int(tx.fraud[i]), "fraud_scenario": int(tx.scenario[i])}


_RANGE = re.compile(r"^\s*(\S+?)\s*(?:\.\.|-)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Delay:
    """How long after its event a label arrives: ``low_ms``, or uniform in
    ``[low_ms, high_ms]`` (whole milliseconds)."""

    low_ms: int
    high_ms: int

    @classmethod
    def parse(cls, text: str) -> Delay:
        """``"7d"`` (fixed) or ``"1d..30d"`` (uniform); units ms, s, m, h, d."""
        match = _RANGE.match(text)
        try:
            low, high = ((duration_ms(match[1]), duration_ms(match[2])) if match
                         else (duration_ms(text.strip()),) * 2)
        except ValueError as exc:
            raise ConfigError(f"label delay {text!r}: {exc}; a range is LOW..HIGH "
                              "(e.g. '1d..30d')") from None
        if high < low:
            raise ConfigError(f"label delay {text!r}: the range ends before it starts")
        return cls(low, high)

    def draw(self, count: int, seed: int) -> Ints:
        if self.low_ms == self.high_ms:
            return np.full(count, self.low_ms, np.int64)
        rng = np.random.default_rng([seed, 23])
        drawn: Ints = rng.integers(self.low_ms, self.high_ms, count, endpoint=True)
        return drawn


LABEL_FIELDS = ("event_time", "card_id", "customer_id", "terminal_id")


def labels(events: Sequence[dict[str, Any]], delay: Delay, seed: int = 0
           ) -> list[dict[str, Any]]:
    """One label per event (``schemas/label.schema.json``), in arrival order: by
    ``label_time = event_time + delay`` (ties in event order)."""
    delays = delay.draw(len(events), seed)
    out = [{"event_id": e["event_id"], "label": e["label"],
            "label_time": e["event_time"] + int(d), **{k: e[k] for k in LABEL_FIELDS}}
           for e, d in zip(events, delays.tolist(), strict=True)]
    order = sorted(range(len(out)), key=lambda i: out[i]["label_time"])
    return [out[i] for i in order]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """``records`` as JSON lines; how many."""
    count = 0
    with open(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count


@dataclass(frozen=True)
class Published:
    events: int
    labels: int
    seconds: float


Encode = Callable[[dict[str, Any]], bytes]


def encoders(fmt: str = "json", schema_id: int = 1, label_schema_id: int = LABEL_SCHEMA_ID
             ) -> tuple[Encode, Encode]:
    """Events and labels as JSON, or as Confluent-framed Avro under these schema ids."""
    if fmt == "avro":
        return (lambda r: encode_avro_transaction(r, schema_id),
                lambda r: encode_avro_label(r, label_schema_id))
    encode = msgspec.json.Encoder().encode
    return encode, encode


def summary(tx: Transactions, customers: int, terminals: int, days: int, start: str) -> str:
    """What was generated, in one line per fraud scenario."""
    counts = np.bincount(tx.scenario, minlength=len(SCENARIOS)).tolist()
    frauds = int(tx.fraud.sum())
    lines = [f"handbook: {len(tx):,} transactions of {customers:,} customers at {terminals:,} "
             f"terminals over {days} days from {start}; {frauds:,} frauds "
             f"({frauds / max(len(tx), 1):.3%})"]
    lines += [f"  {name:<22} {count:,}" for name, count in zip(SCENARIOS, counts, strict=True)]
    return "\n".join(lines)


def publish(kafka: KafkaSettings, events: Sequence[dict[str, Any]], topic: str,
            labels: Sequence[dict[str, Any]], labels_topic: str, encode: Encode,
            encode_label: Encode, *, rate_per_s: float = 0.0, force: bool = False,
            now_ms: int | None = None) -> Published:
    """Events to ``topic`` stamped with their ``event_time``, labels to ``labels_topic``
    stamped with their ``label_time``, both keyed by ``card_id`` and sent in arrival order
    (ties: labels first), at most ``rate_per_s`` a second (0: as fast as possible);
    return once every record is acknowledged (DeliveryError otherwise).

    The topics are checked first, as ``topics publish`` checks its topic
    (:func:`~.publish.prepare_topics`): a record stamped over an hour ahead of ``now_ms``
    (default: now), or an existing topic whose retention would delete the oldest record,
    refuses the publish before anything is written unless ``force``; missing topics are
    created with ``retention.ms=-1``. What it created and its warnings are logged."""
    import logging

    from ..adapters.kafka_publish import TimestampedSink
    from .publish import Span, prepare_topics

    spans = {topic: Span(), labels_topic: Span()}
    for records, field, into in ((events, "event_time", topic),
                                 (labels, "label_time", labels_topic)):
        stamps = [int(r[field]) for r in records]
        for i in {stamps.index(min(stamps)), stamps.index(max(stamps))} if stamps else ():
            spans[into].add(stamps[i], f"the {field} of event {records[i]['event_id']}")
    prepared = prepare_topics(kafka, spans, force=force, force_flag=None, now_ms=now_ms)
    log = logging.getLogger(__name__)
    if prepared.created:
        log.info("created %s with retention.ms=-1: records kept forever, however old their "
                 "timestamps", ", ".join(prepared.created))
    for warning in prepared.warnings:
        log.warning("%s", warning)
    sink = TimestampedSink(kafka.producer_config())
    arrivals = heapq.merge(((r["label_time"], 0, i) for i, r in enumerate(labels)),
                           ((r["event_time"], 1, i) for i, r in enumerate(events)))
    started, sent = time.monotonic(), 0
    try:
        for stamp, kind, i in arrivals:
            record = labels[i] if kind == 0 else events[i]
            value = encode_label(record) if kind == 0 else encode(record)
            sink.send_at(labels_topic if kind == 0 else topic,
                         str(record["card_id"]).encode(), value, stamp)
            sent += 1
            if rate_per_s > 0 and sent % 100 == 0:
                time.sleep(max(0.0, sent / rate_per_s - (time.monotonic() - started)))
        sink.flush(120.0)
    finally:
        sink.close()
    return Published(len(events), len(labels), time.monotonic() - started)
