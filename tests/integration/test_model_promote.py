"""``stream-infer model promote`` against a running service: it swaps to the promoted version
at a batch boundary, without a restart, and a refused promotion changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from stream_infer.registry import CHAMPION, read_manifest, write_model
from tests.support.configs import MODELS, service_config, write_config
from tests.support.population import load_population
from tests.support.service import Service, cli
from tests.support.topics import read_all, wait_for_records
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def copy_demo(root: Path, version: str, threshold: float) -> Path:
    """The shipped demo model as ``demo`` ``version`` under ``root``, with its own threshold."""
    source = MODELS / "demo" / "1"
    manifest = read_manifest(source)
    return write_model(root, "demo", version, (source / manifest.model_file).read_bytes(),
                       features=manifest.features, threshold=threshold)


def test_a_running_service_swaps_to_the_promoted_version_without_a_restart(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    models = tmp_path / "models"
    copy_demo(models, "1", threshold=0.01)
    copy_demo(models, "2", threshold=0.02)
    config = write_config(tmp_path / "config.toml", service_config(
        run_id, broker.bootstrap_servers, redis_server.url,
        model={"dir": str(models), "reload_poll_s": 0.3}))
    load_population(redis_server.url, tmp_path)
    cli("model", "promote", "demo:1", "--config", str(config))  # 2 is published, 1 serves

    def feed(count: int, seed: int) -> None:
        cli("simulate", "--config", str(config), "--count", str(count), "--cards", "300",
            "--merchants", "40", "--seed", str(seed))

    def champion_version() -> set[str]:
        return {s.labels["version"] for s in service.metrics().series(
            "stream_infer_model_info", name="demo", role="champion")}

    with Service(config, "service") as service:
        feed(400, seed=1)
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=400)
        pid = service.pid
        assert champion_version() == {"1"}

        promoted = cli("model", "promote", "demo:2", "--config", str(config))
        assert "serves it as champion from its next reload" in promoted.stdout
        wait_until(lambda: champion_version() == {"2"}, 30, "the service to serve version 2",
                   poll_s=0.1)

        broken = copy_demo(tmp_path / "staging", "3", threshold=0.5)
        (broken / "model.json").write_bytes(b'{"learner": "tampered"}')
        broken.rename(models / "demo" / "3")
        refused = cli("model", "promote", "demo:3", "--config", str(config), check=False)
        assert refused.returncode == 2, refused.stdout
        assert "demo:3 not promoted, the champion pointer is unchanged" in refused.stderr
        assert (models / "demo" / CHAMPION).read_text() == "2\n"

        feed(400, seed=2)
        wait_for_records(broker.bootstrap_servers, f"scores-{run_id}", at_least=800)
        time.sleep(1.0)  # several reload polls: none may pick up version 3
        metrics = service.metrics()
        assert service.running() and service.pid == pid, "the service restarted"
        assert service.stop() == 0, service.log_tail()

    alerts = [json.loads(r.value) for r in read_all(broker.bootstrap_servers,
                                                    f"alerts-{run_id}")]
    versions: dict[str, set[tuple[str, float]]] = defaultdict(set)
    for alert in alerts:
        versions[alert["event_id"].split("-")[1]].add((alert["model_version"],
                                                       alert["threshold"]))
    assert versions == {"1": {("1", 0.01)}, "2": {("2", 0.02)}}, versions
    assert metrics.value("stream_infer_model_reloads_total", result="ok") == 1
    assert metrics.value("stream_infer_model_reloads_total", result="refused") == 0
    assert metrics.value("stream_infer_model_info", name="demo", role="champion",
                         version="2") == 1
    assert "model reload: now serving demo 2" in service.log()
