"""The live window features (state in a real redis-server) equal the in-memory engine that
backfill runs, on random streams: ties, window edges, late, too-late and duplicate events,
labels before and after their events, corrections. Then what the live path adds: workers
sharing the state, a batch re-processed after a crash, retention, and the Redis checks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_infer.adapters.redis_windows import RedisWindowStore, check_eviction
from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.errors import ConfigError, FeatureStoreError
from stream_infer.features import WindowEngine, define
from stream_infer.features.codec import decode_log
from stream_infer.features.engine import GroupEngine
from stream_infer.features.labels import Label
from stream_infer.features.live import LiveWindows, StoreCall, shard_of
from stream_infer.features.state import Layout
from tests.support.windows import dump
from tests.unit.features.streams import WINDOWS, Batch, assert_same, streams
from tests.unit.features.support import DAY, ISSUE, T0, tx

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def engine_rows(stream: list[Batch], windows: Any = WINDOWS) -> np.ndarray:
    engine = WindowEngine(define(windows), dtype=np.float64)
    rows = [engine.apply(b.events, [Label(*label) for label in b.labels]) for b in stream]
    return np.concatenate(rows)


def live_rows(client: redis.Redis, stream: list[Batch], workers: int = 1,
              windows: Any = WINDOWS, shards: int | None = None,
              first: int = 0) -> np.ndarray:
    """The stream through ``workers`` live windows sharing one Redis, batch ``i`` on worker
    ``i % workers`` (the order the script runs them is the arrival order); with
    ``shards``, every group read under its lease, in that many shards, worker ``w``
    starting at shard ``first + w``."""
    store = RedisWindowStore(client)
    leased = {} if shards is None else {"always_lease": True, "lease_shards": shards}
    live = [LiveWindows(define(windows), store, dtype=np.float64, **leased,
                        first_shard=first + w) for w in range(workers)]
    rows = [live[i % workers](b.events, [Label(*label) for label in b.labels])
            for i, b in enumerate(stream)]
    assert not any(w.stats.state_lost for w in live)  # nothing lost: never reported
    return np.concatenate(rows)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(stream=streams(), workers=st.sampled_from([1, 2]),
       shards=st.sampled_from([None, None, 1, 3]), first=st.integers(0, 2))
def test_live_windows_equal_the_engine_on_random_streams(
        redis_client: redis.Redis, stream: list[Batch], workers: int,
        shards: int | None, first: int) -> None:
    """Without the lease, and under it whole or in shards (each shard read, computed and
    written on its own, from the worker's first shard on, its labels routed to it)."""
    redis_client.flushall()
    want = engine_rows(stream)
    got = live_rows(redis_client, stream, workers, shards=shards, first=first)
    assert_same(define(WINDOWS).names, got, want)


def test_a_batch_reprocessed_after_a_crash_gets_the_rows_and_state_of_a_run_without_one(
        redis_client: redis.Redis) -> None:
    """The crash between the state write and the offset commit: a new process gets the
    batch again (its offsets were never committed) and goes on; every row and the
    window state equal a run without the crash."""
    events = [tx(f"e{i}", T0 + i * DAY // 4, customer=f"c{i % 3}", terminal=f"t{i % 2}",
                 amount=float(i)) for i in range(80)]
    labels = [Label(f"e{i}", i % 2, T0 + 9 * DAY) for i in range(0, 40, 3)]
    batches = [(events[:30], []), (events[30:50], labels[:3]), (events[50:], labels[3:])]

    def run(crash_after: int | None) -> tuple[list[np.ndarray], dict[str, Any]]:
        redis_client.flushall()
        store = RedisWindowStore(redis_client)
        live = LiveWindows(define(ISSUE), store, dtype=np.float64)
        rows = []
        for n, (batch, labelled) in enumerate(batches):
            served = live(batch, labelled)
            if n == crash_after:
                live = LiveWindows(define(ISSUE), store, dtype=np.float64)  # restarted
                served = live(batch, labelled)
            rows.append(served)
        return rows, dump(redis_client)

    clean_rows, clean_state = run(None)
    for crash_after in range(len(batches)):
        rows, state = run(crash_after)
        for got, want in zip(rows, clean_rows, strict=True):
            np.testing.assert_array_equal(got, want)
        assert state == clean_state


def test_a_duplicate_gets_its_served_row_after_later_events_and_labels_elsewhere(
        redis_client: redis.Redis) -> None:
    first = [tx(f"e{i}", T0 + i * DAY // 4, customer=f"c{i % 3}", terminal=f"t{i % 2}",
                amount=float(i)) for i in range(40)]
    late = [tx(f"f{i}", T0 + 5 * DAY + i, customer=f"c{i % 3}", terminal=f"t{i % 2}")
            for i in range(5)]
    store = RedisWindowStore(redis_client)
    live = LiveWindows(define(ISSUE), store, dtype=np.float64)
    served = live(first)
    other = LiveWindows(define(ISSUE), store, dtype=np.float64)
    other(late, [Label(f"e{i}", 1, T0 + 9 * DAY) for i in range(0, 40, 3)])
    np.testing.assert_array_equal(other(first), served)  # as of arrival: not saved yet
    np.testing.assert_array_equal(live([]), np.empty((0, len(define(ISSUE).names))))
    np.testing.assert_array_equal(other(first), served)  # the saved features
    assert other.stats.groups["customer"].duplicates == 80


RATE_ONLY = {"terminal": WINDOWS["terminal"]}


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), workers=st.sampled_from([1, 2]), shards=st.sampled_from([None, 3]),
       case=st.sampled_from(["another time", "another key, with a rate"]))
def test_live_windows_equal_the_engine_when_event_ids_are_reused(
        redis_client: redis.Redis, data: st.DataObject, workers: int, shards: int | None,
        case: str) -> None:
    """A record with the id of an event kept before, in an earlier batch or the same one,
    under another time (every group: found in its entity's log), or under another entity
    (a group with a rate: found by its directory), is that event again, as in memory."""
    windows, reuse = ((WINDOWS, ("time",)) if case == "another time"
                      else (RATE_ONLY, ("time", "terminal")))
    stream = data.draw(streams(reuse))
    redis_client.flushall()
    want = engine_rows(stream, windows)
    got = live_rows(redis_client, stream, workers, windows, shards=shards)
    assert_same(define(windows).names, got, want)


def test_a_label_for_an_event_beyond_the_horizon_waits_for_its_id_to_come_again(
        redis_client: redis.Redis) -> None:
    """The engine's case (``tests/unit/features/test_engine.py``) on the live path: the
    label waits, and the later event under that id takes it."""
    horizon = define(ISSUE).windows[1].horizon_ms
    batches = [([tx("x", T0)], []), ([tx("y", T0 + horizon)], []),
               ([], [Label("x", 1, T0 + horizon)]), ([tx("x", T0 + horizon)], []),
               ([tx("z", T0 + horizon + 7 * DAY + 3_600_000)], [])]
    engine = WindowEngine(define(ISSUE), dtype=np.float64)
    live = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    want = np.vstack([engine.apply(*b) for b in batches])
    got = np.vstack([live(*b) for b in batches])
    assert_same(define(ISSUE).names, got, want)
    assert live.stats.labels.pending == 1


@pytest.mark.xfail(strict=True, reason="known skew (README, Window features): a group "
                   "without a rate keeps no directory of its ids")
def test_an_event_id_reused_under_another_key_differs_from_the_engine_without_a_rate(
        redis_client: redis.Redis) -> None:
    """The engine serves a kept id's features to a later record of that id under another
    entity; a live group without a rate looks for the id only in the record's own entity's
    log, and computes it as a new event."""
    customer = {"customer": ISSUE["customer"]}
    batches = [[tx("x", T0, amount=5)], [tx("y", T0 + 1)],
               [tx("x", T0, customer="c9", amount=7)]]
    engine = WindowEngine(define(customer), dtype=np.float64)
    live = LiveWindows(define(customer), RedisWindowStore(redis_client), dtype=np.float64)
    want = np.vstack([engine.apply(b) for b in batches])
    got = np.vstack([live(b) for b in batches])
    assert_same(define(customer).names, got, want)


def test_retention_trims_rows_no_event_can_read_and_sets_expiry(
        redis_client: redis.Redis) -> None:
    live = LiveWindows(define(ISSUE), RedisWindowStore(redis_client))
    window = define(ISSUE).windows[0]
    key = f"{window.prefix}:{{c1}}"

    def kept() -> list[str]:
        blob = redis_client.get(key)
        log, _ = decode_log(blob, Layout(window).width, len(window.names))  # type: ignore[arg-type]
        return list(log.ids)

    live([tx("old", T0, customer="c1", terminal="t1")])
    assert kept() == ["old"] and redis_client.pttl(key) > 0
    live([tx("new", T0 + 29 * DAY, customer="c1", terminal="t2")])
    assert kept() == ["old", "new"]  # within 30 days and the hour of lateness
    live([tx("next", T0 + 31 * DAY + 1, customer="c1", terminal="t2")])
    assert kept() == ["new", "next"]  # "old" is beyond every window of every event to come
    assert 0 < redis_client.pttl(key) <= 31 * DAY + DAY + 3_600_000


def test_the_log_bytes_counted_are_the_logs_redis_holds(redis_client: redis.Redis) -> None:
    """``stats.log_bytes`` (``stream_infer_window_log_bytes_total``): a first batch reads no
    log and writes each entity's once; a later batch reads the logs of its entities as
    stored and writes them whole again, though it adds one event."""
    redis_client.flushall()
    customer, terminal = define(ISSUE).windows
    live = LiveWindows(define(ISSUE), RedisWindowStore(redis_client))

    def stored(window: Any, *entities: str) -> int:
        return sum(int(redis_client.strlen(f"{window.prefix}:{{{e}}}")) for e in entities)

    live([tx("a", T0, customer="c1", terminal="t1"), tx("b", T0 + 1, customer="c2"),
          tx("c", T0 + 2, customer="c1", terminal="t1")])
    first = {"customer": stored(customer, "c1", "c2"), "terminal": stored(terminal, "t1")}
    assert first["customer"] > 0 and first["terminal"] > 0
    assert live.stats.log_bytes == {
        ("customer", "read"): 0, ("customer", "written"): first["customer"],
        ("terminal", "read"): 0, ("terminal", "written"): first["terminal"]}
    c1, t1 = stored(customer, "c1"), stored(terminal, "t1")
    live([tx("d", T0 + 3, customer="c1", terminal="t1")])
    assert stored(customer, "c1") > c1 and stored(terminal, "t1") > t1
    assert live.stats.log_bytes == {
        ("customer", "read"): c1, ("customer", "written"): first["customer"] + stored(
            customer, "c1"),
        ("terminal", "read"): t1, ("terminal", "written"): first["terminal"] + stored(
            terminal, "t1")}


class Ordered(RedisWindowStore):
    """The Redis store noting, in ``steps``, each write call as the store takes it (and
    sends it), beside the engine's computations the test notes."""

    def __init__(self, client: redis.Redis, steps: list[str]) -> None:
        super().__init__(client)
        self.steps = steps

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        def taken() -> Iterator[StoreCall]:
            for call in calls:
                self.steps.append(f"write {call.window.name}")
                yield call
        return super().write(taken())


def test_a_group_s_write_is_on_its_way_while_the_next_group_is_computed(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis runs one group's write while the worker computes the next group: each write
    is taken by the store as soon as its group is computed, not once all are."""
    steps: list[str] = []
    apply = GroupEngine.apply

    def noted(engine: GroupEngine, *args: Any, **kwargs: Any) -> Any:
        steps.append(f"compute {engine.window.name}")
        return apply(engine, *args, **kwargs)

    monkeypatch.setattr(GroupEngine, "apply", noted)
    live = LiveWindows(define(ISSUE), Ordered(redis_client, steps), dtype=np.float64)
    rows = live([tx("a", T0, customer="c1", terminal="t1")])
    assert steps == ["compute customer", "write customer", "compute terminal",
                     "write terminal"]
    assert_same(define(ISSUE).names, rows, WindowEngine(define(ISSUE), dtype=np.float64)
                .apply([tx("a", T0, customer="c1", terminal="t1")]))


def test_scripts_flushed_from_redis_are_loaded_again_and_the_batch_written_once(
        redis_client: redis.Redis) -> None:
    """A server that lost its scripts (restarted, ``SCRIPT FLUSH``) answers each call
    ``NOSCRIPT``: the store loads them again and sends the batch's calls once more, the
    writes computed as they were taken."""
    live = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    engine = WindowEngine(define(ISSUE), dtype=np.float64)
    batches = [[tx("a", T0, customer="c1", terminal="t1")],
               [tx("b", T0 + 1, customer="c1", terminal="t1")]]
    live(batches[0])
    engine.apply(batches[0])
    redis_client.script_flush()
    assert_same(define(ISSUE).names, live(batches[1]), engine.apply(batches[1]))
    assert sum(live.stats.retries.values()) == 0
    assert live.stats.groups["customer"].computed == 2


def test_a_label_before_its_event_waits_and_applies_when_it_arrives(
        redis_client: redis.Redis) -> None:
    live = LiveWindows(define(ISSUE), RedisWindowStore(redis_client), dtype=np.float64)
    live([], [Label("x", 1, T0 + DAY)])
    live([tx("x", T0)])
    row = live([tx("y", T0 + 8 * DAY)])[0]
    rate = define(ISSUE).names.index("terminal.rate_label_7d")
    assert row[rate] == 1.0 and live.stats.labels.pending == 1


def test_a_redis_that_restarts_empty_is_reported_as_window_state_lost_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Redis without persistence restarts between two batches: the next read finds each
    group's watermark gone. The worker counts and logs it once per group, and goes on with
    the windows it has (the events before are no longer in them), even while the events
    after stay older than the watermark it had seen."""
    count = define(ISSUE).names.index("customer.count_1d")
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        live = LiveWindows(define(ISSUE), RedisWindowStore(client), dtype=np.float64)
        live([tx(f"a{i}", T0 + 100 + i, customer="c1", terminal="t1") for i in range(3)])
        assert live.stats.state_lost == {}
        server.restart()
        row = live([tx("b", T0 + 10, customer="c1", terminal="t1")])[0]
        assert live.stats.state_lost == {"customer": 1, "terminal": 1}
        assert row[count] == 1  # the three events before were lost with the state
        live([tx("c", T0 + 20, customer="c1", terminal="t1")])
        assert live.stats.state_lost == {"customer": 1, "terminal": 1}
        client.close()
    lost = [r.getMessage() for r in caplog.records if "went back" in r.getMessage()]
    assert len(lost) == 2 and all(r.levelname == "ERROR" for r in caplog.records
                                  if "went back" in r.getMessage())
    assert "window state of group customer went back: its watermark in Redis is absent, " \
           f"where this worker had seen {T0 + 102}" in lost[0]


def test_a_redis_rolled_back_to_older_state_is_reported_by_the_worker_that_saw_newer(
        redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A failover to a replica behind its primary: the state comes back as it was two
    batches earlier. The worker that had seen the newer watermark (read or written)
    reports it; one that never saw anything newer cannot tell, and does not."""
    store = RedisWindowStore(redis_client)
    live = LiveWindows(define(ISSUE), store, dtype=np.float64)
    live([tx("a", T0, customer="c1", terminal="t1")])
    saved = {key: redis_client.dump(key) for key in redis_client.keys("*")}
    live([tx("b", T0 + DAY, customer="c1", terminal="t1")])
    live([tx("c", T0 + DAY + 1, customer="c1", terminal="t1")])  # reads T0 + DAY
    redis_client.flushall()
    for key, value in saved.items():
        redis_client.restore(key, 0, value)
    newcomer = LiveWindows(define(ISSUE), store, dtype=np.float64)
    newcomer([tx("d", T0 + 2 * DAY, customer="c2", terminal="t2")])
    assert newcomer.stats.state_lost == {}
    redis_client.flushall()
    for key, value in saved.items():
        redis_client.restore(key, 0, value)
    live([tx("e", T0 + 3 * DAY, customer="c1", terminal="t1")])
    assert live.stats.state_lost == {"customer": 1, "terminal": 1}
    assert f"its watermark in Redis is {T0}, where this worker had seen {T0 + DAY + 1}" \
        in caplog.text


AHEAD = 3_600_000
NOW = T0 + 10 * DAY
"""The workers' clock in the tests of events stamped ahead of it."""


def test_an_event_stamped_far_ahead_gets_no_window_features_and_changes_nothing_after(
        redis_client: redis.Redis) -> None:
    """A producer's clock 80 years off: that event gets its calendar features and no window
    features, is counted ``ahead`` (``missing_key`` in a group it has no key of), and the
    events with it and after it get the rows the engine gives without it: none too late."""
    definition = define(ISSUE)
    live = LiveWindows(definition, RedisWindowStore(redis_client), dtype=np.float64,
                       max_ahead_ms=AHEAD, clock=lambda: NOW)
    engine = WindowEngine(definition, dtype=np.float64)
    wrong = T0 + 80 * 365 * DAY
    first = [tx("a", T0, customer="c1", terminal="t1"),
             tx("bad", wrong, customer="c1", terminal="t1"),
             tx("b", T0 + 1, customer="c1", terminal="t1"),
             tx("keyless", wrong, customer="c2", terminal=None)]
    then = [tx("c", T0 + DAY, customer="c1", terminal="t1")]
    rows = live(first)
    assert_same(definition.names, rows[[0, 2]], engine.apply([first[0], first[2]]))
    assert_same(definition.names, live(then), engine.apply(then))
    windows = len(definition.names) - 4
    assert np.isnan(rows[[1, 3], :windows]).all()
    np.testing.assert_array_equal(rows[[1, 3], windows:],
                                  engine.calendar(np.array([wrong, wrong])))
    customer, terminal = live.stats.groups["customer"], live.stats.groups["terminal"]
    assert (customer.ahead, customer.missing_key) == (2, 0)
    assert (terminal.ahead, terminal.missing_key) == (1, 1)
    assert customer.too_late == terminal.too_late == 0
    assert customer.computed == terminal.computed == 3
    for window in definition.windows:
        assert int(redis_client.get(f"{window.prefix}:wm") or 0) == T0 + DAY


def test_the_bound_ahead_is_inclusive_and_zero_turns_it_off(redis_client: redis.Redis) -> None:
    """An event exactly ``max_ahead_ms`` ahead is computed, one a millisecond further is
    not; with the bound 0, the far one is computed too, and leaves the next event too late
    (what the bound is there to prevent)."""
    definition = define(ISSUE)
    store = RedisWindowStore(redis_client)
    edge = [tx("edge", NOW + AHEAD, customer="c1", terminal="t1"),
            tx("over", NOW + AHEAD + 1, customer="c1", terminal="t1")]
    bounded = LiveWindows(definition, store, max_ahead_ms=AHEAD, clock=lambda: NOW)
    bounded(edge)
    assert bounded.stats.groups["customer"].ahead == 1
    assert bounded.stats.groups["customer"].computed == 1
    redis_client.flushall()
    unbounded = LiveWindows(definition, store, clock=lambda: NOW)
    unbounded([tx("bad", T0 + 80 * 365 * DAY, customer="c1", terminal="t1")])
    unbounded([tx("next", T0, customer="c1", terminal="t1")])
    assert unbounded.stats.groups["customer"].ahead == 0
    assert unbounded.stats.groups["customer"].too_late == 1


@pytest.mark.parametrize(("policy", "production", "refused"), [
    ("noeviction", True, False), ("allkeys-lru", True, True), ("volatile-ttl", False, False)])
def test_an_evicting_redis_is_refused_in_production_and_warned_about_otherwise(
        policy: str, production: bool, refused: bool, caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", policy)
        if refused:
            with pytest.raises(ConfigError, match="maxmemory-policy noeviction"):
                check_eviction(client, production=production)
        else:
            assert check_eviction(client, production=production) == policy
            assert ("eviction would silently drop" in caplog.text) == (policy != "noeviction")
        client.close()


def service_windows(redis_server: EmbeddedRedis, **redis_settings: int) -> LiveWindows:
    """The service's live windows (one customer count) on ``redis_server``, with these
    ``[redis]`` settings."""
    from stream_infer.config import load_settings
    from stream_infer.service.app import live_windows

    windows = live_windows(load_settings(
        None, redis={"url": redis_server.url, **redis_settings},
        windows={"customer": {"key": "customer_id", "lengths": ["1d"],
                              "aggregates": ["count"]}}))
    assert windows is not None
    return windows


def test_the_service_s_window_store_waits_for_the_windows_timeout_not_the_lookup_one(
        redis_server: EmbeddedRedis) -> None:
    windows = service_windows(redis_server, socket_timeout_ms=250, windows_timeout_ms=7000)
    store = windows.store
    assert isinstance(store, RedisWindowStore)
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] == 7.0


class Recording(RedisWindowStore):
    """The Redis store that keeps each read's arguments."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.reads: list[list[Any]] = []

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        self.reads += [call.args for call in calls]
        return super().read(calls)


@pytest.mark.parametrize("shards", [1, 3])
def test_the_service_s_windows_take_the_lease_and_wait_the_settings_give(
        redis_server: EmbeddedRedis, shards: int) -> None:
    """Another worker holds the group's lease (so the first write is refused) and that of
    the customer's shard: the batch then reads under the lease of that shard, and gives
    up after the wait."""
    windows = service_windows(redis_server, windows_lease_ms=700, windows_wait_ms=900,
                              windows_lease_shards=shards)
    client = redis.Redis.from_url(redis_server.url)
    windows.store = store = Recording(client)
    window = windows.definition.windows[0]
    events = [tx("a", T0, customer="c0", terminal="t1")]
    lock = "" if shards == 1 else f":{shard_of('c0', shards)}"
    for held in {"", lock}:
        client.set(f"{window.prefix}:lock{held}", "other", px=60_000)
    with pytest.raises(FeatureStoreError, match=r"not written in 0\.9 s \(held by other"):
        windows(events)
    assert store.reads and all(args[2] == 700 for args in store.reads)  # the lease's ms
    assert store.reads[-1][3] == lock  # the shard's lease
    client.close()
