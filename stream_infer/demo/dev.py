"""``stream-infer dev up``: the embedded broker and Redis on their own, with a config for them.

Starts Tansu (or Apache Kafka) and redis-server on free local ports, writes a TOML config
that the other commands take as it is (the demo's: a consumer group that joins in seconds,
short fetch waits for a broker that holds fetches, the simulator's feature views, the demo
model), prints the addresses, the config's path and the commands to try next, then waits.
Ctrl-C or SIGTERM stops both services and removes their temporary directories; the config
file stays, naming ports that are closed from then on. If either service dies, the other is
stopped and the command exits 1 with the dead one's log tail.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ..config import load_settings
from .embedded import EmbeddedRedis
from .run import BROKER_NAMES, BrokerKind, default_models_dir, demo_sections, start_broker

DEFAULT_CONFIG = Path("stream-infer.dev.toml")
_INLINE = frozenset({"consumer", "producer", "options"})
"""Sections holding client options: written as inline tables with quoted keys."""


def dev_up(*, broker_kind: BrokerKind, config_out: Path, out: TextIO,
           models_dir: Path | None = None, stop: threading.Event | None = None) -> int:
    """Run both services until ``stop`` is set (by SIGINT or SIGTERM when called from the main
    thread); return 0, or 1 if a service died."""
    stop = stop or threading.Event()
    with _stopping_on_signals(stop), ExitStack() as services:
        broker, redis = start_broker(broker_kind), EmbeddedRedis()
        services.enter_context(broker)
        services.enter_context(redis)
        config = write_config(config_out, demo_sections(
            broker.bootstrap_servers, redis.url, (models_dir or default_models_dir()).resolve()))
        print(f"broker  {BROKER_NAMES[broker_kind]} at {broker.bootstrap_servers} "
              f"(log {broker.log_path})", file=out)
        print(f"redis   {redis.url} (log {redis.log_path})", file=out)
        print(f"config  {config}", file=out)
        print(next_steps(config), file=out, flush=True)
        while not stop.wait(0.5):
            dead = next((s for s in (broker, redis) if s.process is None
                         or s.process.poll() is not None), None)
            if dead is not None:
                print(f"stream-infer: error: {dead.name} exited: {dead.log_tail()}", file=out,
                      flush=True)
                return 1
        print("stopping the broker and Redis", file=out, flush=True)
    return 0


def next_steps(config: Path) -> str:
    """What to run against the services, in another terminal (from this directory)."""
    c = _shown(config)
    return "\n".join([
        "next, in another terminal:",
        f"  stream-infer simulate --config {c} --count 20000 --features-out features",
        f"  stream-infer features load features/card_features.csv --view card --config {c}",
        f"  stream-infer features load features/merchant_features.csv --view merchant --config {c}",
        f"  stream-infer run --config {c} --max-events 20000",
        f"  stream-infer replay --config {c} --topic transactions --features redis "
        "--out results.parquet",
        "Ctrl-C here stops the broker and Redis.",
    ])


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """``sections`` as TOML at ``path``, replaced whole (written beside it, then renamed),
    after checking that it loads; returns the absolute path."""
    path = Path(path).resolve()
    text = "# Written by `stream-infer dev up`: the services it runs, on these ports.\n\n"
    text += to_toml(sections)
    part = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    part.write_text(text)
    try:
        load_settings(part)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return path


def to_toml(tables: Mapping[str, Any], prefix: str = "") -> str:
    """Nested dicts of strings, numbers, booleans and lists as TOML tables; client options
    as inline tables."""
    lines: list[str] = []
    subtables: list[str] = []
    for key, value in tables.items():
        if isinstance(value, Mapping) and key not in _INLINE:
            subtables.append(to_toml(value, f"{prefix}.{key}" if prefix else key))
        elif isinstance(value, Mapping):
            inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    head = [f"[{prefix}]"] if prefix and lines else []
    return "\n".join([*head, *lines, *(["", *subtables] if subtables else [])]).strip() + "\n"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when under it; quoted for a shell."""
    path = path.resolve()
    with suppress(ValueError):
        path = path.relative_to(Path.cwd())
    text = str(path)
    return text if all(c.isalnum() or c in "/._-" for c in text) else json.dumps(text)


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM while inside (signals need the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
