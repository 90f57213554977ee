"""The values that flow through the pipeline, in data-flow order.

``SourceRecord`` (bytes from Kafka) -> ``Transaction`` (decoded, validated) -> a row of the
feature matrix -> a score -> ``Alert`` / ``ScoreRecord`` (to Kafka) or ``DeadLetter``.
``LabelRecord``: an event's fraud outcome, learned later (the labels stream).

``schemas/`` is the source of truth for the wire formats; ``tests/unit/test_schema_contract.py``
proves these types and the schema files agree.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Annotated, Protocol

import msgspec

from .errors import ConfigError

HeaderValue = str | bytes | None
Headers = list[tuple[str, HeaderValue]]



def header_pairs(headers: Headers | Mapping[str, HeaderValue] | None) -> Headers:
    """A record's headers as ``(name, value)`` pairs, whichever shape the client gave."""
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def epoch_ms(when: dt.datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (floor; no float rounding)."""
    return (when - _EPOCH) // _MS


def wall_clock_ms() -> int:
    """This machine's clock, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds from digits, or from an ISO 8601 date or date-time (UTC if naive)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is neither epoch milliseconds nor an ISO 8601 time"
                          ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return epoch_ms(when)


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Code = Annotated[str, msgspec.Meta(max_length=64)]


def _code(pattern: str, length: int) -> msgspec.Meta:
    """A fixed-length code: msgspec holds it to ``length``; the schema states ``pattern``,
    which ``decode.check_codes`` enforces, about 0.1 us where msgspec's regex took 0.8 us of
    a 1.3 us decode (and ``decode.codes_valid`` once per batch)."""
    return msgspec.Meta(min_length=length, max_length=length,
                         extra_json_schema={"pattern": pattern})


# Epoch milliseconds a datetime (and Avro timestamp-millis) can hold: 0001-01-01 to 9999-12-31.
_EpochMs = Annotated[int, msgspec.Meta(ge=-62_135_596_800_000, le=253_402_300_799_999)]


class SourceRecord(Protocol):
    """What the pipeline needs of an input record: the read-only face of a Kafka message.

    ``confluent_kafka.Message`` satisfies it as is; ``adapters.memory.Record`` is the fake.
    """

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers | dict[str, HeaderValue] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class Transaction(msgspec.Struct, frozen=True, gc=False):
    """A payment event. Unknown fields are ignored (forward compatibility)."""

    event_id: _Id
    event_time: Annotated[dt.datetime, msgspec.Meta(tz=True)] | _EpochMs
    card_id: _Id
    merchant_id: _Id
    amount: Annotated[float, msgspec.Meta(ge=0)]
    """Zero is an amount: card verifications and reversals carry it; negative is refused."""
    currency: Annotated[str, _code("^[A-Z]{3}$", 3)]
    customer_id: _Id | None = None
    terminal_id: _Id | None = None
    mcc: Annotated[str, _code("^[0-9]{4}$", 4)] | None = None
    country: Annotated[str, _code("^[A-Z]{2}$", 2)] | None = None
    channel: _Code | None = None
    label: Annotated[int, msgspec.Meta(ge=0, le=1)] | None = None
    attributes: Annotated[dict[_Code, float], msgspec.Meta(max_length=256)] = {}

    @property
    def event_time_ms(self) -> int:
        """Event time as epoch milliseconds, whichever form the producer used."""
        if isinstance(self.event_time, int):
            return self.event_time
        return epoch_ms(self.event_time)


class LabelRecord(msgspec.Struct, frozen=True, gc=False):
    """The fraud outcome of event ``event_id`` as it arrives on the wire, learned at
    ``label_time`` (RFC 3339 with an offset, or epoch ms): ``label`` 1 is fraud, 0 genuine.

    The entity keys and ``event_time`` are optional context: the window state finds an event
    by its id. The window engine applies ``stream_infer.features.labels.Label``, made of
    ``event_id``, ``label`` and :attr:`label_time_ms`. Unknown fields are ignored.
    """

    event_id: _Id
    label: Annotated[int, msgspec.Meta(ge=0, le=1)]
    label_time: Annotated[dt.datetime, msgspec.Meta(tz=True)] | _EpochMs
    event_time: Annotated[dt.datetime, msgspec.Meta(tz=True)] | _EpochMs | None = None
    card_id: _Id | None = None
    merchant_id: _Id | None = None
    customer_id: _Id | None = None
    terminal_id: _Id | None = None

    @property
    def label_time_ms(self) -> int:
        """Label time as epoch milliseconds, whichever form the producer used."""
        if isinstance(self.label_time, int):
            return self.label_time
        return epoch_ms(self.label_time)


class Reason(msgspec.Struct, frozen=True):
    """One feature's contribution to an alert's score."""

    feature: str
    value: float | None
    contribution: float


class Alert(msgspec.Struct, frozen=True):
    """A fraud alert, keyed by ``card_id`` on the alert topic.

    ``alert_id`` is a UUIDv5 of (event_id, model_name, model_version): replays and retries of
    the same event under the same model produce the same id, so consumers can dedup on it.
    """

    alert_id: str
    event_id: str
    card_id: str
    score: float
    threshold: float
    model_name: str
    model_version: str
    event_time: int
    scored_at: int
    reasons: list[Reason] = []
    degraded: bool = False


class ScoreRecord(msgspec.Struct, frozen=True):
    """Every score with the feature vector it was computed from (the optional scores topic).

    ``shadow`` marks a challenger's score: it never raised an alert. ``threshold`` is the
    model's alert threshold and ``alerted`` whether the score reached it: for the champion,
    whether it raised an alert; for a shadow, whether it would have (None on records written
    before these fields, which is what their readers see).
    """

    event_id: str
    card_id: str
    score: float
    model_name: str
    model_version: str
    event_time: int
    scored_at: int
    features: dict[str, float | None]
    label: int | None = None
    degraded: bool = False
    shadow: bool = False
    threshold: float | None = None
    alerted: bool | None = None


class Output(msgspec.Struct, frozen=True, gc=False):
    """One record to produce: where, keyed how, with what bytes and headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = []
