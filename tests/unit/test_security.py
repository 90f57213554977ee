"""Kafka TLS/SASL and Redis TLS/ACL settings, the production profile, and secret masking.

The librdkafka dictionaries are asserted key by key and handed to real librdkafka clients
(which refuse unknown or inconsistent options at construction); the redis-py client is
built by the real adapter. Secrets must never appear in ``config show``, logs or errors.
(Model files: a tampered file and a pickle are refused before parsing in test_registry.py.)
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stream_infer import cli
from stream_infer.adapters.kafka import KafkaSink
from stream_infer.adapters.redis import RedisFeatureStore, connect
from stream_infer.config import Settings, load_settings
from stream_infer.errors import ConfigError, DeliveryError, FeatureStoreError
from stream_infer.records import Output

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ["scram-Pa55", "oidc-S3cret", "key-Pa55", "redis-Pa55", "url-Pa55", "pass-thru-Pa55",
           "-----BEGIN PRIVATE KEY-----x"]
SECURE_REDIS = {"url": "rediss://redis.internal:6380/0"}
SCRAM = {"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc",
         "sasl_password": "scram-Pa55"}


def settings(**sections: Any) -> Settings:
    return load_settings(**sections)


# --- librdkafka configuration -------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_with_a_password_gives_the_exact_librdkafka_config(mechanism: str) -> None:
    kafka = settings(kafka={"bootstrap_servers": "b:9093", "security": {
        **SCRAM, "sasl_mechanism": mechanism, "ssl_ca_location": "/tls/ca.pem"}}).kafka
    assert kafka.common_config() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/tls/ca.pem",
        "enable.ssl.certificate.verification": True,
        "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": mechanism,
        "sasl.username": "svc",
        "sasl.password": "scram-Pa55",
    }
    for config in (kafka.consumer_config(), kafka.producer_config()):
        assert config.items() >= kafka.common_config().items()


def test_oauthbearer_uses_oidc_client_credentials() -> None:
    kafka = settings(kafka={"bootstrap_servers": "b:9093", "security": {
        "protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER",
        "oauth_token_endpoint_url": "https://idp.example/oauth2/token",
        "oauth_client_id": "stream-infer", "oauth_client_secret": "oidc-S3cret",
        "oauth_scope": "kafka", "oauth_extensions": "logicalCluster=lkc-1"}}).kafka
    assert kafka.common_config() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "enable.ssl.certificate.verification": True,
        "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/oauth2/token",
        "sasl.oauthbearer.client.id": "stream-infer",
        "sasl.oauthbearer.client.secret": "oidc-S3cret",
        "sasl.oauthbearer.scope": "kafka",
        "sasl.oauthbearer.extensions": "logicalCluster=lkc-1",
    }


def test_mutual_tls_and_the_plaintext_default() -> None:
    kafka = settings(kafka={"security": {
        "protocol": "SSL", "ssl_ca_location": "/tls/ca.pem",
        "ssl_certificate_location": "/tls/client.pem", "ssl_key_location": "/tls/client.key",
        "ssl_key_password": "key-Pa55"}}).kafka
    assert kafka.common_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SSL",
        "ssl.ca.location": "/tls/ca.pem",
        "ssl.certificate.location": "/tls/client.pem",
        "ssl.key.location": "/tls/client.key",
        "ssl.key.password": "key-Pa55",
        "enable.ssl.certificate.verification": True,
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert settings().kafka.common_config() == {"bootstrap.servers": "127.0.0.1:9092",
                                                "security.protocol": "PLAINTEXT"}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def librdkafka_view(make: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> str:
    """The client configuration a real librdkafka client logs at construction (``debug=conf``,
    secrets shown as ``[redacted]``), one ``name = value`` a line."""
    handler, logger = _Lines(), logging.getLogger(f"test-librdkafka-{id(config)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    client = make({**config, "debug": "conf", "logger": logger})
    client.poll(0.1)  # serves the log queue
    if isinstance(client, Consumer):
        client.close()
    logger.removeHandler(handler)
    found = [m.group(1) for line in handler.lines
             if (m := re.match(r"CONF \[[^]]*\] \[[^]]*\]: +(\S+ = .*)$", line))]
    assert found, handler.lines
    return "\n".join(found)


CLIENTS: list[tuple[Callable[[dict[str, Any]], Any], Callable[[Any], dict[str, Any]]]] = [
    (Producer, lambda kafka: kafka.producer_config()),
    (Consumer, lambda kafka: kafka.consumer_config()),
    (AdminClient, lambda kafka: kafka.common_config()),
]
VERIFIED = ["enable.ssl.certificate.verification = true",
            "ssl.endpoint.identification.algorithm = https"]


@pytest.mark.parametrize(("security", "parsed", "broken", "refusal"), [
    (SCRAM, ["security.protocol = sasl_ssl", "sasl.mechanisms = SCRAM-SHA-512",
             "sasl.username = [redacted]", "sasl.password = [redacted]", *VERIFIED],
     {"sasl.mechanism": "SCRAM-SHA-999"}, "Unsupported hash function: SCRAM-SHA-999"),
    ({**SCRAM, "sasl_mechanism": "SCRAM-SHA-256"},
     ["security.protocol = sasl_ssl", "sasl.mechanisms = SCRAM-SHA-256",
      "sasl.password = [redacted]", *VERIFIED],
     {"ssl.ca.location": "/no/such/ca.pem"}, "ssl.ca.location failed"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER",
      "oauth_token_endpoint_url": "https://127.0.0.1:1/token", "oauth_client_id": "c",
      "oauth_client_secret": "oidc-S3cret", "oauth_scope": "kafka"},
     ["security.protocol = sasl_ssl", "sasl.mechanisms = OAUTHBEARER",
      "sasl.oauthbearer.method = oidc", "sasl.oauthbearer.client.id = c",
      "sasl.oauthbearer.client.secret = [redacted]", "sasl.oauthbearer.scope = kafka",
      "sasl.oauthbearer.token.endpoint.url = https://127.0.0.1:1/token", *VERIFIED],
     {"sasl.oauthbearer.token.endpoint.url": ""},
     "`sasl.oauthbearer.token.endpoint.url` is mandatory"),
    ({"protocol": "SSL", "ssl_verify": False},
     ["security.protocol = ssl", "enable.ssl.certificate.verification = false",
      "ssl.endpoint.identification.algorithm = none"],
     {"ssl.endpoint.identification.algorithm": "http"},
     'Invalid value "http" for configuration property "ssl.endpoint.identification'),
], ids=["scram-512", "scram-256", "oidc", "ssl-unverified"])
def test_librdkafka_reads_the_security_settings_and_refuses_them_broken(
    security: dict[str, Any], parsed: list[str], broken: dict[str, str], refusal: str
) -> None:
    """Real librdkafka clients, built from the generated dictionaries, hold the security
    settings asked for (as librdkafka itself reports them, secrets redacted); the same
    dictionaries with one thing wrong are refused at construction."""
    kafka = settings(kafka={"bootstrap_servers": "127.0.0.1:1", "security": security}).kafka
    for make, config_of in CLIENTS:
        config = config_of(kafka)
        view = librdkafka_view(make, config)
        assert set(parsed) <= set(view.splitlines()), (make.__name__, view)
        assert "metadata.broker.list = 127.0.0.1:1" in view
        assert not [secret for secret in SECRETS if secret in view]
        with pytest.raises(KafkaException, match=re.escape(refusal)):
            make({**config, **broken})


@pytest.mark.parametrize(("security", "message"), [
    ({"protocol": "SASL_SSL"}, "sasl_mechanism .* is set exactly when protocol is SASL_"),
    ({"protocol": "SSL", "sasl_mechanism": "PLAIN"}, "is set exactly when protocol is SASL_"),
    ({**SCRAM, "sasl_password": None}, "SCRAM-SHA-512 needs sasl_password"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "oauth_client_id": "c",
      "oauth_token_endpoint_url": "https://idp/t"}, "OAUTHBEARER needs oauth_client_secret"),
    ({"ssl_ca_location": "/ca.pem"}, "ssl_ca_location only apply with protocol SSL or SASL_SSL"),
    ({**SCRAM, "oauth_client_id": "c"}, "oauth_client_id only apply with sasl_mechanism OAUTH"),
    ({"protocol": "TLS"}, "kafka.security.protocol"),
])
def test_inconsistent_kafka_security_is_a_clear_error(security: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        settings(kafka={"security": security})
    assert "kafka.security" in str(info.value) and "scram-Pa55" not in str(info.value)


# --- Redis --------------------------------------------------------------------------------------

def test_redis_acl_user_and_tls_reach_the_real_client() -> None:
    cfg = settings(redis={"url": "redis://redis.internal:6380/2", "ssl": True,
                          "username": "scorer", "password": "redis-Pa55",
                          "ssl_ca_certs": "/tls/ca.pem", "ssl_certfile": "/tls/c.pem",
                          "ssl_keyfile": "/tls/c.key"}).redis
    assert cfg.client_url() == "rediss://redis.internal:6380/2"
    client = connect(cfg)
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs.items() >= {
        "host": "redis.internal", "port": 6380, "db": 2, "username": "scorer",
        "password": "redis-Pa55", "ssl_ca_certs": "/tls/ca.pem", "ssl_certfile": "/tls/c.pem",
        "ssl_keyfile": "/tls/c.key", "ssl_cert_reqs": "required", "ssl_check_hostname": True,
    }.items()
    client.close()


def test_redis_without_tls_gets_no_tls_options() -> None:
    cfg = settings(redis={"url": "redis://r:6379/0", "username": "u", "password": "p"}).redis
    assert cfg.client_kwargs() == {"socket_timeout": 0.25, "socket_connect_timeout": 0.5,
                                   "username": "u", "password": "p"}
    assert connect(cfg).connection_pool.connection_class is redis.Connection
    dev = settings(redis={"url": "rediss://r/0", "ssl_cert_reqs": "none"}).redis
    assert dev.client_kwargs()["ssl_check_hostname"] is False  # Python refuses both at once


@pytest.mark.parametrize(("redis_cfg", "message"), [
    ({"url": "redis://u:url-Pa55@r/0", "password": "redis-Pa55"}, "redis.password or in redis.url"),
    ({"url": "redis://u@r/0", "username": "v"}, "redis.username or in redis.url"),
    ({"url": "redis://r/0", "ssl_ca_certs": "/ca.pem"}, "ssl_ca_certs need TLS"),
    ({"url": "unix:///run/redis.sock", "ssl": True}, "redis.ssl needs a redis:// or rediss://"),
])
def test_inconsistent_redis_security_is_a_clear_error(redis_cfg: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        settings(redis=redis_cfg)
    assert "Pa55" not in str(info.value)


# --- the production profile ---------------------------------------------------------------------

@pytest.mark.parametrize(("sections", "names", "fix"), [
    ({"kafka": {"security": {}}}, "kafka.security.protocol is PLAINTEXT",
     'set kafka.security.protocol = "SSL"'),
    ({"kafka": {"security": {**SCRAM, "protocol": "SASL_PLAINTEXT"}}},
     "kafka.security.protocol is SASL_PLAINTEXT", '"SASL_SSL"'),
    ({"kafka": {"security": {"protocol": "SSL"}, "consumer": {"security.protocol": "plaintext"}}},
     'kafka.consumer."security.protocol" is PLAINTEXT', "set kafka.security.protocol"),
    ({"kafka": {"security": {"protocol": "SSL", "ssl_verify": False}}},
     "hostname verification off: kafka.security.ssl_verify", "ssl_ca_location instead"),
    ({"kafka": {"security": {"protocol": "SSL"},
                "producer": {"ssl.endpoint.identification.algorithm": "none"}}},
     'kafka.producer."ssl.endpoint.identification.algorithm"', "remove it"),
    ({"kafka": {"security": {"protocol": "SSL"},
                "consumer": {"enable.ssl.certificate.verification": "false"}}},
     'certificate verification off: kafka.consumer."enable.ssl.certificate.verification"',
     "remove it"),
    ({"kafka": {"security": {"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER",
                             "oauth_token_endpoint_url": "http://idp/token",
                             "oauth_client_id": "c", "oauth_client_secret": "oidc-S3cret"}}},
     "kafka.security.oauth_token_endpoint_url sends the client secret in clear", "https://"),
    ({"redis": {"url": "redis://r:6379/0"}}, "plaintext Redis: redis.url is redis://",
     "use rediss:// or set redis.ssl = true"),
    ({"redis": {"url": "rediss://r/0", "ssl_cert_reqs": "none"}},
     "verification off: redis.ssl_cert_reqs is none", '"required"'),
    ({"redis": {"url": "rediss://r/0", "options": {"ssl_cert_reqs": "none"}}},
     "redis.options.ssl_cert_reqs is none", '"required"'),
    ({"redis": {"url": "rediss://r/0?ssl_cert_reqs=none"}},
     "?ssl_cert_reqs= in redis.url is none", '"required"'),
    ({"redis": {"url": "rediss://r/0", "ssl_check_hostname": False}},
     "Redis hostname verification off: redis.ssl_check_hostname", "remove it"),
])
def test_production_refuses_plaintext_and_unverified_connections(
    sections: dict[str, Any], names: str, fix: str
) -> None:
    secure = {"kafka": {"security": SCRAM}, "redis": SECURE_REDIS}
    merged = {k: {**secure.get(k, {}), **sections.get(k, {})} for k in ("kafka", "redis")}
    with pytest.raises(ConfigError) as info:
        load_settings(profile="production", **merged)
    message = str(info.value)
    assert 'profile = "production" refuses' in message
    assert names in message and fix in message
    assert not any(secret in message for secret in SECRETS)
    load_settings(**merged)  # the same settings are fine for development


def test_production_lists_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(profile="production",
                      kafka={"consumer": {"enable.ssl.certificate.verification": False}},
                      redis={"url": "redis://r/0"})
    message = str(info.value)
    assert len(re.findall(r"^    - ", message, re.M)) == 3
    for setting in ("kafka.security.protocol", 'kafka.consumer."enable.ssl.certificate',
                    "redis.url"):
        assert setting in message


def test_production_accepts_tls_everywhere_and_reads_the_profile_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_INFER_PROFILE", "production")
    monkeypatch.setenv("STREAM_INFER_KAFKA__SECURITY__PROTOCOL", "SSL")
    monkeypatch.setenv("STREAM_INFER_REDIS__URL", "rediss://r:6380/0")
    monkeypatch.setenv("STREAM_INFER_REDIS__PASSWORD", "redis-Pa55")
    s = load_settings()
    assert s.profile == "production" and s.redis.client_kwargs()["password"] == "redis-Pa55"
    monkeypatch.delenv("STREAM_INFER_KAFKA__SECURITY__PROTOCOL")
    with pytest.raises(ConfigError, match="plaintext Kafka"):
        load_settings()
    assert Settings.model_fields["profile"].default == "development"


def readme_production_toml() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Security"):]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("source", ["README.md", "deploy/stream-infer.production.toml"])
def test_the_documented_production_configs_load(source: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    text = (readme_production_toml() if source == "README.md"
            else (ROOT / source).read_text())
    assert tomllib.loads(text)["profile"] == "production"
    path = tmp_path / "c.toml"
    path.write_text(text)
    monkeypatch.setenv("STREAM_INFER_KAFKA__SECURITY__SASL_PASSWORD", "scram-Pa55")
    monkeypatch.setenv("STREAM_INFER_REDIS__PASSWORD", "redis-Pa55")
    s = load_settings(path)
    assert s.kafka.common_config()["security.protocol"] == "SASL_SSL"
    assert s.redis.tls and s.redis.client_kwargs()["password"] == "redis-Pa55"
    assert "Pa55" not in str(s.redacted())


# --- masking ------------------------------------------------------------------------------------

EVERY_SECRET = """
[kafka]
producer = { "sasl.password" = "pass-thru-Pa55", "ssl.key.pem" = "-----BEGIN PRIVATE KEY-----x" }

[kafka.security]
protocol = "SASL_SSL"
ssl_key_location = "/tls/client.key"
ssl_key_password = "key-Pa55"
sasl_mechanism = "OAUTHBEARER"
oauth_token_endpoint_url = "https://idp.example/token"
oauth_client_id = "stream-infer"
oauth_client_secret = "oidc-S3cret"

[redis]
url = "rediss://scorer:url-Pa55@redis.internal:6380/0"
"""


def test_config_show_masks_every_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(EVERY_SECRET)
    monkeypatch.setenv("STREAM_INFER_DECODE__SCHEMA_REGISTRY_URL", "https://sr:scram-Pa55@sr/")
    assert cli.main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert not [s for s in SECRETS if s in out]
    assert out.count("**********") >= 6
    for visible in ("https://idp.example/token", "stream-infer", "/tls/client.key", "SASL_SSL"):
        assert visible in out


def test_config_show_of_an_insecure_production_config_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('profile = "production"\n' + EVERY_SECRET.replace("rediss://", "redis://"))
    assert cli.main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stream-infer: error: invalid configuration in {path}:")
    assert "plaintext Redis: redis.url is redis://" in err and "Traceback" not in err
    assert not [s for s in SECRETS if s in err]


def test_secrets_never_reach_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = settings(kafka={"bootstrap_servers": "127.0.0.1:1", "security": SCRAM},
                 redis={"url": "redis://scorer:url-Pa55@127.0.0.1:1/0",
                        "socket_connect_timeout_ms": 100})
    sink = KafkaSink({**s.kafka.producer_config(), "delivery.timeout.ms": 1000})
    sink.send([Output("t", b"k", b"v")])
    with pytest.raises(DeliveryError) as delivery:  # polls: client errors reach the log
        sink.flush(5.0)
    sink.close(0.1)
    assert "producer:" in caplog.text
    store = RedisFeatureStore.from_settings(s.redis)
    with pytest.raises(FeatureStoreError) as info:
        store.fetch([("card:c1", ["a"])])
    assert not store.ping()
    for text in (caplog.text, str(delivery.value), str(info.value), repr(s.redacted())):
        assert not [secret for secret in SECRETS if secret in text]


def test_production_refuses_a_plaintext_schema_registry_without_echoing_its_url() -> None:
    secure = {"kafka": {"security": SCRAM}, "redis": SECURE_REDIS}
    registry = "http://reg-user:reg-pass@registry:8081"
    with pytest.raises(ConfigError) as info:
        load_settings(profile="production", decode={"schema_registry_url": registry}, **secure)
    message = str(info.value)
    assert "plaintext Schema Registry" in message and "https://" in message
    assert "reg-pass" not in message
    load_settings(profile="production",
                  decode={"schema_registry_url": "https://registry:8081"}, **secure)
