"""Garbage collection for a long-running batch loop.

CPython starts a young-generation collection whenever tracked objects allocated minus freed
exceed 700. A micro-batch keeps thousands alive at once (a message object and an offset tuple
per record), so the default runs several collections per batch and promotes the batch's
objects through the older generations, scanning them again there. In the end-to-end
benchmark that was 18% of a worker's CPU.

While serving, :func:`steady_state_gc` moves the startup heap (modules, models, settings) to
the permanent generation with :func:`gc.freeze`, so full collections no longer scan it, and
raises the young threshold above what batches keep alive, so a batch's objects are freed by
reference counting before any collection looks at them. Reference cycles are still
collected: a collection runs once ``young_threshold`` more objects are alive than before,
which bounds the garbage cycles can hold.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 100_000
"""Net new tracked objects before a young collection: above a batch of 10,000 records with
both in-flight batches alive, and still only a few megabytes of cyclic garbage at worst."""


@contextmanager
def steady_state_gc(young_threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Freeze the heap built so far and collect young objects rarely; undo both on exit."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
