"""Named fail points for fault tests, after fail-rs and FreeBSD ``fail(9)``.

``hit("after_flush")`` does nothing unless ``STREAM_INFER_FAILPOINT`` names that point. The
variable holds ``point[=actions]`` terms separated by ``;``; ``actions`` is a chain of
``[count*]task`` joined by ``->``, each task done ``count`` times (forever when no count)
before the next one takes over. Tasks: ``kill`` (the process SIGKILLs itself, the default),
``sleep(ms)``, ``off`` (nothing). Examples::

    STREAM_INFER_FAILPOINT=after_flush                   # die at the first flush
    STREAM_INFER_FAILPOINT="after_store=5*off->kill"     # let five batches through, then die
    STREAM_INFER_FAILPOINT="after_score=1*sleep(9000)"   # one batch slower than max.poll

The points, in the order a batch reaches them: ``after_decode``, ``after_score``
(``pipeline.py``), ``after_produce`` (queued, not flushed), ``after_flush`` (acknowledged,
offsets not stored), ``after_store`` (stored, not committed) (``runner.py``). The variable is
read once, at import; :func:`configure` replaces it (unit tests). Without it, ``hit`` is one
dictionary lookup.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from dataclasses import dataclass

ENV = "STREAM_INFER_FAILPOINT"
POINTS = ("after_decode", "after_score", "after_produce", "after_flush", "after_store")
WINDOW_POINTS = ("after_window_state",)
"""Reached only with window features: the batch's window state is written in Redis, its
features not yet scored (``features/live.py``)."""
_TASK = re.compile(r"^(?:(\d+)\*)?(kill|off|sleep\((\d+)\))$")


@dataclass(slots=True)
class _Step:
    task: str
    remaining: int | None
    sleep_ms: int = 0


_active: dict[str, list[_Step]] = {}


def configure(spec: str) -> None:
    """Arm the points ``spec`` names (the ``STREAM_INFER_FAILPOINT`` syntax); "" disarms all.

    Raises ValueError naming the problem for an unknown point or a malformed action.
    """
    armed: dict[str, list[_Step]] = {}
    for term in filter(None, (t.strip() for t in spec.split(";"))):
        point, _, actions = term.partition("=")
        if point not in POINTS + WINDOW_POINTS:
            raise ValueError(f"{ENV}: unknown fail point {point!r} "
                             f"(known: {', '.join(POINTS + WINDOW_POINTS)})")
        armed[point] = [_step(a.strip()) for a in (actions or "kill").split("->")]
    _active.clear()
    _active.update(armed)


def hit(point: str) -> None:
    """Do what ``point`` is armed to do now (usually nothing)."""
    steps = _active.get(point)
    if not steps:
        return
    step = steps[0]
    if step.remaining is not None:
        step.remaining -= 1
        if step.remaining == 0:
            steps.pop(0)
    if step.task == "kill":
        _say(f"fail point {point}: SIGKILL")
        os.kill(os.getpid(), signal.SIGKILL)
    elif step.task == "sleep":
        _say(f"fail point {point}: sleeping {step.sleep_ms} ms")
        time.sleep(step.sleep_ms / 1000)


def _step(action: str) -> _Step:
    match = _TASK.match(action)
    if match is None:
        raise ValueError(f"{ENV}: cannot parse {action!r} (want [count*]kill|off|sleep(ms))")
    count, task, ms = match.groups()
    return _Step(task.partition("(")[0], int(count) if count else None, int(ms or 0))


def _say(message: str) -> None:
    """One line on stderr, written before the action (a SIGKILL leaves no buffer unflushed)."""
    sys.stderr.flush()
    os.write(2, f"{message}\n".encode())


configure(os.environ.get(ENV, ""))
