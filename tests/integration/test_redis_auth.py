"""A real redis-server with ``requirepass`` and an ACL user, reached through the settings.

The service's user may only ``HMGET`` feature keys; the loader uses the default user's
password in the URL (``features load --redis-url``). Wrong or missing credentials stop the
service at start-up, and fail as feature-store errors afterwards; no message or log line
carries a password.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream_infer import cli
from stream_infer.adapters.redis import RedisFeatureStore, connect
from stream_infer.config import load_settings
from stream_infer.demo.embedded import EmbeddedRedis
from stream_infer.errors import FeatureStoreError
from tests.support.configs import write_config

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "admin-Pa55-7f3a"
SCORER_PASSWORD = "scorer-Pa55-91c2"
WRONG_PASSWORD = "wrong-Pa55-0000"
SCORER_ACL = ["--user", "scorer", "on", f">{SCORER_PASSWORD}", "~card:*", "~merchant:*",
              "+hmget", "+ping"]


class AuthRedis(EmbeddedRedis):
    """An EmbeddedRedis that counts ``-NOAUTH`` to an anonymous PING as up."""

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(7) == b"-NOAUTH"
        except OSError:
            return False


@pytest.fixture(scope="module")
def server() -> Iterator[AuthRedis]:
    with AuthRedis(extra_args=["--requirepass", ADMIN_PASSWORD, *SCORER_ACL]) as running:
        yield running


@pytest.fixture(scope="module")
def loaded(server: AuthRedis, tmp_path_factory: pytest.TempPathFactory) -> AuthRedis:
    """Card features loaded by the CLI with the default user's password in --redis-url."""
    tmp = tmp_path_factory.mktemp("auth")
    (tmp / "cards.csv").write_text("card_id,avg,count\nc1,12.5,3\nc2,7.0,9\n")
    write_config(tmp / "c.toml", {"features": {"card": {"key": "card:{card_id}",
                                                         "fields": ["avg", "count"]}}})
    url = f"redis://:{ADMIN_PASSWORD}@{server.host}:{server.port}/0"
    assert cli.main(["features", "load", str(tmp / "cards.csv"), "--view", "card",
                     "--config", str(tmp / "c.toml"), "--redis-url", url]) == 0
    return server


def plain_url(server: AuthRedis) -> str:
    return f"redis://{server.host}:{server.port}/0"


def test_the_acl_user_from_the_settings_reads_features(
    loaded: AuthRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_INFER_REDIS__PASSWORD", SCORER_PASSWORD)
    settings = load_settings(redis={"url": plain_url(loaded), "username": "scorer"})
    store = RedisFeatureStore.from_settings(settings.redis)
    assert store.ping()
    assert store.fetch([("card:c1", ["avg", "count"]), ("card:c9", ["avg"])]) == [
        [b"12.5", b"3.0"], [None]]
    store.close()


def test_the_acl_bounds_what_the_service_user_may_do(loaded: AuthRedis) -> None:
    settings = load_settings(redis={"url": plain_url(loaded), "username": "scorer",
                                    "password": SCORER_PASSWORD})
    store = RedisFeatureStore.from_settings(settings.redis)
    with pytest.raises(FeatureStoreError, match="refused"):
        store.fetch([("session:x", ["token"])])
    with pytest.raises(redis.exceptions.NoPermissionError):
        connect(settings.redis).hset("card:c1", "avg", "0")
    store.close()


def test_the_default_user_with_requirepass_through_the_password_setting(
    loaded: AuthRedis,
) -> None:
    settings = load_settings(redis={"url": plain_url(loaded), "password": ADMIN_PASSWORD})
    client = connect(settings.redis)
    assert client.acl_whoami() == "default"
    assert client.hget("card:c2", "count") == b"9.0"
    client.close()


@pytest.mark.parametrize("credentials", [
    {},
    {"password": WRONG_PASSWORD},
    {"username": "scorer", "password": WRONG_PASSWORD},
], ids=["none", "wrong-default", "wrong-acl-user"])
def test_missing_or_wrong_credentials_fail_without_leaking_them(
    loaded: AuthRedis, credentials: dict[str, str], caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = load_settings(redis={"url": plain_url(loaded), **credentials})
    store = RedisFeatureStore.from_settings(settings.redis)
    assert not store.ping()
    with pytest.raises(FeatureStoreError) as info:
        store.fetch([("card:c1", ["avg"])])
    assert any(word in str(info.value) for word in ("NOAUTH", "Authentication", "invalid"))
    store.close()
    config = write_config(tmp_path / "c.toml", {"redis": {
        "url": f"redis://scorer:{WRONG_PASSWORD}@{loaded.host}:{loaded.port}/0"}})
    assert cli.main(["config", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    for secret in (WRONG_PASSWORD, SCORER_PASSWORD, ADMIN_PASSWORD):
        assert secret not in str(info.value) and secret not in caplog.text
        assert secret not in out


@pytest.mark.parametrize("credentials", [
    {},
    {"password": WRONG_PASSWORD},
    {"username": "scorer", "password": WRONG_PASSWORD},
], ids=["none", "wrong-default", "wrong-acl-user"])
def test_refused_credentials_stop_the_service_at_start_up(
    loaded: AuthRedis, credentials: dict[str, str],
) -> None:
    from stream_infer.errors import ConfigError

    settings = load_settings(redis={"url": plain_url(loaded), **credentials})
    store = RedisFeatureStore.from_settings(settings.redis)
    with pytest.raises(ConfigError, match="refused the credentials") as info:
        store.check_credentials()
    assert WRONG_PASSWORD not in str(info.value)
    store.close()
    good = load_settings(redis={"url": plain_url(loaded), "username": "scorer",
                                "password": SCORER_PASSWORD})
    RedisFeatureStore.from_settings(good.redis).check_credentials()  # no error


def test_an_unreachable_redis_at_start_up_is_left_to_the_outage_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from stream_infer.demo.embedded import free_port

    settings = load_settings(redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    RedisFeatureStore.from_settings(settings.redis).check_credentials()
    assert "redis.on_error applies" in caplog.text
