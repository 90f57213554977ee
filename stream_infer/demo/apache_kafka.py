"""A real Apache Kafka broker (KRaft, one node acting as broker and controller) for tests and demos.

The broker's jars come from Maven Central, fetched once by :func:`fetch` (``mvn
dependency:copy-dependencies``) into
``${STREAM_INFER_CACHE:-~/.cache/stream-infer}/kafka-<version>/lib``; later runs reuse them
without calling Maven. :meth:`ApacheKafka.start` fetches if needed; importing this module
never does. Each start writes a ``server.properties`` and a log4j2 file
in a temporary directory, formats the storage there (``kafka.tools.StorageTool format``) and
runs ``kafka.Kafka`` on a small heap, with its output in ``kafka.log`` beside them. The process
lifecycle (own session, readiness wait, log tail in errors, SIGTERM then SIGKILL, ``atexit``
guard) is the one of :class:`~stream_infer.demo.embedded.EmbeddedBroker`.

``python -m stream_infer.demo.apache_kafka fetch`` downloads the jars and prints where;
``... run [--port N]`` starts a broker and prints its bootstrap servers until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from ..errors import BrokerError, ConfigError
from ..service.ports import bindable, free_port
from .embedded import _Service

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.25.5"
"""The log4j2 of ``kafka_2.13`` 4.4.0; its slf4j 1.7 binding is added so the broker logs."""
JAVA_MIN = 17
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:CICompilerCount=2",
               "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")
"""A small heap and the serial collector: one broker on a 2-core machine beside the service."""
_TOOL_OPTIONS = ("-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
"""For the one-second storage formatter: start fast, never mind peak speed."""
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_FETCH_TIMEOUT_S = 600.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stream-infer</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.config.name=org.apache.kafka.common.config.AbstractConfig
logger.config.level=WARN
"""
"""INFO to stdout (the log file), without the thousand-line dumps of every config."""


def cache_root() -> Path:
    """``$STREAM_INFER_CACHE``, else ``~/.cache/stream-infer``."""
    return Path(os.environ.get("STREAM_INFER_CACHE") or "~/.cache/stream-infer").expanduser()


def kafka_home(root: Path | None = None) -> Path:
    """Where the jars of :data:`KAFKA_VERSION` live once fetched (``<home>/lib``)."""
    return (root or cache_root()) / f"kafka-{KAFKA_VERSION}"


def _fetched(home: Path) -> bool:
    """True when ``home`` holds a complete set of jars."""
    return (home / "lib.complete").is_file() and (home / "lib" / f"kafka_2.13-{KAFKA_VERSION}.jar"
                                                  ).is_file()


def fetch(root: Path | None = None) -> Path:
    """The directory of the broker's jars, resolved with Maven the first time only.

    A lock file serialises concurrent fetches (the second process waits, then reuses the
    first one's jars). Raises :class:`ConfigError` when ``mvn`` is missing or fails, with
    the tail of its output.
    """
    home = kafka_home(root)
    if _fetched(home):
        return home / "lib"
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / "fetch.lock"):
        if not _fetched(home):
            _download(home)
    return home / "lib"


def java_available(root: Path | None = None) -> str | None:
    """Why :class:`ApacheKafka` cannot run here (no Java 17+, or no Maven for missing jars).

    ``None`` when it can. ``root`` is the cache root the jars would be in.
    """
    java = shutil.which("java")
    if java is None:
        return f"no java on PATH (Apache Kafka {KAFKA_VERSION} needs Java {JAVA_MIN} or later)"
    major = _java_major(java)
    if major is None or major < JAVA_MIN:
        return f"{java} is Java {major or '(unknown)'}: Apache Kafka needs {JAVA_MIN} or later"
    if not _fetched(kafka_home(root)) and shutil.which("mvn") is None:
        return f"no mvn on PATH to fetch Apache Kafka's jars into {kafka_home(root)}"
    return None


def server_properties(port: int, controller_port: int, data_dir: Path,
                      overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The KRaft configuration of a single light node; ``overrides`` win."""
    host = "127.0.0.1"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        **(overrides or {}),
    }


class ApacheKafka(_Service):
    """Apache Kafka in KRaft mode on loopback: a context manager like ``EmbeddedBroker``.

    ``port`` is the PLAINTEXT listener (a free one if ``None``); the controller listener
    always takes a free port. ``broker_config`` overrides entries of
    :func:`server_properties`; ``jvm_options`` replaces :data:`JVM_OPTIONS`; ``cache_root``
    replaces :func:`cache_root` for the jars. ``start()`` raises :class:`ConfigError` when
    Java or the jars cannot be had, :class:`BrokerError` (with the log tail) when the broker
    does not answer a metadata request within ``startup_timeout_s``.
    """

    name = "kafka"
    error = BrokerError

    def __init__(self, port: int | None = None, log_path: Path | None = None, *,
                 startup_timeout_s: float = 60.0, broker_config: Mapping[str, str] | None = None,
                 jvm_options: Sequence[str] = JVM_OPTIONS, cache_root: Path | None = None) -> None:
        super().__init__(port, log_path, startup_timeout_s=startup_timeout_s)
        self.controller_port: int | None = None
        self.broker_config = dict(broker_config or {})
        self.jvm_options = list(jvm_options)
        self._cache_root = cache_root
        self._lib: Path | None = None
        self._probe: tuple[int, Callable[[], bool]] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        """Fetch the jars if not cached yet, then start and wait (see ``_Service.start``)."""
        if self.process is None:
            reason = java_available(self._cache_root)
            if reason:
                raise ConfigError(reason)
            self._lib = fetch(self._cache_root)
        return super().start()

    def command(self, workdir: Path) -> list[str]:
        """Write the configuration, format fresh storage, and return the broker's command.

        A given port already in use fails here: otherwise whoever listens there would answer
        the readiness probe in place of this broker.
        """
        if self._port_given and not bindable(self.port):
            raise BrokerError(f"{self.bootstrap_servers} is already in use: give another port, "
                              "or none for a free one")
        self.controller_port = _other_free_port(self.port)
        data = workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        properties = workdir / "server.properties"
        config = server_properties(self.port, self.controller_port, data, self.broker_config)
        properties.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        (workdir / "log4j2.properties").write_text(_LOG4J2)
        self._run_java(workdir, ["kafka.tools.StorageTool", "format", "--config", str(properties),
                                 "--cluster-id", _cluster_id()])
        return self._java(workdir, self.jvm_options, ["kafka.Kafka", str(properties)])

    def ready(self) -> bool:
        """True once the broker answers a metadata request."""
        from ..adapters.kafka import broker_reachable

        if self._probe is None or self._probe[0] != self.port:
            check = broker_reachable({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
            self._probe = (self.port, check)
        answered = self._probe[1]()
        if answered:
            self._probe = None
        return answered

    def _java(self, workdir: Path, options: Sequence[str], main: list[str]) -> list[str]:
        if self._lib is None:
            raise ConfigError("ApacheKafka.command() before start(): the jars are not resolved")
        java = shutil.which("java") or "java"
        return [java, *options, f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
                "-cp", str(self._lib / "*"), *main]

    def _run_java(self, workdir: Path, main: list[str]) -> None:
        command = self._java(workdir, _TOOL_OPTIONS, main)
        try:
            done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                  timeout=120, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"{main[0]} did not run: {exc}") from exc
        if done.returncode != 0:
            raise BrokerError(f"{main[0]} failed ({done.returncode}): "
                              f"{_tail(done.stdout + done.stderr)}")


def _download(home: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError(f"no mvn on PATH to fetch Apache Kafka {KAFKA_VERSION} into {home}")
    (home / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    partial = home / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log.info("fetching Apache Kafka %s with Maven into %s", KAFKA_VERSION, home)
    try:
        done = subprocess.run(
            [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(home / "pom.xml"),
             f"{_DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={partial}",
             "-DincludeScope=runtime"],
            capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot fetch Apache Kafka {KAFKA_VERSION} with Maven: {exc}") from exc
    if done.returncode != 0:
        raise ConfigError(f"mvn could not fetch Apache Kafka {KAFKA_VERSION} "
                          f"({done.returncode}): {_tail(done.stdout + done.stderr)}")
    shutil.rmtree(home / "lib", ignore_errors=True)
    partial.rename(home / "lib")
    (home / "lib.complete").write_text(f"kafka_2.13 {KAFKA_VERSION}\n")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _java_major(java: str) -> int | None:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def _other_free_port(taken: int) -> int:
    """A free loopback port other than ``taken``."""
    while (port := free_port()) == taken:
        pass
    return port


def _cluster_id() -> str:
    """A random cluster id in Kafka's form: 16 bytes, URL-safe base64 without padding.

    Never one starting with ``-``, which the formatter would read as an option (Kafka's own
    ``Uuid.randomUuid`` avoids those too).
    """
    while (found := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())[0] == "-":
        pass
    return found


def _tail(text: str, lines: int = 10) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"


def main(argv: Sequence[str] | None = None) -> int:
    """``fetch``: download the jars and print their directory; ``run``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m stream_infer.demo.apache_kafka")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download the broker's jars with Maven (once)")
    run = commands.add_parser("run", help="start a broker and wait for Ctrl-C")
    run.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch())
            return 0
        return _serve(args.port)
    except (ConfigError, BrokerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _serve(port: int | None) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    started = time.monotonic()
    with ApacheKafka(port) as kafka:
        print(f"Apache Kafka {KAFKA_VERSION} at {kafka.bootstrap_servers} "
              f"(ready in {time.monotonic() - started:.1f} s; log {kafka.log_path}); Ctrl-C stops",
              flush=True)
        try:
            while kafka.process is not None and kafka.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print(f"error: the broker exited: {kafka.log_tail()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
