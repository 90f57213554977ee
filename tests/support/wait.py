"""One way to wait for something in a test."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, *,
               poll_s: float = 0.2,
               ignoring: tuple[type[BaseException], ...] = ()) -> float:
    """Call ``predicate`` every ``poll_s`` until it returns something true; return the seconds
    it took.

    An exception of a type in ``ignoring`` counts as "not yet". Fails the test with
    ``timed out after <timeout_s>s waiting for <what>`` (and the exception of the last call,
    if it raised one).
    """
    started = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            if predicate():
                return time.monotonic() - started
            last = None
        except ignoring as exc:
            last = exc
        if time.monotonic() - started >= timeout_s:
            detail = f" (last: {last!r})" if last is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}{detail}")
        time.sleep(poll_s)
