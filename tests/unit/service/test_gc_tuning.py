"""The serving loop's garbage collection: batches are freed without collections, cycles are
still collected, and everything is restored afterwards."""

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from stream_infer.service.app import serve
from stream_infer.service.gc_tuning import YOUNG_THRESHOLD, steady_state_gc


@contextmanager
def young_collections() -> Iterator[list[int]]:
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)


def a_batch(records: int = 10_000) -> None:
    """What one batch keeps alive at once: a message-like and a tuple object per record."""
    alive = [({"offset": i}, ("tx", i % 4)) for i in range(records)]
    assert len(alive) == records


def test_a_batch_is_freed_without_a_collection() -> None:
    with steady_state_gc(), young_collections() as seen:
        for _ in range(5):
            a_batch()
    assert seen == []


def test_the_default_collects_during_every_batch() -> None:
    """The cost the tuning removes: the same batches under CPython's defaults."""
    gc.collect()
    with young_collections() as seen:
        for _ in range(5):
            a_batch()
    assert len(seen) >= 5


def test_cycles_are_still_collected() -> None:
    class Node:
        other: object = None

    collected: list[bool] = []
    with steady_state_gc(young_threshold=1_000), young_collections() as seen:
        first = Node()
        first.other = first
        weakref.finalize(first, collected.append, True)
        del first
        for _ in range(3_000):
            node = Node()
            node.other = node
        del node
    assert seen and collected == [True]


def test_thresholds_and_freeze_are_restored() -> None:
    before = gc.get_threshold()
    with steady_state_gc():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_serve_runs_the_loop_under_the_tuning() -> None:
    class Loop:
        reloader = None

        def __init__(self) -> None:
            self.during: tuple[int, int] = (0, 0)

        def run(self, max_events: int | None = None) -> None:
            self.during = (gc.get_threshold()[0], gc.get_freeze_count())

        def stop(self) -> None:
            pass

    loop = Loop()
    serve(loop)  # type: ignore[arg-type]
    threshold, frozen = loop.during
    assert threshold == YOUNG_THRESHOLD and frozen > 0
    assert gc.get_freeze_count() == 0
