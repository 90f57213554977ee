"""One frozen settings object, read once from a TOML file and ``STREAM_INFER_*`` variables.

Precedence, highest first: environment (``STREAM_INFER_KAFKA__GROUP_ID=...``, nested with
``__``), then the TOML file, then defaults. Only this module reads the environment (the standard
``OTEL_*`` variables stay the OpenTelemetry SDK's). Client dictionaries for librdkafka and
redis-py are built here, at the edge, with a free pass-through for options not modelled.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

ClientValue = str | int | float | bool
_SECRET_KEY = re.compile(
    r"password|secret|token(?![._]endpoint)|credential|private|key[._]pem"
    r"|sasl\.oauthbearer\.config")
_VIEW_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSecurity(_Section):
    """TLS and SASL for every Kafka client of the service (consumer, producer, admin, spans).

    ``sasl_mechanism`` PLAIN or SCRAM-SHA-256/512 authenticates with ``sasl_username`` and
    ``sasl_password``; OAUTHBEARER fetches tokens from an OIDC provider with the
    client-credentials grant (``oauth_token_endpoint_url``, ``oauth_client_id``,
    ``oauth_client_secret``, optional ``oauth_scope`` and ``oauth_extensions``).
    """

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_verify: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    oauth_token_endpoint_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_scope: str | None = None
    oauth_extensions: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        tls, sasl = self.protocol.endswith("SSL"), self.protocol.startswith("SASL_")
        if sasl != (self.sasl_mechanism is not None):
            raise ValueError("sasl_mechanism (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER) "
                             "is set exactly when protocol is SASL_SSL or SASL_PLAINTEXT")
        oauth = self.sasl_mechanism == "OAUTHBEARER"
        groups = {
            "ssl_": (tls, "protocol SSL or SASL_SSL"),
            "sasl_username": (sasl and not oauth, "sasl_mechanism PLAIN or SCRAM-*"),
            "sasl_password": (sasl and not oauth, "sasl_mechanism PLAIN or SCRAM-*"),
            "oauth_": (oauth, "sasl_mechanism OAUTHBEARER"),
        }
        for prefix, (used, needs) in groups.items():
            given = [n for n, v in self if n.startswith(prefix) and v not in (None, True)]
            if given and not used:
                raise ValueError(f"{', '.join(given)} only apply with {needs}")
        required = (("oauth_token_endpoint_url", "oauth_client_id", "oauth_client_secret")
                    if oauth else ("sasl_username", "sasl_password") if sasl else ())
        missing = [n for n in required if getattr(self, n) is None]
        if missing:
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs {', '.join(missing)}")
        return self

    def librdkafka(self) -> dict[str, ClientValue]:
        """The librdkafka options these settings stand for (secrets in clear: for clients only)."""
        config: dict[str, ClientValue] = {"security.protocol": self.protocol}
        if self.protocol.endswith("SSL"):
            config |= _given({
                "ssl.ca.location": self.ssl_ca_location,
                "ssl.certificate.location": self.ssl_certificate_location,
                "ssl.key.location": self.ssl_key_location,
                "ssl.key.password": self.ssl_key_password,
            })
            config["enable.ssl.certificate.verification"] = self.ssl_verify
            config["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_verify else "none"
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_mechanism == "OAUTHBEARER":
            config |= _given({
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.token.endpoint.url": self.oauth_token_endpoint_url,
                "sasl.oauthbearer.client.id": self.oauth_client_id,
                "sasl.oauthbearer.client.secret": self.oauth_client_secret,
                "sasl.oauthbearer.scope": self.oauth_scope,
                "sasl.oauthbearer.extensions": self.oauth_extensions,
            })
        elif self.sasl_mechanism:
            config |= _given({"sasl.username": self.sasl_username,
                              "sasl.password": self.sasl_password})
        return config


class KafkaSettings(_Section):
    """Topics, the consumer group, and librdkafka options."""

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "stream-infer"
    input_topics: list[str] = Field(default=["transactions"], min_length=1)
    alert_topic: str = "fraud-alerts"
    dlq_topic: str = "transactions-dlq"
    scores_topic: str | None = None
    labels_topic: str | None = None
    """Fraud labels ``{event_id, label, label_time}`` (``schemas/label.*``), arriving days
    after their events: read by the window features' delayed rates and by the monitor."""
    create_topics: bool = True
    topic_partitions: Annotated[int, Field(ge=1)] = 4
    replication_factor: Annotated[int, Field(ge=1)] = 1
    session_timeout_ms: Annotated[int, Field(ge=1000)] = 45_000
    max_poll_interval_ms: Annotated[int, Field(ge=1000)] = 300_000
    commit_interval_ms: Annotated[int, Field(ge=100)] = 5_000
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    transactional_id: str | None = None
    """With ``exactly_once``: this process's ``transactional.id`` (default: unique per
    process; zombies are fenced through the consumer group generation, KIP-447)."""
    delivery_timeout_ms: Annotated[int, Field(ge=1000)] = 30_000
    consumer: dict[str, ClientValue] = {}
    producer: dict[str, ClientValue] = {}
    security: KafkaSecurity = KafkaSecurity()

    def output_topics(self) -> list[str]:
        """Every topic the service writes to."""
        topics = [self.alert_topic, self.dlq_topic]
        return [*topics, self.scores_topic] if self.scores_topic else topics

    def common_config(self) -> dict[str, ClientValue]:
        """What every client gets (admin too): the brokers, TLS and SASL."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.security.librdkafka()}

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def consumer_config(self) -> dict[str, ClientValue]:
        """librdkafka consumer options: offsets stored by the service after delivery
        (at-least-once), or committed inside the output transaction (exactly-once)."""
        return {
            **self.common_config(),
            "group.id": self.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.offset.store": False,
            "enable.auto.commit": not self.exactly_once,
            "auto.commit.interval.ms": self.commit_interval_ms,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            **self.consumer,
        }

    def producer_config(self) -> dict[str, ClientValue]:
        """librdkafka producer options: idempotent, acks=all, bounded delivery time."""
        return {
            **self.common_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "delivery.timeout.ms": self.delivery_timeout_ms,
            **self.producer,
        }

    def transactional_config(self) -> dict[str, ClientValue]:
        """The producer options plus this process's ``transactional.id`` (exactly-once)."""
        transactional_id = (self.transactional_id
                            or f"stream-infer-{self.group_id}-{uuid.uuid4().hex[:12]}")
        return {**self.producer_config(), "transactional.id": transactional_id}


class BatchSettings(_Section):
    """Micro-batch bounds: a batch closes at ``max_records`` or after ``max_wait_ms``."""

    max_records: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    max_wait_ms: Annotated[int, Field(ge=0, le=60_000)] = 50
    max_in_flight: Annotated[int, Field(ge=1, le=16)] = 2
    """Batches whose outputs may await acknowledgement while the next ones are processed;
    offsets are stored in order, each batch's once all its outputs are acknowledged (1: wait
    for them before consuming again; exactly-once transactions always wait)."""


SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
"""The wire schemas shipped in the package (a copy of the repository's ``schemas/``, the
source of truth; ``tests/unit/test_schema_contract.py`` proves the two agree)."""
DEFAULT_MAX_PAYLOAD = 64 * 1024


class DecodeSettings(_Section):
    """How input bytes become transactions."""

    format: Literal["json", "avro"] = "json"
    max_payload_bytes: Annotated[int, Field(ge=64)] = DEFAULT_MAX_PAYLOAD
    schema_dir: Path = SCHEMA_DIR
    schema_registry_url: str | None = None
    avro_schema_id: Annotated[int, Field(ge=0)] = 1


class FeatureView(_Section):
    """A value per entity in Redis: ``key`` is a template over transaction fields.

    ``layout = "hash"``: a hash of the fields as text; ``"packed"``: the fields, in this
    order, as little-endian float32 in one string (``features load`` writes either).
    """

    key: str
    fields: list[str] = Field(min_length=1)
    layout: Literal["hash", "packed"] = "hash"

    @field_validator("key")
    @classmethod
    def _key_names_a_field(cls, key: str) -> str:
        from .records import Transaction

        names = re.findall(r"{(\w+)}", key)
        unknown = [n for n in names if n not in Transaction.__struct_fields__]
        if not names or unknown:
            raise ValueError(
                f"key template {key!r} must name transaction fields in braces, "
                "e.g. 'card:{card_id}'"
            )
        return key


_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
DURATION_UNITS_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
MAX_WINDOW_MS = 3_650 * 86_400_000
_AGGREGATE = re.compile(
    r"^(count|rate:label|(sum|mean|min|max):(amount|attributes\.[A-Za-z0-9_]+))$")


def duration_ms(text: str) -> int:
    """Milliseconds of a duration written ``<integer><unit>``, unit ``ms``, ``s``, ``m``,
    ``h`` or ``d`` (``"500ms"``, ``"12h"``, ``"7d"``); ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"duration {text!r} must be an integer and a unit: ms, s, m, h or d "
                         "(e.g. '7d', '12h')")
    return int(match[1]) * DURATION_UNITS_MS[match[2]]


class WindowGroup(_Section):
    """Windowed aggregates of one entity's events, computed by the service from the stream
    (``stream_infer.features`` states the semantics).

    ``aggregates``: ``count``, ``sum|mean|min|max:amount`` (or ``:attributes.<name>``) and,
    with a ``delay``, ``rate:label`` (the share of events in the window known to be fraud).
    With a delay every aggregate covers ``(t - delay - length, t - delay]``; without one,
    ``(t - length, t]`` including the event itself. Events more than ``allowed_lateness``
    older than the newest event seen get no window features and are not counted.
    """

    key: Literal["card_id", "customer_id", "terminal_id", "merchant_id", "mcc", "country",
                 "channel", "currency"]
    lengths: list[str] = Field(min_length=1)
    aggregates: list[str] = Field(min_length=1)
    delay: str = "0s"
    allowed_lateness: str = "1h"

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, lengths: list[str]) -> list[str]:
        millis = [duration_ms(length) for length in lengths]
        if any(not 0 < ms <= MAX_WINDOW_MS for ms in millis):
            raise ValueError("window lengths must be positive and at most 3650d")
        if len(set(millis)) < len(millis):
            raise ValueError(f"window lengths {lengths} repeat a length")
        return lengths

    @field_validator("delay", "allowed_lateness")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration_ms(value) > MAX_WINDOW_MS:
            raise ValueError(f"{value!r} is longer than 3650d")
        return value

    @field_validator("aggregates")
    @classmethod
    def _aggregates(cls, aggregates: list[str]) -> list[str]:
        bad = [a for a in aggregates if not _AGGREGATE.match(a)]
        if bad:
            raise ValueError(f"unknown aggregate {bad[0]!r}: use count, rate:label, or "
                             "sum, mean, min, max of amount or attributes.<name> "
                             "(e.g. 'mean:amount')")
        if len(set(aggregates)) < len(aggregates):
            raise ValueError(f"aggregates {aggregates} repeat an aggregate")
        return aggregates

    @model_validator(mode="after")
    def _rates_need_a_delay(self) -> WindowGroup:
        if "rate:label" in self.aggregates and duration_ms(self.delay) == 0:
            raise ValueError("rate:label needs a delay (labels of recent events are not known "
                             "yet), e.g. delay = '7d'")
        return self


class CalendarSettings(_Section):
    """The ``event.*`` features: hour and weekday of ``event_time`` in ``time_zone``; the
    night is the hours ``night_hours[0]`` to ``night_hours[1]`` inclusive (``[22, 6]``
    wraps past midnight)."""

    time_zone: str = "UTC"
    night_hours: tuple[Annotated[int, Field(ge=0, le=23)],
                       Annotated[int, Field(ge=0, le=23)]] = (0, 6)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. "
                             "'Europe/Brussels')") from None
        return name


class RedisSettings(_Section):
    """The feature store, its timeouts, and what to do when it is unavailable."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    cluster: bool = False
    socket_timeout_ms: Annotated[int, Field(ge=1)] = 250
    windows_timeout_ms: Annotated[int, Field(ge=1)] = 5_000
    """The window features' script call: its reply carries the touched entities' logs and
    takes far longer than a feature lookup (``docs/BENCHMARKS.md``, window features)."""
    windows_lease_ms: Annotated[int, Field(ge=1)] = 5_000
    """The longest a worker holds a shared window group's turn (its write gives it back at
    once): a worker that stops while holding it holds up the others this long, and a batch
    whose turn outlasts it (a long pause) is computed again."""
    windows_wait_ms: Annotated[int, Field(ge=1)] = 60_000
    """How long a batch waits for other workers' turns on a window group before it fails
    like any Redis failure (``on_error``); at least ``windows_lease_ms``."""
    windows_lease_shards: Annotated[int, Field(ge=1, le=64)] = 4
    """The shards a window group's turns are taken in once workers collide in it: each
    shard of its entities a lease, read and write of its own, so that workers sharing the
    group compute different shards at once (1: the whole group by turns)."""
    windows_max_ahead_ms: Annotated[int, Field(ge=0)] = 3_600_000
    """How far ahead of the worker's clock an event may be stamped and still enter the window
    state (0: no bound). One stamped further gets no window features and moves no group's
    watermark, which would otherwise leave every later event too late, for good; a label
    whose ``label_time`` is further ahead is a dead letter."""
    socket_connect_timeout_ms: Annotated[int, Field(ge=1)] = 500
    on_error: Literal["fail-open", "pause"] = "fail-open"
    retry_backoff_ms: Annotated[int, Field(ge=1)] = 200
    retry_backoff_max_ms: Annotated[int, Field(ge=1)] = 5_000
    options: dict[str, ClientValue] = {}
    username: str | None = None
    password: SecretStr | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> RedisSettings:
        if self.windows_wait_ms < self.windows_lease_ms:
            raise ValueError(
                f"redis.windows_wait_ms ({self.windows_wait_ms}) is shorter than "
                f"redis.windows_lease_ms ({self.windows_lease_ms}): a worker that stops while "
                "holding a window group's turn holds it for the lease, and every batch "
                "waiting meanwhile would fail; wait at least as long as the lease")
        url = urlsplit(self.url.get_secret_value())
        for name, in_url in (("username", url.username), ("password", url.password)):
            if getattr(self, name) is not None and in_url:
                raise ValueError(f"give the {name} in redis.{name} or in redis.url, not both")
        if self.ssl and url.scheme not in ("redis", "rediss"):
            raise ValueError(f"redis.ssl needs a redis:// or rediss:// url, not {url.scheme}://")
        given = [n for n in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} need TLS: set redis.ssl = true or use rediss://")
        return self

    @property
    def tls(self) -> bool:
        return self.client_url().startswith("rediss://")

    def client_url(self) -> str:
        """The URL to connect to: ``rediss://`` when ``ssl`` is on (secret: never log it)."""
        url = self.url.get_secret_value()
        return "rediss://" + url.removeprefix("redis://") if self.ssl else url

    def client_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments (the URL is passed separately; its query options win)."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_ms / 1000,
            "socket_connect_timeout": self.socket_connect_timeout_ms / 1000,
            **_given({"username": self.username, "password": self.password}),
        }
        if self.tls:
            kwargs |= {
                "ssl_cert_reqs": self.ssl_cert_reqs,
                "ssl_check_hostname": self.ssl_check_hostname and self.ssl_cert_reqs != "none",
                **_given({"ssl_ca_certs": self.ssl_ca_certs, "ssl_certfile": self.ssl_certfile,
                          "ssl_keyfile": self.ssl_keyfile}),
            }
        return {**kwargs, **self.options}


class ModelSettings(_Section):
    """Which models to serve from the registry directory, and when to look for new ones.

    ``shadows`` are challengers, ``"name"`` (latest) or ``"name:version"``: they score every
    batch beside the champion, to the scores topic and metrics, never to the alert topic.
    The service re-resolves the models on SIGHUP and, if ``reload_poll_s`` is set, whenever
    the registry changes (a new ``latest``); a model that fails to load is refused and the
    running ones keep serving.
    """

    dir: Path = Path("models")
    name: str = "demo"
    version: str = "latest"
    shadows: list[Annotated[str, Field(pattern=r"^[^:\s]+(:[^:\s]+)?$")]] = []
    reasons_top_k: Annotated[int, Field(ge=0, le=50)] = 3
    reasons_method: Literal["saabas", "tree_shap"] = "saabas"
    """How contributions are computed: decision paths (fast) or exact TreeSHAP (slow)."""
    reload_poll_s: Annotated[float, Field(gt=0)] | None = 30.0
    nthread: Annotated[int, Field(ge=0)] = 0
    """Scoring threads per process (0: every core; ``run --workers N`` sets cores / N)."""
    backend: Literal["auto", "compiled", "xgboost"] = "auto"
    """What scores: the compiled forest, bit-for-bit equal to XGBoost and several times
    faster (``auto``: when it can serve the model; ``compiled``: or refuse the model), or
    XGBoost's ``inplace_predict``."""

    def refs(self) -> list[tuple[str, str]]:
        """``(name, version)`` of the champion, then of each shadow."""
        shadows = [(ref.partition(":")[0], ref.partition(":")[2] or "latest")
                   for ref in self.shadows]
        return [(self.name, self.version), *shadows]


class ObservabilitySettings(_Section):
    """The HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``."""

    http_host: str = "0.0.0.0"
    http_port: Annotated[int, Field(ge=0, le=65535)] | None = 9464
    stale_loop_s: Annotated[float, Field(gt=0)] = 60.0


class DriftSettings(_Section):
    """PSI of each served model's features and score against its training profile
    (``stream_infer.drift``), over sliding ``windows`` of processing time (``15m``, ``1h``,
    ``1d``), each kept in ``buckets`` time buckets; a window reports PSI once it holds
    ``min_sample`` rows."""

    enabled: bool = True
    windows: list[Annotated[str, Field(pattern=r"^[1-9][0-9]*[smhd]$")]] = ["1h", "24h"]
    min_sample: Annotated[int, Field(ge=1)] = 500
    buckets: Annotated[int, Field(ge=2, le=1440)] = 60


class TracingSettings(_Section):
    """Spans per batch and stage: to a Kafka topic (OTLP protobuf) and/or OTLP/HTTP.

    The OTLP/HTTP exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables.
    """

    enabled: bool = True
    kafka_topic: str | None = "stream-infer-traces"
    otlp: bool = False
    otlp_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    max_queue_size: Annotated[int, Field(ge=1)] = 2048
    max_export_batch_size: Annotated[int, Field(ge=1)] = 512
    schedule_delay_ms: Annotated[int, Field(ge=1)] = 1000
    max_links: Annotated[int, Field(ge=0)] = 8

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> TracingSettings:
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        return self


class Settings(BaseSettings):
    """Everything the service needs, validated at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="STREAM_INFER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    batch: BatchSettings = BatchSettings()
    decode: DecodeSettings = DecodeSettings()
    redis: RedisSettings = RedisSettings()
    features: dict[str, FeatureView] = {}
    windows: dict[str, WindowGroup] = {}
    calendar: CalendarSettings = CalendarSettings()
    model: ModelSettings = ModelSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    tracing: TracingSettings = TracingSettings()
    drift: DriftSettings = DriftSettings()
    profile: Literal["development", "production"] = "development"

    @model_validator(mode="after")
    def _production_is_secure(self) -> Settings:
        problems = _insecure(self) if self.profile == "production" else []
        if problems:
            raise ValueError('profile = "production" refuses:\n' +
                             "\n".join(f"    - {p}" for p in problems))
        return self

    @model_validator(mode="after")
    def _view_names(self) -> Settings:
        for name in self.features:
            if not _VIEW_NAME.match(name) or name == "attributes":
                raise ValueError(
                    f"feature view name {name!r} must be lower_snake and not 'attributes'"
                )
        return self

    @model_validator(mode="after")
    def _window_names(self) -> Settings:
        for name in self.windows:
            if not _VIEW_NAME.match(name) or name in ("attributes", "amount", "event"):
                raise ValueError(f"window group name {name!r} must be lower_snake and not "
                                 "'attributes', 'amount' or 'event'")
        shared = sorted({*self.windows, "event"} & set(self.features))
        if shared:
            raise ValueError(f"{shared[0]!r} names both a feature view and window features "
                             "('event' is the calendar's)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, with every secret masked."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="json"))
        return masked


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (TOML) under the environment; raise ConfigError with every problem listed."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    data.update(overrides)
    try:
        return Settings(**data)
    except PydanticValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _describe(exc: PydanticValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"  {field}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return "**********"
    if isinstance(value, str) and "://" in value and "@" in value:
        return re.sub(r"//[^@/]*@", "//**********@", value)
    return value


def _given(options: dict[str, str | SecretStr | None]) -> dict[str, ClientValue]:
    """The options that are set, secrets revealed (client dictionaries only, never logs)."""
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v
            for k, v in options.items() if v is not None}


def _insecure(settings: Settings) -> list[str]:
    """What production refuses: plaintext or unverified Kafka, Redis and Schema Registry,
    each with its fix."""
    registry = settings.decode.schema_registry_url
    plain_registry = (["plaintext Schema Registry: decode.schema_registry_url is http://; "
                       "use https://"]
                      if registry and registry.lower().startswith("http://") else [])
    return list(dict.fromkeys([*_kafka_insecure(settings.kafka),
                               *_redis_insecure(settings.redis), *plain_registry]))


def _kafka_insecure(kafka: KafkaSettings) -> list[str]:
    problems = []
    for client, extra in (("consumer", kafka.consumer), ("producer", kafka.producer)):
        config = {**kafka.common_config(), **extra}

        def origin(key: str, field: str, client: str = client,
                   extra: dict[str, ClientValue] = extra) -> str:
            return f'kafka.{client}."{key}"' if key in extra else f"kafka.security.{field}"

        protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            problems.append(f"plaintext Kafka: {origin('security.protocol', 'protocol')} is "
                            f'{protocol}; set kafka.security.protocol = "SSL" or "SASL_SSL"')
        if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
            problems.append(
                "broker hostname verification off: "
                f"{origin('ssl.endpoint.identification.algorithm', 'ssl_verify')}; remove it "
                "(for a private CA set kafka.security.ssl_ca_location instead)")
        if str(config.get("enable.ssl.certificate.verification", True)).lower() in ("false", "0"):
            problems.append(
                "broker certificate verification off: "
                f"{origin('enable.ssl.certificate.verification', 'ssl_verify')}; remove it "
                "(for a private CA set kafka.security.ssl_ca_location instead)")
    endpoint = kafka.security.oauth_token_endpoint_url
    if endpoint and not endpoint.lower().startswith("https://"):
        problems.append("kafka.security.oauth_token_endpoint_url sends the client secret in "
                        "clear; use an https:// token endpoint")
    return problems


def _redis_insecure(redis: RedisSettings) -> list[str]:
    url = urlsplit(redis.client_url())
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    options = {"ssl_cert_reqs": redis.ssl_cert_reqs, "ssl_check_hostname": redis.ssl_check_hostname,
               **redis.options, **query}  # redis-py: URL query options win

    def origin(key: str) -> str:
        if key in query:
            return f"?{key}= in redis.url"
        return f"redis.options.{key}" if key in redis.options else f"redis.{key}"

    problems = []
    if url.scheme == "redis":
        problems.append("plaintext Redis: redis.url is redis://; use rediss:// or set "
                        "redis.ssl = true")
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none", "0"):
        problems.append(f"Redis certificate verification off: {origin('ssl_cert_reqs')} is "
                        'none; use "required" (for a private CA set redis.ssl_ca_certs)')
    if url.scheme == "rediss" and str(options.get("ssl_check_hostname", True)).lower() in (
            "false", "0", "no"):
        problems.append(f"Redis hostname verification off: {origin('ssl_check_hostname')}; "
                        "remove it")
    return problems
