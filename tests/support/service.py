"""The service as users run it: ``python -m stream_infer ...`` in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from stream_infer.service.ports import server_ports

from .metrics import Samples, get, scrape


def cli(*args: str, env: Mapping[str, str] | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m stream_infer <args>`` run to its end; with ``check``, it must exit 0."""
    result = subprocess.run([sys.executable, "-m", "stream_infer", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


class Service:
    """``python -m stream_infer run --config <config> <args>`` in a subprocess.

    Its stdout and stderr go to ``<config's directory>/<name>-<suffix>.log``; its metrics and
    health endpoints listen on :attr:`port`, a free port of its own (with ``--workers N``, the
    supervisor's health endpoints do, and worker ``i`` = 1..N listens on ``port + i``); its
    peak RSS is sampled from ``/proc``. ``command`` replaces
    everything after the interpreter (``-m faust ...``, ``-m stream_infer simulate ...``).
    As a context manager, it is SIGKILLed on exit if still running, and a failure inside
    the block is reported with the end of its log.
    """

    def __init__(self, config: Path, name: str, *args: str,
                 env: Mapping[str, str] | None = None, command: Sequence[str] | None = None,
                 cwd: Path | None = None) -> None:
        self.config, self.name, self.cwd = config, name, cwd
        self.command = list(command or ["-m", "stream_infer", "run", "--config", str(config),
                                        *args])
        self.port = server_ports(4)  # the unit's, and up to 3 workers' (port + i)
        self.env = {"STREAM_INFER_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
                    "STREAM_INFER_OBSERVABILITY__HTTP_PORT": str(self.port), **(env or {})}
        self.log_path = config.parent / f"{name}-{uuid.uuid4().hex[:4]}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib = 0

    def start(self) -> Service:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.command], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, **self.env}, cwd=self.cwd)
        threading.Thread(target=self._sample_memory, args=(self.process,), daemon=True).start()
        return self

    def __enter__(self) -> Service:
        return self if self.process is not None else self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Kill the process; a failure inside the block gets the end of its log as a note
        (pytest prints it with the failure)."""
        self.kill()
        if isinstance(error, Exception):
            error.add_note(f"{self.name}'s log ({self.log_path}) ends:\n{self.log_tail(30)}")

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (after a SIGCONT, should it be stopped) if still running, then
        :meth:`wait`."""
        if self.running():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL (after a SIGCONT) if still running, and reap it."""
        if self.running():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.wait(10)

    def wait(self, timeout_s: float) -> int:
        """The exit code; fails the test (after a SIGKILL) if the process outlives
        ``timeout_s``."""
        assert self.process is not None, f"{self.name} was never started"
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"{self.name} did not exit: {self.log_tail()}") from None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def metrics(self, worker: int = 0) -> Samples:
        """``/metrics`` of this service, or of a supervisor's worker ``worker`` (1..N)."""
        return scrape(self.port + worker)

    def get(self, path: str) -> tuple[int, str]:
        return get(self.port, path)

    def up(self) -> bool:
        """True once the health endpoint answers at all (ready or not)."""
        try:
            return self.get("/healthz")[0] in (200, 503)
        except OSError:
            return False

    def assignment(self) -> set[str]:
        """Partitions owned now, from the ``assigned``/``revoked``/``lost`` log lines."""
        owned: set[str] = set()
        for verb, names in _ASSIGN.findall(self.log()):
            parts = set() if names == "nothing" else set(names.split(", "))
            if verb == "assigned":
                owned |= parts
            else:
                owned -= parts
        return owned

    def revoked(self) -> set[str]:
        """Partitions this process gave up (revoked or lost) at some point, from its log."""
        return {name for verb, names in _ASSIGN.findall(self.log()) if verb != "assigned"
                and names != "nothing" for name in names.split(", ")}

    @property
    def peak_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def _sample_memory(self, process: subprocess.Popen[bytes]) -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                match = re.search(r"VmHWM:\s+(\d+)", status.read_text())
            except OSError:
                break
            if match:
                self.peak_rss_kib = max(self.peak_rss_kib, int(match.group(1)))
            time.sleep(0.1)


_ASSIGN = re.compile(r"stream_infer\.adapters\.kafka: (assigned|revoked|assignment lost)"
                     r"(?: \(nothing committed for it\))?:? (.*)$", re.M)
