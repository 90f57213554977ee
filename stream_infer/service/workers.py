"""``stream-infer run --workers N``: N service processes in one consumer group, supervised.

Python runs one batch at a time per process and waits on Redis and fetches between batches,
so one process uses less than a core: two per core fill the waits. N workers join the same
group and Kafka spreads the partitions over them (scaling the Kafka way, on
one machine); each gets ``cores / N`` XGBoost threads and its own endpoints on
``http_port + i`` (i = 1..N). The supervisor answers ``/healthz`` and ``/readyz`` for the
unit on ``http_port`` (:class:`UnitHealth`): 200 only if every worker's does, so one probe
sees a worker whose group stopped assigning. Signals are forwarded: SIGTERM/SIGINT stop every
worker cleanly, SIGHUP reloads their models. If a worker dies, the others are stopped and
the supervisor exits with the worker's code, so the orchestrator restarts the whole unit.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIServer

from ..adapters.probe import get
from ..config import Settings
from .metrics import serve_in_thread

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_TEXT = ("Content-Type", "text/plain; charset=utf-8")


def worker_env(settings: Settings, index: int, workers: int) -> dict[str, str]:
    """The environment overrides of worker ``index``: its metrics port and thread count."""
    env = {"STREAM_INFER_MODEL__NTHREAD": str(
        settings.model.nthread or max(1, (os.cpu_count() or 1) // workers))}
    port = settings.observability.http_port
    if port:
        env["STREAM_INFER_OBSERVABILITY__HTTP_PORT"] = str(port + 1 + index)
    return env


def worker_urls(settings: Settings, workers: int) -> list[str]:
    """Where the supervisor asks its workers, on this machine; none without ``http_port``."""
    cfg = settings.observability
    if not cfg.http_port:
        return []
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(
        cfg.http_host, f"[{cfg.http_host}]" if ":" in cfg.http_host else cfg.http_host)
    return [f"http://{host}:{cfg.http_port + 1 + i}" for i in range(workers)]


class UnitHealth:
    """``/healthz`` and ``/readyz`` of the unit, a WSGI app: 200 only if every worker answers
    200 on the same path (each asked in turn, ``timeout_s`` each). The body gives each
    worker's verdict and, indented, its own body."""

    def __init__(self, worker_urls: Sequence[str], timeout_s: float = 1.0) -> None:
        self.worker_urls = list(worker_urls)
        self.timeout_s = timeout_s

    def check(self, path: str) -> tuple[bool, str]:
        ok, lines = True, []
        for i, url in enumerate(self.worker_urls, 1):
            status, body = get(url + path, self.timeout_s)
            ok = ok and status == 200
            verdict = "ok" if status == 200 else f"FAIL {status or 'no answer'}"
            lines += [f"worker {i} {url}: {verdict}", *("  " + x for x in body.splitlines())]
        return ok, "\n".join(lines)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            start_response("404 Not Found", [_TEXT])
            return [b"not found\n"]
        ok, body = self.check(path)
        start_response("200 OK" if ok else "503 Service Unavailable", [_TEXT])
        return [(body + "\n").encode()]


def serve_unit_health(host: str, port: int, worker_urls: Sequence[str]) -> WSGIServer:
    """Serve :class:`UnitHealth` on ``host:port`` (``port=0`` picks one) by
    :func:`~stream_infer.service.metrics.serve_in_thread`: a slow ``/readyz`` never holds up
    ``/healthz``."""
    return serve_in_thread(UnitHealth(worker_urls), host, port, "the unit's health",
                           "observability.http_port")


def _unit_health(settings: Settings, workers: int) -> WSGIServer | None:
    cfg, urls = settings.observability, worker_urls(settings, workers)
    if not cfg.http_port:
        return None
    server = serve_unit_health(cfg.http_host, cfg.http_port, urls)
    log.info("unit health on http://%s:%d/healthz, /readyz (every worker's); workers' "
             "metrics and health on ports %d-%d", cfg.http_host, cfg.http_port,
             cfg.http_port + 1, cfg.http_port + workers)
    return server


def run_workers(settings: Settings, config: Path | None, workers: int,
                log_level: str = "INFO") -> int:
    """Start ``workers`` ``stream-infer run`` processes and supervise them until they end."""
    base = [sys.executable, "-m", "stream_infer", "--log-level", log_level, "run"]
    if config is not None:
        base += ["--config", str(config)]
    unit = _unit_health(settings, workers)
    children = [subprocess.Popen(base, env={**os.environ, **worker_env(settings, i, workers)},
                                 preexec_fn=_stop_with_parent)
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
        if unit is not None:
            unit.shutdown()
            unit.server_close()


def _stop_with_parent() -> None:
    """In a worker, before it runs: SIGTERM it when the supervisor dies, however it dies
    (Linux; elsewhere a killed supervisor leaves its workers to the orchestrator)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


