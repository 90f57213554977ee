"""Kafka security settings and web endpoints reach the Faust engine's app."""

import ssl
from pathlib import Path

import faust
import pytest

from stream_infer.config import KafkaSecurity
from stream_infer.errors import ConfigError
from stream_infer.service.faust import credentials


def test_plaintext_has_no_credentials() -> None:
    assert credentials(KafkaSecurity()) is None


def test_sasl_scram_over_tls_maps_mechanism_user_and_a_verifying_context() -> None:
    got = credentials(KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                    sasl_username="svc", sasl_password="s3cret"))
    assert isinstance(got, faust.SASLCredentials)
    assert (got.username, got.password, got.mechanism.value) == ("svc", "s3cret",
                                                                 "SCRAM-SHA-512")
    assert got.ssl_context is not None and got.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert got.ssl_context.check_hostname


def test_tls_without_verification_is_mapped_as_asked() -> None:
    got = credentials(KafkaSecurity(protocol="SSL", ssl_verify=False))
    assert isinstance(got, faust.SSLCredentials)
    assert got.context.verify_mode == ssl.CERT_NONE and not got.context.check_hostname


def test_oauthbearer_needs_the_native_engine() -> None:
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                             oauth_token_endpoint_url="https://idp/token",
                             oauth_client_id="c", oauth_client_secret="x")
    with pytest.raises(ConfigError, match="native engine"):
        credentials(security)


def test_http_port_zero_picks_a_free_port_and_none_disables_the_web_server(
        tmp_path: Path) -> None:
    from stream_infer.config import Settings
    from stream_infer.service.faust import create_app

    picked = create_app(Settings(observability={"http_port": 0}), tmp_path)
    assert 0 < picked.conf.web_port < 65536 and picked.conf.web_enabled
    off = create_app(Settings(observability={"http_port": None}), tmp_path)
    assert not off.conf.web_enabled
