"""The supervisor of ``run --workers N``: the workers' ports, and the unit's one probe."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from stream_infer.config import Settings
from stream_infer.errors import ConfigError
from stream_infer.service.ports import free_port
from stream_infer.service.workers import serve_unit_health, worker_env, worker_urls
from tests.support.metrics import get


def settings(**observability: Any) -> Settings:
    return Settings.model_validate({"observability": observability})


def test_the_supervisor_takes_http_port_and_worker_i_the_port_after_it() -> None:
    cfg = settings(http_port=9464)
    assert [worker_env(cfg, i, 2)["STREAM_INFER_OBSERVABILITY__HTTP_PORT"] for i in (0, 1)] \
        == ["9465", "9466"]
    assert worker_urls(cfg, 2) == ["http://127.0.0.1:9465", "http://127.0.0.1:9466"]
    assert worker_urls(settings(http_host="10.0.0.7", http_port=80), 1) == ["http://10.0.0.7:81"]
    assert worker_urls(settings(http_host="::", http_port=80), 1) == ["http://[::1]:81"]


def test_without_http_port_there_are_no_endpoints_to_ask() -> None:
    cfg = settings(http_port=None)
    assert worker_urls(cfg, 2) == []
    assert "STREAM_INFER_OBSERVABILITY__HTTP_PORT" not in worker_env(cfg, 0, 2)


class FakeWorker:
    """A worker's endpoints: ``answers[path]`` is the status and body it gives."""

    def __init__(self) -> None:
        self.answers = {"/readyz": ("200 OK", "partitions: ok 2 assigned"),
                        "/healthz": ("200 OK", "loop turned 0.1s ago")}
        self.server: WSGIServer = make_server("127.0.0.1", 0, self, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, body = self.answers[environ["PATH_INFO"]]
        start_response(status, [("Content-Type", "text/plain")])
        return [body.encode() + b"\n"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def workers() -> Iterator[list[FakeWorker]]:
    fakes = [FakeWorker(), FakeWorker()]
    yield fakes
    for fake in fakes:
        fake.stop()


@pytest.fixture
def unit(workers: list[FakeWorker]) -> Iterator[int]:
    server = serve_unit_health("127.0.0.1", 0, [w.url for w in workers])
    yield int(server.server_port)
    server.shutdown()
    server.server_close()


def test_the_unit_is_ready_when_every_worker_is(workers: list[FakeWorker], unit: int) -> None:
    status, body = get(unit, "/readyz")
    assert status == 200
    assert body.splitlines() == [f"worker 1 {workers[0].url}: ok", "  partitions: ok 2 assigned",
                                 f"worker 2 {workers[1].url}: ok", "  partitions: ok 2 assigned"]
    assert get(unit, "/healthz")[0] == 200


def test_one_worker_waiting_on_a_stuck_group_makes_the_unit_unready(
    workers: list[FakeWorker], unit: int
) -> None:
    stuck = ("partitions: FAIL 0 assigned; no assignment from group 'fraud' for 140s "
             "(over 3 session timeouts)")
    workers[1].answers["/readyz"] = ("503 Service Unavailable", stuck)
    status, body = get(unit, "/readyz")
    assert status == 503
    assert f"worker 2 {workers[1].url}: FAIL 503\n  {stuck}" in body
    assert get(unit, "/healthz")[0] == 200  # alive: readiness is the one that fails


def test_a_worker_that_does_not_answer_fails_both_probes(
    workers: list[FakeWorker], unit: int
) -> None:
    workers[0].stop()
    for path in ("/readyz", "/healthz"):
        status, body = get(unit, path)
        assert status == 503 and f"worker 1 {workers[0].url}: FAIL no answer" in body
    assert get(unit, "/metrics")[0] == 404  # metrics stay the workers'


def test_a_taken_port_is_a_clear_error() -> None:
    port = free_port()
    first = serve_unit_health("127.0.0.1", port, [])
    try:
        with pytest.raises(ConfigError, match=r"observability\.http_port"):
            serve_unit_health("127.0.0.1", port, [])
    finally:
        first.shutdown()
        first.server_close()


def test_a_worker_stops_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from stream_infer.service.workers import _stop_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                         preexec_fn=_stop_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n")])
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    parent.kill()  # SIGKILL: the supervisor gets no chance to stop anything
    parent.wait()
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the worker outlived its killed supervisor"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
