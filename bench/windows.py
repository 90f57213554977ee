"""The window stage alone, in process: live windows on a real redis-server against the
in-memory engine and against no window groups, in the same run.

The workload is Handbook-like (issue 23): ``--customers`` customers and ``--terminals``
terminals drawn uniformly, ``--events`` events spread evenly over ``--days`` days in time
order, amounts U(5, 100), a fraud label for ``--fraud`` of the events arriving a day after
them (so the rate windows' label path runs), cut into batches of ``--batch``. The windows are
the issue's: customer count and mean amount over 1, 7 and 30 days; terminal count and fraud
rate over 1, 7 and 30 days with a 7-day delay (12 features, plus the calendar).

Measured, in one process and one run, each pass on fresh state:

- ``live``: :class:`LiveWindows` over :class:`RedisWindowStore` on an embedded
  ``redis-server`` (``EmbeddedRedis``): events/s, the worker's CPU per event
  (``time.process_time``: the read and write calls, redis-py, decoding and encoding the
  entities' logs and the engine on them) and Redis's (``INFO cpu`` deltas), Redis's own
  split of that time (``INFO commandstats``: the commands the scripts ran, microseconds per
  event), the bytes of state read and written per event and the writes refused (another
  worker's write came between: none with one worker);
- ``engine``: :class:`WindowEngine` on the same batches (state in this process);
- ``calendar``: a definition without window groups (the stage's floor: calendar features
  only, no state);
- ``memory``: bytes of state per entity at 30-day retention. A history of ``--memory-days``
  (default 45: longer than the terminal's 30 days + 7 days of delay + 1 h of lateness) at the
  same per-entity rates on a tenth of the population is written through the live path, then
  ``MEMORY USAGE`` of the log of ``--sample`` entities of each group (and the group-wide
  keys, whole); the engine's own ``memory()`` after the same stream beside it.

The timed passes run under the service's garbage collection settings
(:func:`~stream_infer.service.gc_tuning.steady_state_gc`: the heap built before them, the
workload included, frozen; young collections every 100,000 net new objects), as a worker runs
its batches: under CPython's defaults, collections would scan the whole workload again and
again, a cost the service does not pay.

``--profile`` adds a cProfile of the worker's live pass (top functions by own time) and, on
the Redis side, the same pass with parts of the scripts taken out (``ablation``: Redis CPU
per event of each; the features are then wrong, only the time counts): without reading the
logs, without the write's checks, without writing the logs back; ``--ablation-turns``
(default 3) alternating turns of them, each reported as the median and every turn's
figure, so that an edit is told apart only beyond the turns' spread. ``--encodings
TURNS`` adds live passes on the same Redis alternating the logs' encodings (``wide``:
every row float64, as before the served features were stored as float32; ``narrow``: as
the service writes them). ``--json`` prints one JSON object. ``--groups customer`` (or
``terminal``) computes one group only. ``--twice`` follows every event of a batch with an
exact copy of it, as a producer that retried each record would (events/s then counts the
copies too).

    python bench/windows.py --json
    python bench/windows.py --events 100000 --batch 1000 --profile
    python bench/windows.py --memory-days 0 --encodings 3 --json
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import redis

from stream_infer.adapters.redis_windows import READ, WRITE, RedisWindowStore
from stream_infer.config import WindowGroup
from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.features import WindowEngine, define
from stream_infer.features import live as live_module
from stream_infer.features.codec import decode_log, encode_logs
from stream_infer.features.definition import Definition
from stream_infer.features.labels import Label
from stream_infer.features.live import LiveWindows, StoreCall
from stream_infer.features.state import EntityLog, Layout
from stream_infer.records import Transaction
from stream_infer.service.gc_tuning import steady_state_gc

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000
GROUPS = {
    "customer": WindowGroup(key="customer_id", lengths=["1d", "7d", "30d"],
                            aggregates=["count", "mean:amount"]),
    "terminal": WindowGroup(key="terminal_id", lengths=["1d", "7d", "30d"], delay="7d",
                            aggregates=["count", "rate:label"]),
}
Batch = tuple[list[Transaction], list[Label]]
ABLATION_TURNS = 3
"""Alternating turns of the ablations (``--profile``), by default."""


def workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`workload` takes (``bench/arena.py`` shares them)."""
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--fraud", type=float, default=0.02, help="share of events labelled")


def main() -> None:
    parser = argparse.ArgumentParser()
    workload_arguments(parser)
    parser.add_argument("--memory-days", type=float, default=45.0, help="0: no memory pass")
    parser.add_argument("--sample", type=int, default=200, help="entities per group sampled")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=18, help="functions in the profile")
    parser.add_argument("--ablation-turns", type=int, default=ABLATION_TURNS,
                        help="alternating turns of the ablations (with --profile; 0: none)")
    parser.add_argument("--encodings", type=int, default=0, metavar="TURNS",
                        help="also TURNS alternating live passes with the logs' rows all "
                             "float64 and with the served features as float32")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help="the window groups to compute, comma-separated")
    parser.add_argument("--twice", action="store_true",
                        help="every event of a batch followed by an exact copy (a producer "
                             "that retried each record)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    definition = define({name: GROUPS[name] for name in args.groups.split(",")})
    batches = workload(args.events, args.days, args.customers, args.terminals, args.batch,
                       args.fraud, twice=args.twice)
    result: dict[str, Any] = {
        "events": args.events, "days": args.days, "batch": args.batch,
        "customers": args.customers, "terminals": args.terminals,
        "groups": args.groups, "twice": args.twice, "features": len(definition.names),
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
                   f"python {platform.python_version()} {redis_version()}",
        "gc": "steady_state_gc, as the service",
        "load_average_before": round(os.getloadavg()[0], 2)}
    with EmbeddedRedis() as server, steady_state_gc():
        client = redis.Redis.from_url(server.url)
        result["live"] = live_pass(client, definition, batches, profile=args.profile,
                                   top=args.top, ablation_turns=args.ablation_turns)
        if args.encodings:
            result["encodings"] = encodings(client, definition, batches, args.encodings)
        result["engine"] = local_pass(WindowEngine(definition).apply, batches)
        result["calendar"] = local_pass(WindowEngine(define({})).apply, batches)
    live, engine = result["live"]["events_per_s"], result["engine"]["events_per_s"]
    result["live_vs_engine"] = round(live / engine, 4)
    result["live_vs_calendar"] = round(live / result["calendar"]["events_per_s"], 4)
    if args.memory_days > 0:
        result["memory"] = memory(definition, args)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    report(result, args.json)


def workload(events: int, days: float, customers: int, terminals: int, batch: int,
             fraud: float, seed: int = 7, *, twice: bool = False) -> list[Batch]:
    """The events in time order, in batches; each fraud label rides with the first batch
    whose events are a day newer than its event. With ``twice``, each event of a batch is
    followed by an exact copy of it (the batch then holds ``2 * batch`` records)."""
    rng = random.Random(seed)
    span = int(days * DAY_MS)
    times = sorted(START_MS + rng.randrange(span) for _ in range(events))
    stream = [Transaction(event_id=f"e{i}", event_time=t, card_id=f"c{i % 997}",
                          merchant_id="m", amount=round(rng.uniform(5, 100), 2),
                          currency="EUR", customer_id=f"cu{rng.randrange(customers)}",
                          terminal_id=f"te{rng.randrange(terminals)}")
              for i, t in enumerate(times)]
    frauds = sorted((e.event_time_ms + DAY_MS, e.event_id) for e in stream
                    if rng.random() < fraud)
    out: list[Batch] = []
    due = 0
    for i in range(0, events, batch):
        chunk = stream[i:i + batch]
        now = chunk[-1].event_time_ms
        labels = []
        while due < len(frauds) and frauds[due][0] <= now:
            labels.append(Label(frauds[due][1], 1, frauds[due][0]))
            due += 1
        out.append(([e for e in chunk for _ in range(2)] if twice else chunk, labels))
    return out


def count(batches: Sequence[Batch]) -> int:
    return sum(len(events) for events, _ in batches)


def local_pass(apply: Callable[..., Any], batches: Sequence[Batch]) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    for events, labels in batches:
        apply(events, labels)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = count(batches)
    return {"events_per_s": round(n / wall), "worker_cpu_us_per_event": round(cpu / n * 1e6, 1)}


def live_pass(client: Any, definition: Definition, batches: Sequence[Batch], *,
              profile: bool = False, top: int = 18,
              ablation_turns: int = ABLATION_TURNS) -> dict[str, Any]:
    """One pass of the live path on an empty Redis; with ``profile``, a second pass on a
    fresh prefix-free database under cProfile."""
    client.flushall()
    store = CountingStore(client)
    live = LiveWindows(definition, store)
    client.config_resetstat()
    before = redis_cpu(client)
    wall, cpu = time.perf_counter(), time.process_time()
    for events, labels in batches:
        live(events, labels)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server = redis_cpu(client) - before
    n = count(batches)
    out: dict[str, Any] = {
        "events_per_s": round(n / wall),
        "worker_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "redis_cpu_us_per_event": round(server / n * 1e6, 1),
        "redis_commands_us_per_event": commands(client, n),
        "redis_used_memory_mb": round(client.info("memory")["used_memory"] / 1e6, 1),
    }
    out["state_bytes_read_per_event"] = round(store.read_bytes / n)
    out["state_bytes_written_per_event"] = round(store.written_bytes / n)
    out["writes_refused"] = store.refused
    if profile and ablation_turns:
        out["ablation_redis_cpu_us_per_event"] = ablation_figures(client, definition, batches,
                                                                ablation_turns)
    if profile:
        client.flushall()
        live = LiveWindows(definition, RedisWindowStore(client))
        profiler = cProfile.Profile()
        profiler.enable()
        for events, labels in batches:
            live(events, labels)
        profiler.disable()
        out["worker_profile"] = profile_lines(profiler, top)
    return out


class CountingStore(RedisWindowStore):
    """The Redis store, counting the bytes of state its reads send and its writes carry,
    and the writes refused; optionally with other scripts (``scripts``: read, write)."""

    def __init__(self, client: Any, scripts: tuple[str, str] | None = None,
                 read_logs: bool = True) -> None:
        super().__init__(client)
        if scripts is not None:
            self._shas = (client.script_load(scripts[0]), client.script_load(scripts[1]))
        self.read_logs = read_logs
        self.read_bytes = 0
        self.written_bytes = 0
        self.refused = 0

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        if not self.read_logs:
            calls = [dataclasses.replace(call, logs=()) for call in calls]
        replies = super().read(calls)
        self.read_bytes += sum(len(blob) for reply in replies for blob in reply[2])
        return replies

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        landed = super().write(self._counted(calls))
        self.refused += len(landed) - sum(landed)
        return landed

    def _counted(self, calls: Iterable[StoreCall]) -> Iterator[StoreCall]:
        """The calls as they come (each sent before the next is computed), their bytes
        counted."""
        for call in calls:
            self.written_bytes += sum(len(a) for a in [*call.args, *call.blobs]
                                      if isinstance(a, bytes))
            yield call


def encodings(client: Any, definition: Definition, batches: Sequence[Batch],
              turns: int) -> dict[str, list[dict[str, Any]]]:
    """Live passes alternating the logs' encodings: every row float64 (``wide``, as before
    the served features were narrowed) and the served features float32 (``narrow``)."""
    out: dict[str, list[dict[str, Any]]] = {"wide": [], "narrow": []}

    def wide(logs: Sequence[EntityLog], versions: Sequence[int], _: int) -> list[bytes]:
        return encode_logs(logs, versions, 0)

    try:
        for _ in range(turns):
            for name in out:
                setattr(live_module, "encode_logs",  # noqa: B010 (live imported the name)
                        encode_logs if name == "narrow" else wide)
                run = live_pass(client, definition, batches)
                out[name].append({k: run[k] for k in (
                    "events_per_s", "worker_cpu_us_per_event", "redis_cpu_us_per_event",
                    "state_bytes_read_per_event")})
    finally:
        setattr(live_module, "encode_logs", encode_logs)  # noqa: B010
    return out


def ablations() -> dict[str, tuple[str, str, bool]]:
    """The scripts with parts taken out, and whether the batch's logs are read beside the
    read script, by name (each edit must apply)."""
    edits: dict[str, tuple[list[tuple[int, str, str]], bool]] = {
        "no_blobs_read": ([(0, "blobs = call_chunked('MGET', nil, keys)", "blobs = {}"),
                           (1, "return 0", "local _ = 0")], False),
        "no_checks": ([(1, "return 0", "local _ = 0")], True),  # every check passes
        "no_blob_writes": ([(1, "redis.call('SET', key, blob, 'PX', ttl)", "local _ = blob")],
                           True),
    }
    out = {"full": (READ, WRITE, True)}
    for name, (changes, read_logs) in edits.items():
        scripts = [READ, WRITE]
        for which, before, after in changes:
            assert before in scripts[which], before
            scripts[which] = scripts[which].replace(before, after)
        out[name] = (scripts[0], scripts[1], read_logs)
    return out


def ablation_figures(client: Any, definition: Definition, batches: Sequence[Batch],
                     turns: int) -> dict[str, Any]:
    """Redis CPU per event of each ablation, in ``turns`` alternating turns: per name, the
    median and every turn's figure (an edit is told apart from the full scripts only beyond
    the turns' spread)."""
    edited = ablations()
    figures: dict[str, list[float]] = {name: [] for name in edited}
    for _ in range(turns):
        for name, scripts in edited.items():
            figures[name].append(ablated(client, definition, batches, scripts))
    return {name: {"median": round(statistics.median(values), 1), "turns": values}
            for name, values in figures.items()}


def ablated(client: Any, definition: Definition, batches: Sequence[Batch],
            scripts: tuple[str, str, bool]) -> float:
    client.flushall()
    live = LiveWindows(definition, CountingStore(client, scripts[:2], scripts[2]))
    before = redis_cpu(client)
    for events, labels in batches:
        live(events, labels)
    return round((redis_cpu(client) - before) / count(batches) * 1e6, 1)


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def commands(client: Any, events: int) -> dict[str, list[float]]:
    """Redis's time and calls per command (``INFO commandstats``; ``evalsha`` includes the
    commands it ran, which are also listed on their own): [µs, calls] per event, by time."""
    stats = client.info("commandstats")
    per = {name.removeprefix("cmdstat_"): (float(v["usec"]) / events, v["calls"] / events)
           for name, v in stats.items() if name.startswith("cmdstat_")}
    return {k: [round(us, 2), round(calls, 3)]
            for k, (us, calls) in sorted(per.items(), key=lambda kv: -kv[1][0]) if us >= 0.05}


def profile_lines(profiler: cProfile.Profile, top: int) -> list[str]:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    lines = text.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    total = next((line.strip() for line in lines if "function calls" in line), "")
    return [total, *(line.rstrip() for line in lines[start:] if line.strip())]


def memory(definition: Definition, args: argparse.Namespace) -> dict[str, Any]:
    """State bytes per entity after a history longer than every horizon, at the benchmark's
    per-entity rates on a tenth of its population."""
    per_day = args.events / args.days / 10
    events = int(per_day * args.memory_days)
    customers, terminals = max(args.customers // 10, 1), max(args.terminals // 10, 1)
    batches = workload(events, args.memory_days, customers, terminals, args.batch, args.fraud,
                       seed=11)
    engine = WindowEngine(definition)
    for chunk, labels in batches:
        engine.apply(chunk, labels)
    out: dict[str, Any] = {"events": events, "days": args.memory_days,
                           "customers": customers, "terminals": terminals}
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        live = LiveWindows(definition, RedisWindowStore(client))
        for chunk, labels in batches:
            live(chunk, labels)
        for window in definition.windows:
            held = engine.memory()[window.name]
            out[window.name] = {"redis": redis_bytes(client, window.prefix, args.sample,
                                                     Layout(window).width,
                                                     len(window.names)),
                                "engine_bytes_per_entity": round(held.bytes_per_entity),
                                "engine_events_per_entity": round(
                                    held.events / max(held.entities, 1), 1)}
        out["redis_used_memory_mb"] = round(client.info("memory")["used_memory"] / 1e6, 1)
    return out


def redis_bytes(client: Any, prefix: str, sample: int, width: int,
                narrow: int) -> dict[str, Any]:
    """``MEMORY USAGE`` of the logs of ``sample`` entities (one key each), and of the
    group-wide keys; bytes per entity both without and with those."""
    entities = sorted(key.decode() for key in client.scan_iter(f"{prefix}:{{*}}", count=10_000))
    chosen = random.Random(3).sample(entities, min(sample, len(entities)))
    size = events = 0
    for key in chosen:
        size += int(client.memory_usage(key, samples=0) or 0)
        events += len(decode_log(client.get(key), width, narrow)[0])
    shared = {key.decode().removeprefix(prefix + ":"): int(client.memory_usage(key, samples=0))
              for key in client.scan_iter(f"{prefix}:*", count=10_000)
              if b"{" not in key}
    per_entity = size / max(len(chosen), 1)
    return {"entities": len(entities), "sampled": len(chosen),
            "events_per_entity": round(events / max(len(chosen), 1), 1),
            "bytes_per_entity": round(per_entity),
            "group_wide_bytes": shared,
            "bytes_per_entity_with_group_wide": round(
                per_entity + sum(shared.values()) / max(len(entities), 1))}


def redis_version() -> str:
    from stream_infer.demo.embedded import redis_server_binary
    try:
        text = subprocess.run([str(redis_server_binary()), "--version"], capture_output=True,
                              text=True, timeout=10).stdout
    except OSError:
        return "redis ?"
    return "redis " + next((w.removeprefix("v=") for w in text.split() if w.startswith("v=")),
                           "?")


def report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if isinstance(value, dict) and "worker_profile" in value:
            value = {k: v for k, v in value.items() if k != "worker_profile"}
            print(f"{key:>22}  {value}")
            print("\n".join(result[key]["worker_profile"]))
        else:
            print(f"{key:>22}  {value}")


if __name__ == "__main__":
    main()
