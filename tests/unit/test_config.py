from pathlib import Path

import pytest

from stream_infer.config import load_settings
from stream_infer.errors import ConfigError

TOML = """
[kafka]
bootstrap_servers = "broker:9092"
input_topics = ["payments"]
producer = { "sasl.password" = "hunter2", "linger.ms" = 20 }

[redis]
url = "redis://user:s3cret@redis:6379/0"
on_error = "pause"

[features.card]
key = "card:{card_id}"
fields = ["avg_amount_30d"]
"""


def write(tmp_path: Path, text: str = TOML) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_file_values_reach_the_client_dicts(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path))
    consumer = s.kafka.consumer_config()
    assert consumer["bootstrap.servers"] == "broker:9092"
    assert consumer["enable.auto.offset.store"] is False
    assert consumer["partition.assignment.strategy"] == "cooperative-sticky"
    producer = s.kafka.producer_config()
    assert producer["enable.idempotence"] is True and producer["linger.ms"] == 20
    assert s.redis.on_error == "pause" and s.features["card"].fields == ["avg_amount_30d"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS", "other:1")
    monkeypatch.setenv("STREAM_INFER_BATCH__MAX_RECORDS", "64")
    s = load_settings(write(tmp_path))
    assert s.kafka.bootstrap_servers == "other:1" and s.kafka.input_topics == ["payments"]
    assert s.batch.max_records == 64


def test_secrets_never_appear_in_the_dump(tmp_path: Path) -> None:
    text = str(load_settings(write(tmp_path)).redacted())
    assert "hunter2" not in text and "s3cret" not in text
    assert "broker:9092" in text


def test_every_invalid_value_is_reported_with_its_path(tmp_path: Path) -> None:
    bad = TOML.replace('on_error = "pause"', 'on_error = "maybe"') + "[batch]\nmax_records = 0\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, bad))
    message = str(info.value)
    assert "redis.on_error" in message and "batch.max_records" in message


def test_unknown_settings_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server"):
        load_settings(write(tmp_path, "[kafka]\nbootstrap_server = 'x'\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[kafka"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="key template"):
        load_settings(features={"card": {"key": "card:{pan}", "fields": ["a"]}})


def test_a_window_wait_shorter_than_the_lease_is_refused_naming_both() -> None:
    defaults = load_settings().redis
    assert (defaults.windows_lease_ms, defaults.windows_wait_ms) == (5_000, 60_000)
    assert defaults.windows_lease_shards == 4
    with pytest.raises(ConfigError, match=r"redis\.windows_wait_ms \(4000\) is shorter than "
                                          r"redis\.windows_lease_ms \(5000\)"):
        load_settings(redis={"windows_wait_ms": 4000})
    assert load_settings(redis={"windows_lease_ms": 200, "windows_wait_ms": 200}).redis
