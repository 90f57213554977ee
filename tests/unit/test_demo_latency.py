"""The demo's event-to-alert figures are the steady state: alerts on events produced before
the first batch was acknowledged (the consumer's start-up) are reported apart."""

from __future__ import annotations

import io
import re

from stream_infer.demo.run import StartupSplit, _summary
from stream_infer.pipeline import BatchCounts, BatchOutcome
from stream_infer.runner import RunStats

OFFERED_MS = 1_000_000


def outcome(produced_ms: list[int]) -> BatchOutcome:
    return BatchOutcome(outputs=[], first_offsets={}, next_offsets={}, counts=BatchCounts(),
                        alert_source_ms=produced_ms)


def run(batches: list[tuple[int, list[int]]]) -> tuple[StartupSplit, RunStats]:
    """Each batch: (the clock when it is acknowledged, when its alerts' events were
    produced), fed as the runner feeds an observer and its own stats."""
    now = [OFFERED_MS]
    split, stats = StartupSplit(lambda: now[0]), RunStats()
    split.offered_at_ms = OFFERED_MS
    for acked_ms, produced in batches:
        now[0] = acked_ms
        waited = [acked_ms - p for p in produced]
        stats.latency_ms.extend(waited)
        split.batch_done(outcome(produced), 0.0, waited)
    return split, stats


def summary(split: StartupSplit, stats: RunStats) -> str:
    out = io.StringIO()
    _summary(stats, out, split)
    return out.getvalue()


def test_the_startup_second_is_left_out_of_p50_and_p99_and_reported_apart() -> None:
    first = (OFFERED_MS + 1100, [OFFERED_MS + i for i in range(0, 100, 10)])  # waited ~1.1 s
    steady = [(OFFERED_MS + 1200 + 50 * n, [OFFERED_MS + 1160 + 50 * n]) for n in range(200)]
    split, stats = run([first, *steady])
    text = summary(split, stats)
    p50, p99 = map(float, re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms", text).groups())
    assert (p50, p99) == (40.0, 40.0)
    assert stats.latency_ms.percentile(99) > 1000  # what the summary printed before
    assert ("start-up        1.10 s from the first event offered to the first batch "
            "acknowledged; its 10 alerts, up to 1100 ms, are not above") in text


def test_when_every_alert_came_during_startup_the_figures_say_so() -> None:
    split, stats = run([(OFFERED_MS + 900, [OFFERED_MS, OFFERED_MS + 5])])
    text = summary(split, stats)
    assert "p50 897.5 ms, p99 900.0 ms" in text
    assert "every alert came before it (so they are above)" in text
