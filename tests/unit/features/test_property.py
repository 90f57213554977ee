"""The engine equals the reference on random streams: ties in time, events exactly on
window edges, out-of-order and too-late arrivals, duplicates, labels before and after
their events, corrections, and any cut into batches."""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_infer.features import WindowEngine, define
from stream_infer.features import windows as windows_module
from stream_infer.features.labels import Label

from .reference import Reference
from .streams import WINDOWS, Batch, assert_same, streams


def run_engine(stream: list[Batch], sweep_every_ms: int) -> np.ndarray:
    engine = WindowEngine(define(WINDOWS), dtype=np.float64, sweep_every_ms=sweep_every_ms)
    rows = [engine.apply(b.events, [Label(*label) for label in b.labels]) for b in stream]
    return np.concatenate(rows)


def run_reference(stream: list[Batch]) -> np.ndarray:
    reference = Reference(WINDOWS)
    rows = [row for b in stream for row in reference.apply(b.events, b.labels)]
    return np.array(rows, np.float64).reshape(len(rows), len(reference.names()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), sweep=st.sampled_from([1, 50, 10**9]),
       one_entity_at_a_time=st.booleans())
def test_the_engine_equals_the_reference(stream: list[Batch], sweep: int,
                                         one_entity_at_a_time: bool) -> None:
    want = run_reference(stream)
    with mock.patch.object(windows_module, "MAX_KEY", 1 if one_entity_at_a_time else 2**62):
        got = run_engine(stream, sweep)
    assert_same(define(WINDOWS).names, got, want)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(("time", "customer", "terminal")), sweep=st.sampled_from([1, 10**9]))
def test_the_engine_equals_the_reference_when_event_ids_are_reused(stream: list[Batch],
                                                                   sweep: int) -> None:
    """A record with a kept event's id, under another time or entity, is that event again
    (its features, as a duplicate) while it is within the horizon, and a new one after."""
    assert_same(define(WINDOWS).names, run_engine(stream, sweep), run_reference(stream))


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
