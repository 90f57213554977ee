"""Two workers sharing the window state (a real redis-server). A group is read without its
lease until workers collide in it, then under it, so workers take turns; the races are
those of workers without the lease, or of a worker paused beyond its lease: worker A reads
its batch's state, worker B (once A's lease, if any, has run out) lands its whole batch,
then A writes. A's write must be refused and its batch computed again on the
state B left, so that both get what the in-memory engine gives for B's batch followed by
A's: a shared terminal, a label whose event B brought, a label B left waiting for A's event,
a newer label for the same event, a watermark B moved past A's event."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pytest
import redis

from stream_infer.adapters.redis_windows import RedisWindowStore
from stream_infer.errors import FeatureStoreError
from stream_infer.features import WindowEngine, define
from stream_infer.features.labels import Label
from stream_infer.features.live import BUSY, LiveWindows, StoreCall, read_call
from stream_infer.records import Transaction
from tests.support.windows import Racing
from tests.unit.features.streams import assert_same
from tests.unit.features.support import DAY, ISSUE, T0, tx

Step = tuple[list[Transaction], list[Label]]
LEASE = 150
"""A's lease, short: B waits for it to run out (A is paused, inside its write), as after
a worker's pause longer than its lease."""


def race(client: redis.Redis, before: list[Step], a: Step, b: Step, after: list[Step], *,
         leased: bool, windows: Any = ISSUE) -> tuple[Any, Any, Any, int]:
    """``before`` on one worker, then A's batch with B's landing between A's read and
    write, then ``after`` on A: A's rows, B's rows, the rows after, and how many group
    batches A computed again. With ``leased``, both always read under the lease."""
    plain = RedisWindowStore(client)
    setup = LiveWindows(define(windows), plain, dtype=np.float64, lease_ms=LEASE)
    for events, labels in before:
        setup(events, labels)
    rows_b: list[Any] = []
    worker_b = LiveWindows(define(windows), plain, dtype=np.float64, lease_ms=LEASE,
                           always_lease=leased)
    store = Racing(client, lambda: rows_b.append(worker_b(*b)))
    worker_a = LiveWindows(define(windows), store, dtype=np.float64, lease_ms=LEASE,
                           always_lease=leased)
    rows_a = worker_a(*a)
    retries = sum(worker_a.stats.retries.values())
    rows_after = [worker_a(*step) for step in after]
    assert not any(w.stats.state_lost for w in (setup, worker_b, worker_a))  # none lost
    return rows_a, rows_b[0], rows_after, retries


def serial(before: list[Step], a: Step, b: Step, after: list[Step], *,
           windows: Any = ISSUE) -> tuple[Any, Any, Any]:
    """The in-memory engine's rows for B's batch, then A's, then those after."""
    engine = WindowEngine(define(windows), dtype=np.float64)
    for events, labels in before:
        engine.apply(events, labels)
    want_b = engine.apply(*b)
    want_a = engine.apply(*a)
    return want_a, want_b, [engine.apply(*step) for step in after]


LATER = [([tx("y", T0 + DAY, customer="c0", terminal="t1"),
           tx("z", T0 + 9 * DAY, customer="c0", terminal="t1")], [])]
"""Events whose windows show a label of ``y`` (z's terminal rate over the delayed week)."""
CASES = {
    "a shared terminal": (
        [([tx(f"h{i}", T0 + i * DAY // 2, customer=f"c{i % 2}", terminal="t1")
           for i in range(8)], [])],
        ([tx("a", T0 + 5 * DAY, customer="c0", terminal="t1", amount=3.0)], []),
        ([tx("b", T0 + 5 * DAY - 1, customer="c1", terminal="t1", amount=7.0)], []),
        [], 1),
    "a label for the event B brought": (
        [([tx("h", T0, customer="c0", terminal="t1")], [])],
        ([tx("a", T0 + 9 * DAY, customer="c0", terminal="t1")],
         [Label("x", 1, T0 + 2 * DAY)]),
        ([tx("x", T0 + DAY, customer="c1", terminal="t2")], []),
        [([tx("w", T0 + 9 * DAY, customer="c1", terminal="t2")], [])], 1),
    "a label B left waiting for A's event": (
        [([tx("h", T0, customer="c0", terminal="t1")], [])],
        ([tx("x", T0 + DAY, customer="c0", terminal="t2"),
          tx("a", T0 + 9 * DAY, customer="c0", terminal="t2")], []),
        ([], [Label("x", 1, T0 + 2 * DAY)]),
        [], 1),
    "a newer label B left waiting for the same event": (
        [([tx("h", T0, customer="c0", terminal="t1")], [])],
        ([], [Label("y", 0, T0 + 2 * DAY)]),
        ([], [Label("y", 1, T0 + 3 * DAY)]),
        LATER, 1),
    "a watermark B moved past A's event": (
        [([tx("h", T0, customer="c0", terminal="t1")], [])],
        ([tx("a", T0 + DAY, customer="c0", terminal="t1")], []),
        ([tx("b", T0 + 3 * DAY, customer="c9", terminal="t9")], []),
        [], 2),
}


@pytest.mark.parametrize("leased", [False, True], ids=["without-lease", "lease-ran-out"])
@pytest.mark.parametrize("case", CASES)
def test_a_write_that_lost_a_race_is_computed_again_on_the_state_that_won(
        redis_client: redis.Redis, case: str, leased: bool) -> None:
    before, a, b, after, retried = CASES[case]
    got_a, got_b, got_after, retries = race(redis_client, before, a, b, after, leased=leased)
    want_a, want_b, want_after = serial(before, a, b, after)
    names = define(ISSUE).names
    assert_same(names, got_b, want_b)
    assert_same(names, got_a, want_a)
    for got, want in zip(got_after, want_after, strict=True):
        assert_same(names, got, want)
    assert retries == retried  # the groups A's batch had to compute again


def test_a_log_read_absent_that_another_worker_writes_refuses_the_write_past_a_chunk(
        redis_client: redis.Redis) -> None:
    """The write checks the logs it read absent with one ``EXISTS`` per 4,000 of them: B's
    customer, the last of A's 4,001 new ones in the write's order, is in the second."""
    customers = [f"c{i}" for i in range(4001)]
    a = ([tx(f"a{i}", T0 + i, customer=c, terminal="t1") for i, c in enumerate(customers)],
         [])
    b = ([tx("b", T0, customer=max(customers), terminal="t9")], [])
    got_a, got_b, _, retries = race(redis_client, [], a, b, [], leased=False)
    want_a, want_b, _ = serial([], a, b, [])
    names = define(ISSUE).names
    assert_same(names, got_b, want_b)
    assert_same(names, got_a, want_a)
    assert retries == 1  # the customer group's


@pytest.mark.parametrize("leased", [False, True], ids=["without-lease", "lease-ran-out"])
def test_an_id_another_worker_keeps_under_another_key_refuses_the_write_of_its_new_event(
        redis_client: redis.Redis, leased: bool) -> None:
    """A group with a rate finds a kept id under any entity by its directory: A reads
    ``x`` absent, B keeps ``x`` at another terminal, so A's write is refused and A, on the
    state B left, serves ``x`` as B's duplicate, as one arrival at a time does."""
    terminal = {"terminal": ISSUE["terminal"]}
    before = [([tx("h", T0, terminal="t1"), tx("i", T0, terminal="t2")], [])]
    a = ([tx("x", T0 + DAY, terminal="t1", amount=3.0)], [])
    b = ([tx("x", T0 + DAY - 5, terminal="t2", amount=7.0)], [])
    after = [([tx("z", T0 + 9 * DAY, terminal="t1")], [Label("x", 1, T0 + 2 * DAY)])]
    got_a, got_b, got_after, retries = race(redis_client, before, a, b, after, leased=leased,
                                            windows=terminal)
    want_a, want_b, want_after = serial(before, a, b, after, windows=terminal)
    names = define(terminal).names
    assert_same(names, got_b, want_b)
    assert_same(names, got_a, want_a)
    assert_same(names, got_after[0], want_after[0])
    assert retries == 1


def test_without_a_race_nothing_is_computed_twice(redis_client: redis.Redis) -> None:
    live = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    for day in range(5):
        live([tx(f"e{day}", T0 + day * DAY, customer="c0", terminal="t1")],
             [Label(f"e{day - 1}", 1, T0 + day * DAY)] if day else [])
    assert sum(live.stats.retries.values()) == 0
    assert live.stats.waits == {}  # and nothing waited for


def test_a_group_another_worker_holds_is_waited_for_not_computed(
        redis_client: redis.Redis) -> None:
    store = RedisWindowStore(redis_client)
    window = define(ISSUE).windows[0]
    events = [tx("a", T0, customer="c0", terminal="t1")]
    assert store.read([read_call(window, events, [], ("A", 60_000))]) != [BUSY]
    assert store.read([read_call(window, events, [], ("B", 60_000))]) == [BUSY]
    assert store.read([read_call(window, events, [], ("A", 60_000))]) != [BUSY]  # A's own
    other = LiveWindows(define(ISSUE), store, wait_ms=300)
    started = time.monotonic()
    with pytest.raises(FeatureStoreError, match=r"not written in 0\.3 s \(held by other workers"):
        other(events)
    elapsed = time.monotonic() - started
    assert other.stats.groups["customer"].computed == 0
    # a wait given up at the deadline is counted too: from the first read that found A's
    # lease (within the first 50 ms) to the deadline's check
    assert other.stats.waits.keys() == {"customer"}
    assert 0.25 <= other.stats.waits["customer"] <= elapsed
    given_up = other.stats.waits["customer"]
    redis_client.delete(f"{window.prefix}:lock")  # A's lease runs out
    other(events)
    assert other.stats.groups["customer"].computed == 1
    assert other.stats.waits == {"customer": given_up}  # counted once, nothing waited since
    assert not redis_client.exists(f"{window.prefix}:lock")  # the write gave it back


class Overtaken(RedisWindowStore):
    """The Redis store that, before A's write, lets A's lease run out and B take it."""

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        calls = list(calls)
        for call in calls:
            self.client.delete(f"{call.window.prefix}:lock")
        self.read([read_call(c.window, [], [], ("B", 60_000)) for c in calls])
        return super().write(calls)


def test_a_write_while_another_worker_holds_the_lease_lands_nothing(
        redis_client: redis.Redis) -> None:
    worker = LiveWindows(define(ISSUE), Overtaken(redis_client), wait_ms=200)
    with pytest.raises(FeatureStoreError, match="held by other workers"):
        worker([tx("a", T0, customer="c0", terminal="t1")])
    assert sum(worker.stats.retries.values()) == 2  # both groups' writes refused
    assert redis_client.keys("*{*") == []  # no entity written


class Watching(Racing):
    """The racing store that notes, after each read, the groups whose lease is held."""

    def __init__(self, client: redis.Redis, between: Callable[[], Any] | None = None) -> None:
        super().__init__(client, between)
        self.held: list[set[str]] = []

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        replies = super().read(calls)
        self.held.append({c.window.name for c in calls
                          if self.client.exists(f"{c.window.prefix}:lock")})
        return replies


def test_workers_whose_entities_never_meet_never_take_a_lease(
        redis_client: redis.Redis) -> None:
    store = Watching(redis_client)
    workers = [LiveWindows(define(ISSUE), store, dtype=np.float64) for _ in range(2)]
    for day in range(6):
        w = day % 2
        workers[w]([tx(f"e{day}", T0 + day * DAY, customer=f"c{w}", terminal=f"t{w}")])
    assert store.held == [set()] * 6
    assert sum(sum(w.stats.retries.values()) for w in workers) == 0


def test_after_a_refused_write_the_group_reads_under_its_lease_for_a_while(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream_infer.features.live.LEASED_BATCHES", 2)
    other = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    store = Watching(redis_client, lambda: other(
        [tx("b", T0, customer="c9", terminal="t1")]))  # A's terminal, not its customer
    worker = LiveWindows(define(ISSUE), store, dtype=np.float64)
    for day in range(4):
        worker([tx(f"a{day}", T0 + day * DAY + 1, customer="c0", terminal="t1")])
    assert worker.stats.retries == {"terminal": 1}
    # batch 0 read without the lease, refused; its retry and batch 1 under the terminal's
    # lease (two batches); batches 2 and 3 without it again
    assert store.held == [set(), {"terminal"}, {"terminal"}, set(), set()]


class Released(RedisWindowStore):
    """The Redis store that notes each read's group, entities sent, whether their logs were
    read beside the script and whether it was answered ``BUSY``, and ends B's lease on the
    terminal group after ``held_for`` reads."""

    LOCK = f"{define(ISSUE).windows[1].prefix}:lock"

    def __init__(self, client: redis.Redis, held_for: int) -> None:
        super().__init__(client)
        self.held_for = held_for
        self.reads: list[tuple[str, int, bool, bool]] = []

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        replies = super().read(calls)
        self.reads += [(c.window.name, int(c.args[5]), bool(c.logs), r == BUSY)
                       for c, r in zip(calls, replies, strict=True)]
        self.turns()
        return replies

    def terminal(self) -> list[tuple[int, bool, bool]]:
        """The terminal group's reads: entities sent, logs beside, ``BUSY``."""
        return [(n, beside, busy) for group, n, beside, busy in self.reads
                if group == "terminal"]

    def turns(self) -> None:
        if len(self.reads) >= self.held_for:
            self.client.delete(self.LOCK)


def test_a_worker_waiting_for_a_group_probes_with_nothing_but_its_lease(
        redis_client: redis.Redis) -> None:
    terminal = define(ISSUE).windows[1]
    events = [tx("a", T0, customer="c0", terminal="t1"),
              tx("b", T0 + 1, customer="c1", terminal="t2")]
    store = Released(redis_client, held_for=6)
    assert store.read([read_call(terminal, events, [], ("B", 60_000))]) != [BUSY]
    store.reads.clear()
    worker = LiveWindows(define(ISSUE), store, dtype=np.float64, always_lease=True)
    started = time.monotonic()
    rows = worker(events)
    elapsed = time.monotonic() - started
    reads = store.terminal()
    # the first read, whole (the script reading the logs), finds B's lease; probes with no
    # entities until it is gone; then the worker's own lease, and its whole batch read,
    # the logs beside the script (which is then told no entities: no label needs them)
    assert reads[0] == (2, False, True) and reads[-1] == (0, True, False)
    assert reads[1:-1] and all(n == 0 for n, _, _ in reads[1:-1])
    assert reads[-2] == (0, False, False) and all(busy for *_, busy in reads[1:-2])
    assert_same(define(ISSUE).names, rows,
                WindowEngine(define(ISSUE), dtype=np.float64).apply(events))
    assert sum(worker.stats.retries.values()) == 0
    # the wait (stream_infer_window_wait_seconds_total) is the held group's alone: from the
    # read that found B's lease to the probe that won it, so at least the pauses after the
    # five reads held (0.5, 1, 2, 4 and 8 ms) and at most the call
    assert [busy for *_, busy in reads].count(True) == 5
    assert worker.stats.waits.keys() == {"terminal"}
    assert 0.0155 <= worker.stats.waits["terminal"] <= elapsed


class Stolen(Released):
    """:class:`Released` after two terminal reads which, once the worker's probe has won the
    lease, hands it to C (as if it had run out and C had taken it) until three more
    terminal reads have passed."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, held_for=2)
        self.stolen_at: int | None = None

    def turns(self) -> None:
        reads = self.terminal()
        if self.stolen_at is None and reads and reads[-1] == (0, False, False):
            self.client.set(self.LOCK, "C", px=60_000)  # the probe won: C takes the lease
            self.stolen_at = len(reads)
        if len(reads) == self.held_for or (self.stolen_at and
                                           len(reads) == self.stolen_at + 3):
            self.client.delete(self.LOCK)


def test_a_lease_lost_between_a_won_probe_and_the_read_is_waited_for_again(
        redis_client: redis.Redis) -> None:
    """The logs read beside the script are dropped when the read finds another worker's
    turn after all; the worker probes again and reads once the lease is its own."""
    terminal = define(ISSUE).windows[1]
    events = [tx("a", T0, customer="c0", terminal="t1"),
              tx("b", T0 + 1, customer="c1", terminal="t2")]
    store = Stolen(redis_client)
    assert store.read([read_call(terminal, events, [], ("B", 60_000))]) != [BUSY]
    store.reads.clear()
    worker = LiveWindows(define(ISSUE), store, dtype=np.float64, always_lease=True)
    rows = worker(events)
    assert store.stolen_at is not None
    won = store.terminal()[store.stolen_at - 1]
    after = store.terminal()[store.stolen_at:]
    assert won == (0, False, False)  # the probe took the lease...
    assert after[0] == (0, True, True)  # ...C had it when the whole read came, logs beside
    assert all(not beside for _, beside, _ in after[1:-1]) and after[-1] == (0, True, False)
    assert_same(define(ISSUE).names, rows,
                WindowEngine(define(ISSUE), dtype=np.float64).apply(events))
    assert sum(worker.stats.retries.values()) == 0
