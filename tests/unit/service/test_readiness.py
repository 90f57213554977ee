"""``/readyz``'s partitions check: partitions held, and the group not stuck."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from stream_infer.adapters import kafka
from stream_infer.config import Settings
from stream_infer.service.app import Probes, health_endpoints
from stream_infer.service.metrics import ServiceMetrics


def readyz(probes: Probes, assigned: set[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
           ) -> tuple[str, str]:
    monkeypatch.setattr(kafka, "broker_reachable", lambda config: lambda: True)
    model = SimpleNamespace(name="demo", version="1")
    runner: Any = SimpleNamespace(source=SimpleNamespace(assigned=assigned),
                                  pipeline=SimpleNamespace(model=model))
    app = health_endpoints(Settings(), runner, ServiceMetrics(), probes, None)
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": "/readyz"}, lambda s, h: status.append(s)))
    return status[0], body.decode()


def probes(stalled: str | None) -> Probes:
    return Probes(lambda: {}, lambda: 0, lambda: True, lambda: stalled)


def test_a_member_holding_partitions_in_a_healthy_group_is_ready(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    status, body = readyz(probes(None), {("t", 0), ("t", 1)}, monkeypatch)
    assert status.startswith("200") and "partitions: ok 2 assigned" in body


def test_a_stuck_group_fails_readiness_naming_the_group_and_the_wait(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = "no assignment from group 'fraud' for 140s (over 3 session timeouts)"
    for held in (set(), {("t", 0)}):  # keeping partitions does not make it ready
        status, body = readyz(probes(stuck), held, monkeypatch)
        assert status.startswith("503")
        assert f"partitions: FAIL {len(held)} assigned; {stuck}" in body


def test_an_engine_without_the_watch_reads_partitions_alone(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    faust_like = Probes(lambda: {}, lambda: 0, lambda: True)
    assert faust_like.stalled() is None
    assert readyz(faust_like, set(), monkeypatch)[1].startswith("partitions: FAIL 0 assigned\n")
