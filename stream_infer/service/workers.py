"""``stream-infer run --workers N``: N service processes in one consumer group, supervised.

Python runs one batch at a time per process and waits on Redis and fetches between batches,
so one process uses less than a core: two per core fill the waits. N workers join the same
group and Kafka spreads the partitions over them (scaling the Kafka way, on
one machine); each gets ``cores / N`` XGBoost threads and its own metrics port
(``http_port + i``). Signals are forwarded: SIGTERM/SIGINT stop every worker cleanly,
SIGHUP reloads their models. If a worker dies, the others are stopped and the supervisor
exits with the worker's code, so the orchestrator restarts the whole unit.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from ..config import Settings

log = logging.getLogger(__name__)
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def worker_env(settings: Settings, index: int, workers: int) -> dict[str, str]:
    """The environment overrides of worker ``index``: its metrics port and thread count."""
    env = {"STREAM_INFER_MODEL__NTHREAD": str(
        settings.model.nthread or max(1, (os.cpu_count() or 1) // workers))}
    port = settings.observability.http_port
    if port:
        env["STREAM_INFER_OBSERVABILITY__HTTP_PORT"] = str(port + index)
    return env


def run_workers(settings: Settings, config: Path | None, workers: int,
                log_level: str = "INFO") -> int:
    """Start ``workers`` ``stream-infer run`` processes and supervise them until they end."""
    base = [sys.executable, "-m", "stream_infer", "--log-level", log_level, "run"]
    if config is not None:
        base += ["--config", str(config)]
    children = [subprocess.Popen(base, env={**os.environ, **worker_env(settings, i, workers)})
                for i in range(workers)]
    log.info("started %d workers: pids %s", workers, [c.pid for c in children])

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        return _supervise(children)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    while True:
        codes = [c.poll() for c in children]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            log.error("a worker exited with %d: stopping the others", failed[0])
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                child.wait()
            return failed[0]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.2)
