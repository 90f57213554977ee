"""Random streams of events, duplicates and labels, and how their feature rows compare:
shared by the engine's property tests and the live (Redis) windows' parity tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np
from hypothesis import strategies as st

from stream_infer.records import Transaction

from .support import T0, groups, tx

WINDOWS = groups(
    customer={"key": "customer_id", "lengths": ["10ms", "30ms"], "allowed_lateness": "15ms",
              "aggregates": ["count", "sum:amount", "mean:amount", "min:attributes.x",
                             "max:attributes.x", "mean:attributes.x"]},
    terminal={"key": "terminal_id", "lengths": ["25ms", "10ms"], "delay": "20ms",
              "allowed_lateness": "40ms", "aggregates": ["count", "rate:label", "max:amount"]},
)
"""Short windows so that a few dozen events reach every edge, expire and go too late."""


KEYS = {"customer": st.sampled_from(["c1", "c1", "c2", None]),
        "terminal": st.sampled_from(["t1", "t1", "t2", None])}


@dataclass
class Batch:
    labels: list[tuple[str, int, int]] = field(default_factory=list)
    events: list[Transaction] = field(default_factory=list)


def event_id(n: int) -> str:
    """Ids whose order is not their arrival order: b0 a1 c2 b3 ..."""
    return f"{'bac'[n % 3]}{n}"


@st.composite
def streams(draw: st.DrawFn, reuse: tuple[str, ...] = ()) -> list[Batch]:
    """Batches of labels then events. The clock moves a few ms per event; an event lands
    up to 45 ms behind it (often exactly on another's time or window edge). With
    ``reuse``, some events take an id sent before, with a new time, or with the keys
    named (``customer``, ``terminal``) drawn again."""
    batches = [Batch()]
    sent: list[Transaction] = []
    clock = T0
    steps = ["event"] * 6 + ["duplicate", "cut"] + ["label"] * 3 + ["reuse"] * bool(reuse)
    for n in range(draw(st.integers(1, 60))):
        step = draw(st.sampled_from(steps))
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
        elif step == "reuse" and sent:
            event = draw(st.sampled_from(sent))
            keys = {f"{name}_id": draw(KEYS[name]) for name in reuse if name in KEYS}
            time = clock - draw(st.sampled_from([0, 1, 10, 30]))
            if "time" in reuse:
                keys["event_time"] = time
            batches[-1].events.append(msgspec.structs.replace(event, **keys))
        elif step != "cut":
            clock += draw(st.sampled_from([0, 0, 1, 5, 10, 40]))
            late = draw(st.sampled_from([0] * 6 + [1, 10, 20, 25, 45]))
            x = draw(st.none() | st.floats(-100, 100, allow_nan=False))
            event = tx(event_id(n), clock - late,
                       customer=draw(KEYS["customer"]), terminal=draw(KEYS["terminal"]),
                       amount=draw(st.floats(0.01, 1e6)),
                       **({} if x is None else {"x": x}))
            sent.append(event)
            batches[-1].events.append(event)
    return batches


def assert_same(names: tuple[str, ...], got: np.ndarray, want: np.ndarray) -> None:
    """Counts, rates, minima, maxima and the calendar exactly; sums and means to 1e-9."""
    for column, name in enumerate(names):
        if name.split(".")[1].startswith(("sum", "mean")):
            np.testing.assert_allclose(got[:, column], want[:, column], rtol=1e-9, atol=1e-9,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(got[:, column], want[:, column], err_msg=name)
