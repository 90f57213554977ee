"""The engine on the issue's configuration: window edges, ties, labels, duplicates, lateness
and retention, one hand-checked case each."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.features import Label, WindowEngine, define
from stream_infer.features.engine import GroupEngine, GroupStats
from stream_infer.features.windows import runs
from stream_infer.records import Transaction

from .reference import Reference
from .support import DAY, HOUR, ISSUE, T0, groups, tx


def engine(**options: int) -> WindowEngine:
    return WindowEngine(define(ISSUE), dtype=np.float64, **options)


def features(row: np.ndarray, prefix: str = "") -> dict[str, float]:
    names = define(ISSUE).names
    return {n: float(v) for n, v in zip(names, row, strict=True) if n.startswith(prefix)}


def test_events_exactly_on_the_edges_of_plain_and_delayed_windows() -> None:
    e = engine()
    t = T0 + 40 * DAY
    history = [tx("at-37d", t - 37 * DAY, amount=1), tx("at-14d", t - 14 * DAY, amount=2),
               tx("at-8d", t - 8 * DAY, amount=4), tx("at-7d", t - 7 * DAY, amount=8),
               tx("at-1d", t - DAY, amount=16)]
    e.apply(history, [Label("at-8d", 1, t - DAY), Label("at-7d", 1, t - DAY)])
    row = features(e.apply([tx("now", t, amount=32)])[0])
    assert row["customer.count_1d"] == 1 and row["customer.mean_amount_1d"] == 32
    assert row["customer.count_7d"] == 2 and row["customer.mean_amount_7d"] == 24
    assert row["customer.count_30d"] == 5 and row["customer.mean_amount_30d"] == 12.4
    # delayed by 7d: (t-8d, t-7d], (t-14d, t-7d], (t-37d, t-7d]
    assert (row["terminal.count_1d"], row["terminal.rate_label_1d"]) == (1, 1.0)
    assert (row["terminal.count_7d"], row["terminal.rate_label_7d"]) == (2, 1.0)
    assert (row["terminal.count_30d"], row["terminal.rate_label_30d"]) == (3, 2 / 3)


def test_the_first_event_of_an_entity_and_an_empty_delayed_window() -> None:
    row = features(engine().apply([tx("first", T0, amount=12.5)])[0])
    assert row == {**row, "customer.count_1d": 1, "customer.mean_amount_30d": 12.5,
                   "terminal.count_1d": 0, "terminal.rate_label_1d": 0.0,
                   "terminal.rate_label_30d": 0.0}


@pytest.mark.parametrize("arrival", [["a", "b"], ["b", "a"]])
def test_same_millisecond_ties_are_ordered_by_event_id(arrival: list[str]) -> None:
    e = engine()
    rows = e.apply([tx(i, T0) for i in arrival])
    counts = {i: features(r)["customer.count_1d"] for i, r in zip(arrival, rows, strict=True)}
    # b sorts after a: it sees a only if a had arrived; a never sees b
    assert counts == ({"a": 1, "b": 2} if arrival == ["a", "b"] else {"b": 1, "a": 1})
    assert e.groups[0].stats.late == (arrival == ["b", "a"])
    assert features(e.apply([tx("c", T0)])[0])["customer.count_1d"] == 3


def test_a_late_event_gets_the_answer_for_its_own_time_and_later_events_count_it() -> None:
    e = engine()
    e.apply([tx("new", T0 + 2 * HOUR)])
    late = features(e.apply([tx("late", T0 + HOUR)])[0])
    assert late["customer.count_1d"] == 1 and e.groups[0].stats.late == 1
    assert features(e.apply([tx("next", T0 + 3 * HOUR)])[0])["customer.count_1d"] == 3


def test_a_too_late_event_gets_nan_window_features_and_is_not_kept() -> None:
    e = engine()
    e.apply([tx("new", T0 + 2 * HOUR)])
    row = features(e.apply([tx("old", T0 + HOUR - 1)])[0])
    assert all(math.isnan(v) for n, v in row.items() if not n.startswith("event."))
    assert not math.isnan(row["event.hour"])
    assert e.groups[0].stats.too_late == 1
    assert features(e.apply([tx("next", T0 + 3 * HOUR)])[0])["customer.count_1d"] == 2


def test_a_missing_key_gives_nan_for_that_group_only() -> None:
    row = features(engine().apply([tx("e", T0, terminal=None)])[0])
    assert row["customer.count_1d"] == 1
    assert math.isnan(row["terminal.count_1d"]) and math.isnan(row["terminal.rate_label_7d"])


def test_a_label_before_its_event_waits_and_applies_when_it_arrives() -> None:
    e = engine()
    e.apply([], [Label("fraud", 1, T0 - DAY)])
    assert e.label_stats.pending == 1 and len(e.pending) == 1
    e.apply([tx("fraud", T0)])
    assert len(e.pending) == 0
    row = features(e.apply([tx("later", T0 + 7 * DAY + HOUR)])[0])
    assert (row["terminal.count_1d"], row["terminal.rate_label_1d"]) == (1, 1.0)


def test_a_correction_applies_by_label_time_and_only_to_later_events() -> None:
    e = engine()
    e.apply([tx("x", T0)], [])
    later = tx("y", T0 + 8 * DAY)
    e.apply([], [Label("x", 1, T0 + DAY)])
    assert features(e.apply([tx("a", T0 + 8 * DAY)])[0])["terminal.rate_label_7d"] == 1.0
    e.apply([], [Label("x", 0, T0 + 2 * DAY), Label("x", 1, T0 + DAY + 1)])  # newer, then older
    assert features(e.apply([later])[0])["terminal.rate_label_7d"] == 0.0
    assert (e.label_stats.applied, e.label_stats.ignored) == (2, 1)
    # the first event keeps the rate it was served
    assert features(e.apply([tx("a", T0 + 8 * DAY)])[0])["terminal.rate_label_7d"] == 1.0


def test_labels_of_events_at_one_time_land_on_their_own_and_a_repeat_is_ignored() -> None:
    """Three events of one terminal at one time: each label finds its own event among them
    (by id), a repeated label changes nothing, and a correction reaches only its event."""
    e = engine()
    e.apply([tx("b", T0), tx("a", T0), tx("c", T0)])
    e.apply([], [Label("c", 1, T0 + DAY), Label("c", 1, T0 + DAY), Label("a", 1, T0 + DAY)])
    assert (e.label_stats.applied, e.label_stats.ignored) == (2, 1)
    e.apply([], [Label("c", 0, T0 + 2 * DAY)])
    row = features(e.apply([tx("later", T0 + 7 * DAY)])[0])
    assert (row["terminal.count_1d"], row["terminal.rate_label_1d"]) == (3, pytest.approx(1 / 3))


def test_a_duplicate_returns_its_memoized_row_bit_for_bit_after_later_arrivals() -> None:
    e = WindowEngine(define(ISSUE))
    first = e.apply([tx("one", T0, amount=1 / 3), tx("two", T0 + HOUR, amount=0.1)])
    e.apply([tx("three", T0 + 30 * 60_000), tx("four", T0 + 2 * HOUR)],
            [Label("one", 1, T0 + HOUR)])
    again = e.apply([tx("two", T0 + HOUR, amount=0.1), tx("one", T0, amount=1 / 3)])
    assert again.dtype == np.float32
    assert again.tobytes() == first[::-1].tobytes()
    assert e.groups[0].stats.duplicates == 2


def test_retention_trims_old_events_and_expires_idle_entities() -> None:
    e = engine(sweep_every_ms=HOUR)
    e.apply([tx(f"c{i}", T0 + i * DAY, customer=f"cust{i % 2}") for i in range(3)])
    assert e.memory()["customer"].entities == 2
    e.apply([tx("far", T0 + 32 * DAY, customer="cust0", terminal="t2")])
    memory = e.memory()
    assert (memory["customer"].entities, memory["customer"].events) == (1, 2)  # 30d + 1h kept
    assert (memory["terminal"].entities, memory["terminal"].events) == (2, 4)  # 37d + 1h
    assert e.groups[0].stats == GroupStats(computed=4, trimmed=2, expired=1)
    assert memory["customer"].bytes_per_entity == memory["customer"].bytes > 0
    e.apply([tx("farther", T0 + 80 * DAY, customer="cust0")])
    assert (e.memory()["terminal"].entities, e.memory()["terminal"].events) == (1, 1)
    assert "c0" not in e.groups[1].state.directory


def test_pending_labels_are_bounded_oldest_out() -> None:
    e = engine(pending_labels=2)
    e.apply([], [Label(i, 1, T0) for i in ("p", "q", "r")])
    assert len(e.pending) == 2 and e.pending.get("p") is None and e.label_stats.evicted == 1


def test_an_attribute_aggregate_skips_events_without_it() -> None:
    windows = groups(card={"key": "card_id", "lengths": ["1h"],
                           "aggregates": ["sum:attributes.v", "mean:attributes.v",
                                          "min:attributes.v", "max:attributes.v", "count"]})
    e = WindowEngine(define(windows), dtype=np.float64)
    rows = e.apply([tx("a", T0), tx("b", T0 + 1, v=3.0), tx("c", T0 + 2, v=-1.0)])
    assert np.isnan(rows[0, 1:4]).all() and rows[0, 0] == 0 and rows[0, 4] == 1
    assert rows[2, :5].tolist() == [2.0, 1.0, -1.0, 3.0, 3.0]


def test_an_empty_batch_is_an_empty_matrix() -> None:
    assert engine().apply([]).shape == (0, len(define(ISSUE).names))


def test_an_event_id_is_one_event_even_when_a_copy_claims_another_time() -> None:
    e = engine()
    rows = e.apply([tx("x", T0, amount=5), tx("y", T0 + 1), tx("x", T0 + 2, amount=7)])
    np.testing.assert_array_equal(rows[2, :12], rows[0, :12])
    assert e.groups[0].stats.duplicates == 1 and e.memory()["customer"].events == 2


def test_a_label_for_an_event_beyond_the_horizon_waits_for_its_id_to_come_again() -> None:
    """No window reads an event kept at or before the horizon: a label for it waits as for
    an event not yet seen (README), and goes to a later event under that id, one that is
    not the old one again (beyond the horizon too), as the reference gives."""
    horizon = define(ISSUE).windows[1].horizon_ms
    batches = [([tx("x", T0)], []), ([tx("y", T0 + horizon)], []),
               ([], [Label("x", 1, T0 + horizon)]), ([tx("x", T0 + horizon)], []),
               ([tx("z", T0 + horizon + 7 * DAY + HOUR)], [])]
    e = engine()
    rows = [e.apply(events, labels) for events, labels in batches]
    assert e.label_stats.pending == 1 and len(e.pending) == 0
    assert e.groups[1].stats.duplicates == 0
    row = features(rows[-1][0])
    assert (row["terminal.count_1d"], row["terminal.rate_label_1d"]) == (2, 0.5)
    reference = Reference(ISSUE)
    want = [reference.apply(events, [(x.event_id, x.label, x.label_time) for x in labels])
            for events, labels in batches]
    np.testing.assert_array_equal(rows[-1], np.array(want[-1]))


def _cut_one_at_a_time(keys: list[str | None], times: list[int],
                       ids: list[str]) -> list[list[int]]:
    """The runs by definition: a new run whenever an event's id was seen in the current
    run, or it does not come after its entity's last event there by (time, id)."""
    found: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None:
            continue
        current = found[-1] if found else []
        clash = any(ids[j] == ids[i]
                    or (keys[j] == key and (times[j], ids[j]) >= (times[i], ids[i]))
                    for j in current)
        if not found or clash:
            found.append([])
        found[-1].append(i)
    return found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, "a", "b", "c"]), st.integers(0, 3),
                          st.sampled_from(["x", "y", "z", "w", "v", "u"])),
                min_size=0, max_size=12))
def test_runs_cut_a_batch_where_one_at_a_time_would(
        events: list[tuple[str | None, int, str]]) -> None:
    keys = [k for k, _, _ in events]
    times = [t for _, t, _ in events]
    ids = [i for _, _, i in events]
    assert runs(keys, np.array(times, np.int64), ids) == _cut_one_at_a_time(keys, times, ids)


TWO_RATES = groups(
    customer={"key": "customer_id", "lengths": ["1h", "5h"], "delay": "2h",
              "aggregates": ["count", "rate:label", "mean:amount"]},
    terminal={"key": "terminal_id", "lengths": ["3h"], "delay": "1h",
              "allowed_lateness": "30m", "aggregates": ["rate:label"]})
"""Two rate groups on an hours scale, so that labels arriving among a batch's events
change what its later events count."""

Arrival = tuple[str, object]


@st.composite
def labelled_batches(draw: st.DrawFn) -> tuple[list[Arrival], list[Arrival], list[Arrival]]:
    """Arrivals before a batch (one at a time), the batch's own (events and labels
    interleaved; labels first among them apply at its start), and arrivals after it, over
    10 hours: twice the terminal group's horizon, so that events leave it mid-batch. Half
    the batches have their events in time order with distinct ids, so that their labels
    are placed in one pass; the others are cut at their labels."""
    def event(i: int) -> Arrival:
        return "event", tx(f"e{draw(st.integers(0, 14))}", T0 + draw(st.integers(0, 60)) * 600_000,
                          draw(st.sampled_from(["c1", "c2", None])),
                          draw(st.sampled_from(["t1", "t2", None])), amount=float(i))

    def label() -> Arrival:
        return "label", Label(f"e{draw(st.integers(0, 14))}", draw(st.integers(0, 1)),
                              T0 + draw(st.integers(0, 60)) * 600_000)

    def arrivals(most: int) -> list[Arrival]:
        return [event(i) if draw(st.booleans()) else label()
                for i in range(draw(st.integers(0, most)))]

    before, batch, after = arrivals(12), arrivals(30), arrivals(8)
    if draw(st.booleans()):
        events = sorted({e.event_id: e for kind, e in batch if kind == "event"}.values(),
                        key=lambda e: e.event_time_ms)
        labels = [item for item in batch if item[0] == "label"]
        at = sorted(draw(st.lists(st.integers(0, len(events)), min_size=len(labels),
                                  max_size=len(labels))))
        batch = [("event", e) for e in events]
        for offset, (position, item) in enumerate(zip(at, labels, strict=True)):
            batch.insert(position + offset, item)
    return before, batch, after


def one_at_a_time(engine: WindowEngine, arrivals: list[Arrival]) -> list[np.ndarray]:
    return [engine.apply([item]) if kind == "event" else engine.apply([], [item])  # type: ignore[list-item]
            for kind, item in arrivals]


@settings(max_examples=400, deadline=None)
@given(labelled_batches())
def test_labels_arriving_among_a_batchs_events_count_only_for_the_events_after_them(
        stream: tuple[list[Arrival], list[Arrival], list[Arrival]]) -> None:
    """``apply(events, labels, during=...)`` serves every event, keeps every state and
    counts every label as the same arrivals one at a time do: before, during and after."""
    before, batch, after = stream
    definition = define(TWO_RATES)
    reference = WindowEngine(definition, dtype=np.float64)
    subject = WindowEngine(definition, dtype=np.float64)
    one_at_a_time(reference, before)
    one_at_a_time(subject, before)
    expected = [row for row in one_at_a_time(reference, batch) if len(row)]
    leading = next((i for i, (kind, _) in enumerate(batch) if kind == "event"), len(batch))
    events: list[Transaction] = []
    during: list[tuple[int, Label]] = []
    for kind, item in batch[leading:]:
        if kind == "event":
            events.append(item)  # type: ignore[arg-type]
        else:
            during.append((len(events), item))  # type: ignore[arg-type]
    got = subject.apply(events, [item for _, item in batch[:leading]],  # type: ignore[misc]
                        during=during)
    width = len(definition.names)
    assert np.vstack([got, *one_at_a_time(subject, after)]).tobytes() == np.vstack(
        [np.empty((0, width)), *expected, *one_at_a_time(reference, after)]).tobytes()
    assert subject.label_stats == reference.label_stats
    assert len(subject.pending) == len(reference.pending)
    assert [replace(g.stats, trimmed=0, expired=0) for g in subject.groups] == [
        replace(g.stats, trimmed=0, expired=0) for g in reference.groups]  # when, not what


@pytest.mark.parametrize("cuts", [[1, 1, 1, 1], [1, 2, 1], [4]])
def test_trimming_an_event_keeps_a_newer_copy_of_its_id_kept_elsewhere(cuts: list[int]) -> None:
    """A copy of e0 claiming a time 5 h after it, on another terminal, is beyond the
    horizon of the first, so computed anew and kept there; trimming the first copy leaves
    the directory naming the new one, so a third copy is its duplicate, however the
    arrivals are cut."""
    arrivals = [tx("e0", T0, "c1", "t1"), tx("e1", T0, "c1", "t1"),
                tx("e0", T0 + 5 * HOUR, "c1", "t2"), tx("e0", T0, "c1", "t1")]
    e = WindowEngine(define(TWO_RATES), dtype=np.float64)
    rows, start = [], 0
    for size in cuts:
        rows.append(e.apply(arrivals[start:start + size]))
        start += size
    windows = np.vstack(rows)[:, :7]
    assert windows[3].tobytes() == windows[2].tobytes()
    assert e.groups[1].stats.duplicates == 1


def test_a_waiting_label_goes_to_its_events_first_arrival_only() -> None:
    """A fraud label waits for e0; e0 arrives on t1, then a copy 5 h later on t1 (beyond
    the first's horizon: computed anew). The label went to the first arrival, so the
    copy counts as unlabelled for a later event of t1, in one batch as one at a time."""
    arrivals = [tx("e0", T0, "c1", "t1"), tx("e0", T0 + 5 * HOUR, "c1", "t1"),
                tx("probe", T0 + 6 * HOUR + 30 * 60_000, "c2", "t1")]
    rate = define(TWO_RATES).names.index("terminal.rate_label_3h")
    one, batch = (WindowEngine(define(TWO_RATES), dtype=np.float64) for _ in range(2))
    for e in (one, batch):
        e.apply([], [Label("e0", 1, T0 - HOUR)])
    one_at_a_time = np.vstack([one.apply([event]) for event in arrivals])[:, rate]
    assert batch.apply(arrivals)[:, rate].tolist() == one_at_a_time.tolist() == [0.0] * 3


def test_a_label_arriving_before_two_copies_of_its_event_goes_to_the_first() -> None:
    """A fraud label arrives among a batch's events, before e0 and a copy of it: the first
    (no terminal) takes it in the customer group, so the copy (no customer) does not, and
    a later event of t1 counts it unlabelled, as one arrival at a time does."""
    first = tx("first", T0 - HOUR, "c9", "t9")
    copies = [tx("e0", T0, "c1", None), tx("e0", T0, None, "t1")]
    probe = tx("probe", T0 + 2 * HOUR, "c2", "t1")
    fraud = Label("e0", 1, T0 - HOUR)
    names = define(TWO_RATES).names
    reference = WindowEngine(define(TWO_RATES), dtype=np.float64)
    expected = [reference.apply([first]), reference.apply([], [fraud]),
                *(reference.apply([e]) for e in [*copies, probe])]
    subject = WindowEngine(define(TWO_RATES), dtype=np.float64)
    got = subject.apply([first, *copies, probe], during=[(1, fraud)])
    assert got.tobytes() == np.vstack(expected).tobytes()
    assert got[3, names.index("terminal.rate_label_3h")] == 0.0
    assert got[1, names.index("customer.rate_label_1h")] == 0.0


@pytest.mark.parametrize("apart", [HOUR, 40 * DAY])
def test_many_copies_of_events_with_waiting_labels_are_served_as_one_at_a_time(
        apart: int) -> None:
    """1,200 events, each followed by a copy (an hour later: a duplicate; 40 days later,
    beyond the horizon: computed again), all labelled fraud before they arrive: one batch
    serves what one arrival at a time does, however many times it must be cut (more
    than the interpreter's recursion limit)."""
    labels = [Label(f"e{i}", 1, T0 - DAY) for i in range(1_200)]
    arrivals = [tx(f"e{i // 2}", T0 + i * 60_000 + (i % 2) * apart, f"c{i % 3}", f"t{i % 5}")
                for i in range(2_400)]
    one, batch = engine(), engine()
    for e in (one, batch):
        e.apply([], labels)
    expected = np.vstack([one.apply([event]) for event in arrivals])
    assert batch.apply(arrivals).tobytes() == expected.tobytes()
    assert batch.label_stats == one.label_stats


@st.composite
def copied_arrivals(draw: st.DrawFn) -> tuple[list[Arrival], list[Transaction]]:
    """Arrivals one at a time, then a batch, both drawn from eight events that recur
    exactly (id, time and keys), some under a variant of their id (another time or
    terminal), with labels among the first arrivals; over 10 hours, so that copies
    arriving after their first leaves the horizon are too late, and a first that was
    too late has too-late copies."""
    firsts = [(T0 + draw(st.integers(0, 60)) * 600_000, draw(st.sampled_from(["c1", "c2", None])),
               draw(st.sampled_from(["t1", "t2"]))) for _ in range(8)]

    def event() -> Transaction:
        k = draw(st.integers(0, 7))
        time, customer, terminal = firsts[k]
        variant = draw(st.integers(0, 9))
        if variant == 0:
            time = T0 + draw(st.integers(0, 60)) * 600_000
        elif variant == 1:
            terminal = "t3"
        return tx(f"e{k}", time, customer, terminal, amount=float(k))

    before: list[Arrival] = [
        ("event", event()) if draw(st.booleans()) else
        ("label", Label(f"e{draw(st.integers(0, 7))}", draw(st.integers(0, 1)),
                        T0 + draw(st.integers(0, 60)) * 600_000))
        for _ in range(draw(st.integers(0, 12)))]
    return before, [event() for _ in range(draw(st.integers(0, 40)))]


@settings(max_examples=400, deadline=None)
@given(copied_arrivals())
def test_a_batch_of_copied_events_is_served_as_one_at_a_time(
        stream: tuple[list[Arrival], list[Transaction]]) -> None:
    """Events repeated within a batch, exactly or as variants, and kept or refused before
    it: one batch serves and counts them as the same arrivals one at a time do."""
    before, batch = stream
    reference = WindowEngine(define(TWO_RATES), dtype=np.float64)
    subject = WindowEngine(define(TWO_RATES), dtype=np.float64)
    one_at_a_time(reference, before)
    one_at_a_time(subject, before)
    expected = one_at_a_time(reference, [("event", e) for e in batch])
    width = len(subject.names)
    assert subject.apply(batch).tobytes() == np.vstack(
        [np.empty((0, width)), *expected]).tobytes()
    assert subject.label_stats == reference.label_stats
    assert [replace(g.stats, trimmed=0, expired=0) for g in subject.groups] == [
        replace(g.stats, trimmed=0, expired=0) for g in reference.groups]


def test_a_batch_whose_every_event_comes_twice_is_computed_in_one_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each exact copy takes its first's outcome instead of starting a run of its own: a
    batch of 400 events, each followed by its copy, places each group's events among
    their logs once, as the same batch without copies does, and serves the copies the
    same rows."""
    history = [tx(f"h{i}", T0 + i * 60_000, f"c{i % 7}", f"t{i % 3}") for i in range(200)]
    fresh = [tx(f"e{i}", T0 + (200 + i) * 60_000, f"c{i % 7}", f"t{i % 3}")
             for i in range(400)]
    placed: list[int] = []
    place = GroupEngine._place

    def counted(self: GroupEngine, todo: np.ndarray, *args: object, **kwargs: object) -> None:
        placed.append(len(todo))
        place(self, todo, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GroupEngine, "_place", counted)
    once, twice = engine(), engine()
    once.apply(history)
    twice.apply(history)
    placed.clear()
    rows = once.apply(fresh)
    assert placed == [400, 400]
    placed.clear()
    copied = twice.apply([e for e in fresh for _ in (0, 1)])
    assert placed == [400, 400]
    assert copied[::2].tobytes() == rows.tobytes() == copied[1::2].tobytes()
    assert [g.stats.duplicates for g in twice.groups] == [400, 400]
