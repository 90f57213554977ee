"""What one ordered log per window group, replayed by every worker, would cost: a probe.

docs/BENCHMARKS.md ("How far from the target") lists a design for issue 23's ratio that
needs neither a repartition hop nor Redis calls per entity. Each batch appends its rows,
and the labels that arrived with it, to its group's log in Redis, in one call that is
refused if another worker appended since this worker read. Every worker keeps a compiled
copy of each group's state and brings it up to date from the log before it computes. The
log's order is the arrival order the semantics are defined on.

This simulates that in one process on a real ``redis-server``. ``--workers`` copies of the
state take the batches in turn, as partitions spread over workers. Each copy:

1. reads the entries the others appended (one ``LRANGE`` per group, pipelined) and replays
   them (``bench/arena_probe.c``'s ``replay``: the labels applied, the rows kept with the
   features they were served, no window computed, no Python object per row);
2. computes its batch (``apply``), which also writes the batch's entry for each group, in
   the binary layout ``arena_probe.c`` describes;
3. appends those entries to the groups' logs (one script call per group, pipelined).

Every feature is checked against :class:`WindowEngine` over the same arrivals, bit for
bit, or the probe exits non-zero. It reports per event: the workers' CPU, in the three
steps above; Redis's CPU; and the log's bytes. The limits are ``bench/arena.py``'s probe's,
and nothing trims the log. The copies run one after the other, so no append is ever
refused here: the cost of a refusal (a batch read and computed again) is not in these
figures. The features served travel with the rows, for duplicates to find; this stream
has none, so the check does not reach them.

    python bench/group_log.py --json
    python bench/group_log.py --workers 4 --json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from arena import CompiledWindows, compiled_probe, setup
from windows import redis_cpu, report, workload_arguments

from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.features import WindowEngine
from stream_infer.features.definition import Definition
from stream_infer.features.labels import Label
from stream_infer.records import Transaction
from stream_infer.service.gc_tuning import steady_state_gc

Floats = npt.NDArray[np.float64]
APPEND = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
return redis.call('RPUSH', KEYS[1], ARGV[2])
"""
"""Append an entry if the log still has the length the worker read up to."""
STEPS = ("catch_up", "compute", "append")


class Copy(CompiledWindows):
    """One worker's copy of every group's state, and how far it has read each group's log
    (``read``)."""

    def __init__(self, definition: Definition, probe: Any, client: Any) -> None:
        super().__init__(definition, probe)
        self.keys = [f"probe:log:{w.name}" for w in self.windows]
        self.read = [0] * len(self.windows)
        self.client = client
        self.append = client.register_script(APPEND)
        self.cpu = dict.fromkeys(STEPS, 0.0)

    def step(self, events: Sequence[Transaction], labels: Sequence[Label]) -> Floats:
        """Catch up, compute the batch, append it; its window features."""
        cpu = time.process_time()
        pipe = self.client.pipeline(transaction=False)
        for key, read in zip(self.keys, self.read, strict=True):
            pipe.lrange(key, read, -1)
        for g, appended in enumerate(pipe.execute()):
            for entry in appended:
                self.replay(g, entry)
            self.read[g] += len(appended)
        cpu = self._lap("catch_up", cpu)
        entries: list[bytes] = []
        out = self.run(self.fields(events), labels, entries)
        cpu = self._lap("compute", cpu)
        pipe = self.client.pipeline(transaction=False)
        for key, read, entry in zip(self.keys, self.read, entries, strict=True):
            self.append(keys=[key], args=[read, entry], client=pipe)
        for g, length in enumerate(pipe.execute()):
            if length != self.read[g] + 1:
                raise SystemExit(f"probe: an append was refused ({length})")
            self.read[g] = length
        self._lap("append", cpu)
        return out

    def _lap(self, step: str, since: float) -> float:
        now = time.process_time()
        self.cpu[step] += now - since
        return now


def main() -> None:
    parser = argparse.ArgumentParser()
    workload_arguments(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    definition, width, batches, result = setup(args)
    engine = WindowEngine(definition, dtype=np.float64)
    want = np.vstack([engine.apply(*batch)[:, :width] for batch in batches])
    probe = compiled_probe()
    with EmbeddedRedis() as server, steady_state_gc():
        client = redis.Redis.from_url(server.url)
        copies = [Copy(definition, probe, client) for _ in range(args.workers)]
        before = redis_cpu(client)
        got = np.vstack([copies[k % args.workers].step(*batch)
                         for k, batch in enumerate(batches)])
        server_cpu = redis_cpu(client) - before
        log_bytes = sum(int(client.memory_usage(key, samples=0) or 0)
                        for key in copies[0].keys)
    if not np.array_equal(got, want, equal_nan=True):
        raise SystemExit("probe: the copies' features differ from the engine's")
    per_event = {step: round(sum(c.cpu[step] for c in copies) / args.events * 1e6, 2)
                 for step in STEPS}
    result |= {
        "workers": args.workers,
        "worker_cpu_us_per_event": per_event,
        "worker_cpu_us_per_event_total": round(sum(per_event.values()), 2),
        "redis_cpu_us_per_event": round(server_cpu / args.events * 1e6, 2),
        "log_bytes_per_event": round(log_bytes / args.events),
        "bit_identical": True}
    report(result, args.json)


if __name__ == "__main__":
    main()
