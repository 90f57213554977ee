"""The engine equals the reference on random streams: ties in time, events exactly on
window edges, out-of-order and too-late arrivals, duplicates, labels before and after
their events, corrections, and any cut into batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_infer.features import WindowEngine, define
from stream_infer.features import windows as windows_module
from stream_infer.features.labels import Label
from stream_infer.records import Transaction

from .reference import Reference
from .support import T0, groups, tx

WINDOWS = groups(
    customer={"key": "customer_id", "lengths": ["10ms", "30ms"], "allowed_lateness": "15ms",
              "aggregates": ["count", "sum:amount", "mean:amount", "min:attributes.x",
                             "max:attributes.x", "mean:attributes.x"]},
    terminal={"key": "terminal_id", "lengths": ["25ms", "10ms"], "delay": "20ms",
              "allowed_lateness": "40ms", "aggregates": ["count", "rate:label", "max:amount"]},
)
"""Short windows so that a few dozen events reach every edge, expire and go too late."""


@dataclass
class Batch:
    labels: list[tuple[str, int, int]] = field(default_factory=list)
    events: list[Transaction] = field(default_factory=list)


def event_id(n: int) -> str:
    """Ids whose order is not their arrival order: b0 a1 c2 b3 ..."""
    return f"{'bac'[n % 3]}{n}"


@st.composite
def streams(draw: st.DrawFn) -> list[Batch]:
    """Batches of labels then events. The clock moves a few ms per event; an event lands
    up to 45 ms behind it (often exactly on another's time or window edge)."""
    batches = [Batch()]
    sent: list[Transaction] = []
    clock = T0
    for n in range(draw(st.integers(1, 60))):
        step = draw(st.sampled_from(["event"] * 6 + ["duplicate", "cut"] + ["label"] * 3))
        if step == "cut" or (step == "label" and batches[-1].events):
            batches.append(Batch())
        if step == "label":
            known = [e.event_id for e in sent[-12:]]
            ahead = st.builds(event_id, st.integers(n, n + 3))
            target = draw(st.sampled_from(known) | ahead if known else ahead)
            batches[-1].labels.append((target, draw(st.integers(0, 1)),
                                       draw(st.integers(0, 4))))
        elif step == "duplicate" and sent:
            batches[-1].events.append(draw(st.sampled_from(sent)))
        elif step != "cut":
            clock += draw(st.sampled_from([0, 0, 1, 5, 10, 40]))
            late = draw(st.sampled_from([0] * 6 + [1, 10, 20, 25, 45]))
            x = draw(st.none() | st.floats(-100, 100, allow_nan=False))
            event = tx(event_id(n), clock - late,
                       customer=draw(st.sampled_from(["c1", "c1", "c2", None])),
                       terminal=draw(st.sampled_from(["t1", "t1", "t2", None])),
                       amount=draw(st.floats(0.01, 1e6)),
                       **({} if x is None else {"x": x}))
            sent.append(event)
            batches[-1].events.append(event)
    return batches


def run_engine(stream: list[Batch], sweep_every_ms: int) -> np.ndarray:
    engine = WindowEngine(define(WINDOWS), dtype=np.float64, sweep_every_ms=sweep_every_ms)
    rows = [engine.apply(b.events, [Label(*label) for label in b.labels]) for b in stream]
    return np.concatenate(rows)


def run_reference(stream: list[Batch]) -> np.ndarray:
    reference = Reference(WINDOWS)
    rows = [row for b in stream for row in reference.apply(b.events, b.labels)]
    return np.array(rows, np.float64).reshape(len(rows), len(reference.names()))


def assert_same(names: tuple[str, ...], got: np.ndarray, want: np.ndarray) -> None:
    """Counts, rates, minima, maxima and the calendar exactly; sums and means to 1e-9."""
    for column, name in enumerate(names):
        if name.split(".")[1].startswith(("sum", "mean")):
            np.testing.assert_allclose(got[:, column], want[:, column], rtol=1e-9, atol=1e-9,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(got[:, column], want[:, column], err_msg=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), sweep=st.sampled_from([1, 50, 10**9]),
       one_entity_at_a_time=st.booleans())
def test_the_engine_equals_the_reference(stream: list[Batch], sweep: int,
                                         one_entity_at_a_time: bool) -> None:
    want = run_reference(stream)
    with mock.patch.object(windows_module, "MAX_KEY", 1 if one_entity_at_a_time else 2**62):
        got = run_engine(stream, sweep)
    assert_same(define(WINDOWS).names, got, want)


@settings(max_examples=40, deadline=None)
@given(stream=streams(), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_rows_do_not_depend_on_how_the_events_are_cut_into_batches(
        stream: list[Batch], cuts: list[int]) -> None:
    recut: list[Batch] = []
    for batch in stream:
        events = batch.events
        pieces = sorted({c for c in cuts if c < len(events)} | {0})
        recut += [Batch(batch.labels if a == 0 else [], events[a:b])
                  for a, b in zip(pieces, [*pieces[1:], len(events)], strict=True)]
    np.testing.assert_array_equal(run_engine(recut, 10**9), run_engine(stream, 10**9))


def test_the_reference_names_are_the_definitions() -> None:
    assert list(define(WINDOWS).names) == Reference(WINDOWS).names()
