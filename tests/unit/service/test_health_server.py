"""The health endpoints answer each request on its own thread: a readiness check that
hangs on a dependency never holds up the liveness probe or a scrape."""

from __future__ import annotations

import threading
import time

from stream_infer.service.metrics import Endpoints, ServiceMetrics
from tests.support.metrics import get

SLOW_S = 2.0


def test_healthz_and_metrics_answer_while_a_slow_readiness_check_runs() -> None:
    checking = threading.Event()

    def slow_check() -> tuple[bool, str]:
        checking.set()
        time.sleep(SLOW_S)
        return True, "took its time"

    endpoints = Endpoints(ServiceMetrics(), {"broker": slow_check})
    port = endpoints.start("127.0.0.1", 0)
    ready: list[tuple[int, str]] = []
    probe = threading.Thread(target=lambda: ready.append(get(port, "/readyz")))
    try:
        probe.start()
        assert checking.wait(5), "the readiness check never started"
        started = time.monotonic()
        health = get(port, "/healthz", timeout_s=SLOW_S * 2)
        scrape = get(port, "/metrics", timeout_s=SLOW_S * 2)
        took = time.monotonic() - started
        assert health[0] == 200 and scrape[0] == 200
        assert took < SLOW_S / 4, f"/healthz and /metrics took {took:.2f}s behind /readyz"
        probe.join(SLOW_S * 3)
        assert ready == [(200, "broker: ok took its time\n")]
    finally:
        endpoints.stop()
        probe.join(SLOW_S * 3)
