"""A window group's turns taken in shards (``redis.windows_lease_shards``; a real
redis-server): once read under its lease, each shard of the group's entities is read,
computed and written on its own, under a lease of its own, so that a shard another worker
holds does not hold up the others, and every shard's values stay the in-memory engine's:
its labels applied before its events, the watermark moved by the batch's last write."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest
import redis

from stream_infer.adapters.redis_windows import RedisWindowStore
from stream_infer.features import WindowEngine, define
from stream_infer.features.labels import Label
from stream_infer.features.live import LiveWindows, StoreCall, shard_of
from stream_infer.records import Transaction
from tests.support.windows import Racing, dump
from tests.unit.features.streams import assert_same
from tests.unit.features.support import DAY, HOUR, ISSUE, T0, tx

SHARDS = 4


def terminals(*shards: int) -> list[str]:
    """A terminal id in each of ``shards``."""
    names = (f"t{i}" for i in range(1000))
    return [next(n for n in names if shard_of(n, SHARDS) == shard) for shard in shards]


def sharded(store: Any, **options: Any) -> LiveWindows:
    return LiveWindows(define(ISSUE), store, dtype=np.float64, always_lease=True,
                       lease_shards=SHARDS, **options)


@pytest.mark.parametrize("first", range(SHARDS))
def test_a_label_applies_in_its_entity_s_shard_before_that_shard_s_events(
        redis_client: redis.Redis, first: int) -> None:
    """Whichever shard the worker starts at: the label of ``h`` (a terminal outside shard
    0, its event in an earlier batch, so found by the label directory) counts in the
    terminal's fraud rate of ``a``, a week and an hour later in the label's batch."""
    terminal, other = terminals(3, 1)
    before = [tx("h", T0 + HOUR, customer="c0", terminal=terminal),
              tx("g", T0 + HOUR, customer="c1", terminal=other)]
    batch = ([tx("a", T0 + 8 * DAY, customer="c0", terminal=terminal),
              tx("b", T0 + 8 * DAY, customer="c1", terminal=other)],
             [Label("h", 1, T0 + 2 * DAY), Label("unknown", 1, T0 + 2 * DAY)])
    live = sharded(RedisWindowStore(redis_client), first_shard=first)
    engine = WindowEngine(define(ISSUE), dtype=np.float64)
    assert_same(define(ISSUE).names, live(before), engine.apply(before))
    got, want = live(*batch), engine.apply(*batch)
    assert_same(define(ISSUE).names, got, want)
    rate = define(ISSUE).names.index("terminal.rate_label_1d")
    assert got[:, rate].tolist() == [1.0, 0.0]
    assert live.stats.labels.applied == 1 and live.stats.labels.pending == 1


class Timed(RedisWindowStore):
    """The Redis store noting when each write call landed, by the lease it names."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.landed: list[tuple[str, str, float]] = []

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        calls = list(calls)
        replies = super().write(calls)
        now = time.monotonic()
        self.landed += [(c.window.name, str(c.args[9]), now)
                        for c, ok in zip(calls, replies, strict=True) if ok]
        return replies


def test_a_shard_another_worker_holds_does_not_hold_up_the_others(
        redis_client: redis.Redis) -> None:
    """Another worker holds the lease of one terminal shard for 0.5 s: the batch's other
    terminal shard is written at once, the held one once its lease has run out, and the
    group's wait counts only the time every shard it had left was held."""
    held, free = terminals(2, 1)
    terminal = define(ISSUE).windows[1]
    redis_client.set(f"{terminal.prefix}:lock:2", "another worker", px=500)
    events = [tx("a", T0, customer="c0", terminal=held),
              tx("b", T0 + 1, customer="c1", terminal=free)]
    store = Timed(redis_client)
    live = sharded(store, first_shard=2)  # starts at the held shard
    started = time.monotonic()
    rows = live(events)
    assert_same(define(ISSUE).names, rows,
                WindowEngine(define(ISSUE), dtype=np.float64).apply(events))
    landed = {lock: at - started for group, lock, at in store.landed if group == "terminal"}
    assert landed.keys() == {":1", ":2"}
    assert landed[":1"] < 0.3 <= 0.45 <= landed[":2"]
    assert 0.2 <= live.stats.waits["terminal"] <= landed[":2"]
    assert sum(live.stats.retries.values()) == 0
    assert not redis_client.keys(f"{terminal.prefix}:lock*")  # every lease given back


class Holding(RedisWindowStore):
    """The Redis store noting, after each read, how many terminal shard leases are held."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.held: list[int] = []

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        replies = super().read(calls)
        self.held.append(len(self.client.keys(f"{define(ISSUE).windows[1].prefix}:lock:*")))
        return replies


def test_a_worker_holds_one_shard_s_lease_at_a_time(redis_client: redis.Redis) -> None:
    """So that another worker finds the other shards free: the batch's four terminal
    shards are read one per round trip, each lease given back by its write."""
    store = Holding(redis_client)
    events = [tx(f"e{i}", T0 + i, customer="c0", terminal=t)
              for i, t in enumerate(terminals(*range(SHARDS)))]
    rows = sharded(store)(events)
    assert_same(define(ISSUE).names, rows,
                WindowEngine(define(ISSUE), dtype=np.float64).apply(events))
    assert store.held == [1] * SHARDS


class Interrupted(Racing):
    """The racing store noting each read's group, token and lease key suffix."""

    def __init__(self, client: redis.Redis, between: Any) -> None:
        super().__init__(client, between)
        self.reads: list[tuple[str, bool, str]] = []

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        self.reads += [(c.window.name, bool(c.args[1]), str(c.args[3])) for c in calls]
        return super().read(calls)


def test_a_group_whose_write_was_refused_is_read_again_in_shards(
        redis_client: redis.Redis) -> None:
    """A worker reads the whole group without a lease until its write is refused; its
    batch is then read again under the lease of the terminal's shard, the one other
    workers in shards take, not the whole group's."""
    (terminal,) = terminals(3)
    other = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    b = [tx("b", T0, customer="c1", terminal=terminal)]
    store = Interrupted(redis_client, lambda: other(b))
    a = [tx("a", T0 + 1, customer="c0", terminal=terminal)]
    live = LiveWindows(define(ISSUE), store, dtype=np.float64, lease_shards=SHARDS)
    rows = live(a)
    engine = WindowEngine(define(ISSUE), dtype=np.float64)
    engine.apply(b)
    assert_same(define(ISSUE).names, rows, engine.apply(a))
    assert live.stats.retries == {"terminal": 1}
    reads = [(token, lock) for group, token, lock in store.reads if group == "terminal"]
    assert reads == [(False, ""), (True, ":3")]


def batch_of(worker: int, day: int) -> list[Transaction]:
    """A worker's batch: its own customers, every terminal (both workers' batches meet in
    each terminal's log, within half an hour: the terminal's delayed windows are empty,
    and however far one worker runs ahead, no event is too late)."""
    names = terminals(*range(SHARDS)) * 3
    return [tx(f"w{worker}d{day}e{i}", T0 + day * HOUR // 12 + i * 1000 + worker,
               customer=f"c{worker}-{i % 5}", terminal=terminal, amount=float(i + worker))
            for i, terminal in enumerate(names)]


def test_two_workers_in_shards_at_once_keep_every_event_once(
        redis_client: redis.Redis) -> None:
    """Two workers, each on threads of its own, run their batches through the same
    terminals at once: every event is served the engine's values and kept once, and the
    state equals that of one worker running the same batches whole."""
    days = range(6)
    rows: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def run(worker: int) -> None:
        live = sharded(RedisWindowStore(redis_client), first_shard=2 * worker)
        rows[worker] = [live(batch_of(worker, day)) for day in days]

    threads = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engine = WindowEngine(define(ISSUE), dtype=np.float64)
    for day in days:  # one order of many: the values do not depend on it here
        for worker in (0, 1):
            assert_same(define(ISSUE).names, rows[worker][day],
                        engine.apply(batch_of(worker, day)))
    shared = dump(redis_client)
    redis_client.flushall()
    whole = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    for day in days:
        for worker in (0, 1):
            whole(batch_of(worker, day))
    assert shared == dump(redis_client)
