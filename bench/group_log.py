"""What one ordered log per window group, shared by every worker, would cost: a probe.

docs/BENCHMARKS.md ("How far from the target") lists a design for issue 23's ratio that
needs neither a repartition hop nor Redis calls per entity: every worker keeps a compiled
copy of each group's state, and a log per group in Redis orders the batches of all the
workers, in the arrival order the semantics are defined on. Two logs are simulated:

- **results**: each batch appends its labels and its rows with the features it served, in
  one call refused if another worker appended since this worker read; the other copies
  keep those rows without computing them. A refusal would leave the copy to undo its batch
  and compute it again; here the copies take their turns one after the other, so none is
  refused, and that cost is not in the figures.
- **inputs**: each batch appends its labels and events, unconditionally, and every copy
  computes every entry of the log in its order. No append is ever refused, a copy needs
  nothing undone, and the engine's own duplicate rule makes a batch appended twice (a
  worker that died before committing its offsets) serve the same features again.

One process runs ``--workers`` copies of the state on a real ``redis-server``, taking the
batches in turn, as partitions spread over workers. Per batch a copy:

- results: reads the entries the others appended (one ``LRANGE`` per group, pipelined) and
  keeps them (``bench/arena_probe.c``'s ``replay``, no window computed: *catch up*);
  computes its batch, which also writes its entries (``apply``: *compute*); appends them
  (one script call per group, pipelined: *append*);
- inputs: writes its entries and appends them, reading in the same round trip what the
  log holds before them (``RPUSH`` and ``LRANGE`` per group, pipelined: *append*);
  computes the others' entries (*catch up*), then its own (*compute*).

Every feature of both passes is checked against :class:`WindowEngine` over the same
arrivals, bit for bit, or the probe exits non-zero; the engine's CPU per event, one copy
in memory, is the run's baseline. It reports per pass and event: the workers' CPU in those
three steps; Redis's CPU; the log's bytes; the bytes a copy allocates per row it keeps.
The limits are ``bench/arena.py``'s probe's, and nothing trims the logs. The features
served travel with the rows of results, for duplicates to find; this stream has none, so
the check does not reach them.

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
from arena import CompiledWindows, compiled_probe, setup, stamped
from windows import Batch, redis_cpu, report, workload_arguments

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
LOGS = ("results", "inputs")
STEPS = ("catch_up", "compute", "append")


class Copy(CompiledWindows):
    """One worker's copy of every group's state, and how far it has read each group's log
    (``read``), which holds entries of ``log``."""

    def __init__(self, definition: Definition, probe: Any, client: Any, log: str) -> None:
        super().__init__(definition, probe)
        self.keys = [f"probe:{log}:{w.name}" for w in self.windows]
        self.read = [0] * len(self.windows)
        self.client = client
        self.step = self._results if log == "results" else self._inputs
        self.append = client.register_script(APPEND)
        self.cpu = dict.fromkeys(STEPS, 0.0)

    def _results(self, events: Sequence[Transaction], labels: Sequence[Label]) -> Floats:
        """Catch up, compute the batch, append its results; its window features."""
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

    def _inputs(self, events: Sequence[Transaction], labels: Sequence[Label]) -> Floats:
        """Append the batch's inputs, compute the log up to them; its window features."""
        cpu = time.process_time()
        times, ids, groups = self.fields(events)
        label_ids, stamps = stamped(labels)
        pipe = self.client.pipeline(transaction=False)
        for group, key, read, (keys, values) in zip(self.groups, self.keys, self.read,
                                                    groups, strict=True):
            pipe.rpush(key, group.inputs(label_ids, stamps, keys, times, ids, values))
            pipe.lrange(key, read, -1)
        replies = pipe.execute()
        cpu = self._lap("append", cpu)
        parts = []
        for g, (window, length, log) in enumerate(zip(self.windows, replies[0::2],
                                                       replies[1::2], strict=True)):
            own = length - 1 - self.read[g]  # the entries after it wait for the next batch
            for entry in log[:own]:
                self.replay(g, entry)
            cpu = self._lap("catch_up", cpu)
            parts.append(np.empty((len(ids), len(window.names))))
            self.replay(g, log[own], parts[-1])
            self.read[g] = length
            cpu = self._lap("compute", cpu)
        return np.hstack(parts)

    def _lap(self, step: str, since: float) -> float:
        now = time.process_time()
        self.cpu[step] += now - since
        return now


def simulate(client: Any, definition: Definition, probe: Any, log: str, workers: int,
             batches: Sequence[Batch], want: Floats) -> dict[str, Any]:
    """One pass of ``log`` on an empty Redis, every feature checked against ``want``."""
    client.flushall()
    copies = [Copy(definition, probe, client, log) for _ in range(workers)]
    before = redis_cpu(client)
    got = np.vstack([copies[k % workers].step(*batch) for k, batch in enumerate(batches)])
    server_cpu = redis_cpu(client) - before
    if not np.array_equal(got, want, equal_nan=True):
        raise SystemExit(f"probe: the copies' features differ from the engine's ({log})")
    events = len(want)
    per_event = {step: round(sum(c.cpu[step] for c in copies) / events * 1e6, 2)
                 for step in STEPS}
    return {"worker_cpu_us_per_event": per_event,
            "worker_cpu_us_per_event_total": round(sum(per_event.values()), 2),
            "redis_cpu_us_per_event": round(server_cpu / events * 1e6, 2),
            "log_bytes_per_event": round(sum(int(client.memory_usage(key, samples=0) or 0)
                                             for key in copies[0].keys) / events),
            "copy_bytes_per_kept_row": {w.name: round(g.nbytes / g.slots[1])
                                        for w, g in zip(copies[0].windows, copies[0].groups,
                                                        strict=True)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    workload_arguments(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    definition, width, batches, result = setup(args)
    probe = compiled_probe()
    with EmbeddedRedis() as server, steady_state_gc():
        engine = WindowEngine(definition, dtype=np.float64)
        cpu = time.process_time()
        want = np.vstack([engine.apply(*batch)[:, :width] for batch in batches])
        result["engine_cpu_us_per_event"] = round((time.process_time() - cpu)
                                                  / args.events * 1e6, 2)
        client = redis.Redis.from_url(server.url)
        logs = {log: simulate(client, definition, probe, log, args.workers, batches, want)
                for log in LOGS}
    result |= {"workers": args.workers, "logs": logs, "bit_identical": True}
    report(result, args.json)


if __name__ == "__main__":
    main()
