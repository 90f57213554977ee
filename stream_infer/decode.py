"""Bytes -> validated :class:`~stream_infer.records.Transaction`, or a RecordError saying why.

A decoder is built once and called per record, ``decoder(value) -> Transaction``, or per batch,
``decoder.many(values) -> (events, failures)`` with the same outcome for every value. Whatever
the bytes, it raises only :class:`~stream_infer.errors.RecordError` subclasses: tombstones and
undecodable bytes (``DecodeError``), payloads over the size limit, checked before parsing
(``OversizedError``), Avro schema ids that do not resolve (``UnknownSchemaError``), and schema
violations (``ValidationError``), including what the schema language cannot state: finite
numbers, and a card "token" that is really a card number. Messages never contain the value.
The one exception is the resolver's own outage (``RegistryUnavailable``), which propagates:
it says nothing about the record, and the runner retries the batch.

JSON uses one reused typed msgspec decoder. Avro uses the Confluent wire format (magic byte 0,
4-byte big-endian schema id, Avro binary): the writer schema comes from a
:class:`SchemaResolver` by id and is resolved against the reader schema
``schemas/transaction.avsc``. Encoders for the outputs live here too, beside their decoders.

Labels (``schemas/label.schema.json``, ``label.avsc``) decode the same way, one record at a
time, into :class:`~stream_infer.records.LabelRecord` (:func:`make_label_decoder`), with the
same errors and reasons, so a bad label can be dead-lettered like a bad event.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import fastavro
import msgspec
import numpy as np
import numpy.typing as npt
from fastavro.read import SchemaResolutionError

from .config import DEFAULT_MAX_PAYLOAD, SCHEMA_DIR, DecodeSettings
from .errors import (
    DecodeError,
    OversizedError,
    RecordError,
    UnknownSchemaError,
    ValidationError,
)
from .records import LabelRecord, Transaction, epoch_ms

__all__ = [
    "MAGIC",
    "SCHEMA_DIR",
    "AvroDecoder",
    "AvroEncoder",
    "AvroLabelDecoder",
    "Decoder",
    "Failures",
    "JsonDecoder",
    "JsonEncoder",
    "JsonLabelDecoder",
    "LabelDecoder",
    "LocalSchemas",
    "SchemaResolver",
    "check",
    "decode_each",
    "encode_avro",
    "encode_avro_label",
    "encode_avro_transaction",
    "load_avro_schema",
    "looks_like_pan",
    "make_decoder",
    "make_label_decoder",
]

MAGIC = 0
_HEADER = struct.Struct(">bI")
_OPEN, _CLOSE = ord("{"), ord("}")
SPLIT = 256
"""Records per retry of the batch path when a batch has a bad record in it."""
LABEL_SCHEMA_ID = 2
"""Without a registry, the id ``label.avsc`` is served under (the simulator writes it)."""

Failures = list[tuple[int, RecordError]]
"""A batch's refused records: (position in the batch, why)."""


class Decoder(Protocol):
    """Decodes one record (``__call__``) or a batch (``many``) with the same outcome."""

    def __call__(self, value: bytes | None) -> Transaction: ...

    def many(self, values: Sequence[bytes | None]) -> tuple[list[Transaction], Failures]:
        """The events of the valid values in order, and the refused ones by position."""
        ...


def decode_each(decode: Decoder, values: Sequence[bytes | None], start: int = 0
                ) -> tuple[list[Transaction], Failures]:
    """``many`` one record at a time; positions count from ``start``."""
    events: list[Transaction] = []
    failures: Failures = []
    add = events.append
    for position, value in enumerate(values, start):
        try:
            add(decode(value))
        except RecordError as error:
            failures.append((position, error))
    return events, failures


class SchemaResolver(Protocol):
    """The parsed Avro writer schema for a schema id.

    Raises :class:`UnknownSchemaError` for an id it cannot resolve (the record is bad) and
    :class:`~stream_infer.errors.RegistryUnavailable` when it cannot tell (the batch is retried).
    """

    def schema(self, schema_id: int) -> Any: ...


def load_avro_schema(path: Path) -> Any:
    """Parse an ``.avsc`` file with fastavro."""
    return fastavro.parse_schema(json.loads(Path(path).read_text()))


class LocalSchemas:
    """A resolver serving one schema file (by default ``transaction.avsc``) from a directory
    under one configured id."""

    def __init__(self, schema_dir: Path, schema_id: int, file: str = "transaction.avsc") -> None:
        self.schema_id = schema_id
        self._schema = load_avro_schema(Path(schema_dir) / file)

    def schema(self, schema_id: int) -> Any:
        if schema_id != self.schema_id:
            raise UnknownSchemaError(f"unknown Avro schema id {schema_id}")
        return self._schema


def looks_like_pan(value: str) -> bool:
    """True for 13-19 digits, spaces or dashes allowed between them, passing the Luhn check."""
    if len(value) < 13:
        return False
    digits = value.replace(" ", "").replace("-", "")
    if not (13 <= len(digits) <= 19 and digits.isdecimal()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def check(event: Transaction) -> Transaction:
    """The checks msgspec constraints cannot state; raises ValidationError without the value."""
    check_codes(event)
    if not math.isfinite(event.amount):
        raise ValidationError("amount must be a finite number - at `$.amount`")
    if event.attributes and not all(map(math.isfinite, event.attributes.values())):
        raise ValidationError("attributes must be finite numbers - at `$.attributes[...]`")
    return _check_card(event)


def check_codes(event: Transaction) -> None:
    """``currency``, ``mcc`` and ``country`` match their schema patterns (ASCII only)."""
    for field, valid, error in _CODE_CHECKS:
        if not valid(field(event)):
            raise ValidationError(error)


def codes_valid(events: Sequence[Transaction]) -> bool:
    """``check_codes`` for a batch decoded by msgspec, which holds each code to its length:
    each field's present values are joined and the text checked once. (Comprehensions read
    a field at half the cost of ``map(attrgetter)``.)"""
    currencies = "".join([e.currency for e in events])
    mccs = "".join([code for e in events if (code := e.mcc) is not None])
    countries = "".join([code for e in events if (code := e.country) is not None])
    return _letters(currencies) and _letters(countries) and _digits(mccs)


def _currency(code: str | None) -> bool:
    return code is not None and len(code) == 3 and _letters(code)


def _mcc(code: str | None) -> bool:
    return code is None or (len(code) == 4 and _digits(code))


def _country(code: str | None) -> bool:
    return code is None or (len(code) == 2 and _letters(code))


def _letters(text: str) -> bool:
    """Only A-Z (or nothing)."""
    return not text or (text.isascii() and text.isalpha() and text.isupper())


def _digits(text: str) -> bool:
    """Only 0-9 (or nothing)."""
    return not text or (text.isascii() and text.isdigit())


_CODE_CHECKS: tuple[tuple[Callable[[Transaction], str | None], Callable[[str | None], bool],
                          str], ...] = (
    (operator.attrgetter("currency"), _currency,
     "Expected `str` matching regex '^[A-Z]{3}$' - at `$.currency`"),
    (operator.attrgetter("mcc"), _mcc, "Expected `str` matching regex '^[0-9]{4}$' - at `$.mcc`"),
    (operator.attrgetter("country"), _country,
     "Expected `str` matching regex '^[A-Z]{2}$' - at `$.country`"),
)
"""Each code field, its check, and the error when it fails (the first failing field wins)."""


def _check_card(event: Transaction) -> Transaction:
    if looks_like_pan(event.card_id):
        raise ValidationError("card_id looks like a card number, not a token - at `$.card_id`")
    return event


class JsonDecoder:
    """JSON -> Transaction with one reused typed msgspec decoder.

    msgspec's JSON parser never yields NaN or infinity (``1e999`` is "out of range"), so only
    the code patterns and the card-number check run after it.
    """

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload_bytes = max_payload_bytes
        decoder = msgspec.json.Decoder(Transaction)
        self._decode, self._lines = decoder.decode, decoder.decode_lines

    def __call__(self, value: bytes | None) -> Transaction:
        if not value or len(value) > self.max_payload_bytes:
            _sized(value, self.max_payload_bytes)  # raises the right error
        try:
            event = self._decode(value)  # type: ignore[arg-type]
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise DecodeError(str(exc)) from None
        except UnicodeDecodeError:  # msgspec raises it for invalid UTF-8 inside a string
            raise DecodeError("a string is not valid UTF-8") from None
        except RecursionError:
            raise DecodeError("JSON nested too deeply") from None
        check_codes(event)
        return event if len(event.card_id) < 13 else _check_card(event)  # a PAN has 13+

    def many(self, values: Sequence[bytes | None]) -> tuple[list[Transaction], Failures]:
        """As ``__call__`` on each value, parsing the whole batch in one msgspec call.

        The batch is joined into JSON lines when every value is one object (starts with
        ``{``, ends with ``}``, within the size limit): each then yields at least one value and
        none can run into the next (after a ``}`` only ``,``, ``}`` or ``]`` may follow
        inside an object or array), so exactly one event per value means each event is its
        own value's. Codes are checked on each field's values joined, and card ids only when
        one is long enough to be a card number. A batch that
        fails any of this is retried :data:`SPLIT` records at a time, and a part that fails
        again is decoded one record at a time, which gives each record its own error.
        """
        events = self._joined(values)
        if events is not None:
            return events, []
        if len(values) <= SPLIT:
            return decode_each(self, values)
        out: list[Transaction] = []
        failures: Failures = []
        for start in range(0, len(values), SPLIT):
            part = values[start:start + SPLIT]
            found = self._joined(part)
            if found is None:
                found, failed = decode_each(self, part, start)
                failures += failed
            out += found
        return out, failures

    def _joined(self, values: Sequence[bytes | None]) -> list[Transaction] | None:
        """The events of a batch of valid values, or None if any may not be valid."""
        if not values or not all(values):  # a None or an empty value: not here
            return None
        present = cast(Sequence[bytes], values)
        sizes = np.fromiter(map(len, present), np.int64, len(present))
        if sizes.max() > self.max_payload_bytes:
            return None
        joined = b"\n".join(present)
        if not _objects(joined, sizes):
            return None
        try:
            events = self._lines(joined)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return None  # invalid JSON among them
        if len(events) != len(values) or not codes_valid(events):
            return None
        cards = [e.card_id for e in events]
        if max(map(len, cards)) >= 13 and any(map(looks_like_pan, cards)):
            return None
        return events


def _objects(joined: bytes, sizes: npt.NDArray[np.int64]) -> bool:
    """Whether each value of ``joined`` (values of ``sizes`` bytes, one separator byte between
    them) starts with ``{`` and ends with ``}``: one array lookup per value, no slicing."""
    last = np.cumsum(sizes + 1) - 2
    data = np.frombuffer(joined, np.uint8)
    return bool((data[last - sizes + 1] == _OPEN).all() and (data[last] == _CLOSE).all())


class _ConfluentAvro:
    """Confluent-framed Avro -> the fields of one record read into the reader schema
    ``reader`` (record ``record``); writer schemas resolved once per id, then cached.

    A writer schema that does not resolve to the reader (another record name, an incompatible
    type) is ``UnknownSchemaError``; bytes the writer schema cannot read, or left over after
    the record, are ``DecodeError``. Epoch milliseconds stay ``int`` (as in JSON) even when
    the writer says ``timestamp-millis``.
    """

    def __init__(self, resolver: SchemaResolver, max_payload_bytes: int, reader: Path,
                 record: str) -> None:
        self.resolver = resolver
        self.max_payload_bytes = max_payload_bytes
        self._reader = load_avro_schema(reader)
        self._record = record
        self._schemas: dict[int, tuple[Any, Any]] = {}

    def _fields(self, value: bytes | None, times: tuple[str, ...]) -> dict[str, Any]:
        """The record's fields, the ``times`` among them as epoch milliseconds."""
        value = _sized(value, self.max_payload_bytes)
        if len(value) < _HEADER.size:
            raise DecodeError("shorter than the 5-byte Confluent wire-format header")
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC:
            raise DecodeError(f"magic byte {magic}, not 0: not the Confluent wire format")
        data = self._read(value, schema_id)
        for name in times:
            when = data.get(name)
            if isinstance(when, dt.datetime):
                data[name] = epoch_ms(when)
        return data

    def _read(self, value: bytes, schema_id: int) -> dict[str, Any]:
        writer, reader = self._resolve(schema_id)
        buffer = io.BytesIO(value)
        buffer.seek(_HEADER.size)
        try:
            data = fastavro.schemaless_reader(buffer, writer, reader)
        except SchemaResolutionError:
            raise UnknownSchemaError(
                f"writer schema {schema_id} does not resolve to {self._record}"
            ) from None
        except Exception as exc:  # fastavro raises many kinds on corrupt bodies
            raise DecodeError(
                f"Avro body unreadable with writer schema {schema_id}: {type(exc).__name__}"
            ) from None
        if buffer.tell() != len(value):
            raise DecodeError(f"{len(value) - buffer.tell()} bytes left after the Avro record")
        if not isinstance(data, dict):
            raise UnknownSchemaError(f"writer schema {schema_id} is not a record")
        return data

    def _resolve(self, schema_id: int) -> tuple[Any, Any]:
        pair = self._schemas.get(schema_id)
        if pair is None:
            writer = self.resolver.schema(schema_id)
            reader = None if writer == self._reader else self._reader
            pair = self._schemas[schema_id] = (writer, reader)
        return pair


class AvroDecoder(_ConfluentAvro):
    """Confluent-framed Avro -> Transaction; writer schemas resolved once per id, then cached.

    The reader schema is ``transaction.avsc`` in ``schema_dir``. A writer schema that does not
    resolve to it (another record name, an incompatible type) is ``UnknownSchemaError``;
    bytes the writer schema cannot read, or left over after the record, are ``DecodeError``.
    Epoch milliseconds stay ``int`` (as in JSON) even when the writer says ``timestamp-millis``.
    """

    def __init__(self, resolver: SchemaResolver, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 *, schema_dir: Path = SCHEMA_DIR) -> None:
        super().__init__(resolver, max_payload_bytes, Path(schema_dir) / "transaction.avsc",
                         "stream_infer.Transaction")

    def many(self, values: Sequence[bytes | None]) -> tuple[list[Transaction], Failures]:
        return decode_each(self, values)

    def __call__(self, value: bytes | None) -> Transaction:
        data = self._fields(value, ("event_time",))
        try:
            return check(msgspec.convert(data, Transaction))
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc)) from None


def make_decoder(settings: DecodeSettings, registry: SchemaResolver | None = None) -> Decoder:
    """The decoder the settings ask for; Avro without a registry serves ``schema_dir`` locally."""
    if settings.format == "json":
        return JsonDecoder(settings.max_payload_bytes)
    resolver = registry or LocalSchemas(settings.schema_dir, settings.avro_schema_id)
    return AvroDecoder(resolver, settings.max_payload_bytes, schema_dir=settings.schema_dir)


LabelDecoder = Callable[[bytes | None], LabelRecord]
"""Bytes -> a validated label, or a RecordError saying why (as for transactions)."""


def check_label(label: LabelRecord) -> LabelRecord:
    """What the label schema cannot state: a ``card_id`` that is a card number is refused."""
    if label.card_id is not None and looks_like_pan(label.card_id):
        raise ValidationError("card_id looks like a card number, not a token - at `$.card_id`")
    return label


class JsonLabelDecoder:
    """JSON -> LabelRecord with one reused typed msgspec decoder (``label.schema.json``)."""

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._decode = msgspec.json.Decoder(LabelRecord).decode

    def __call__(self, value: bytes | None) -> LabelRecord:
        value = _sized(value, self.max_payload_bytes)
        try:
            label = self._decode(value)
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise DecodeError(str(exc)) from None
        except UnicodeDecodeError:
            raise DecodeError("a string is not valid UTF-8") from None
        except RecursionError:
            raise DecodeError("JSON nested too deeply") from None
        return check_label(label)


class AvroLabelDecoder(_ConfluentAvro):
    """Confluent-framed Avro -> LabelRecord, read into ``label.avsc`` in ``schema_dir`` (the
    writer's record must be ``stream_infer.LabelRecord`` or carry that alias)."""

    def __init__(self, resolver: SchemaResolver, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 *, schema_dir: Path = SCHEMA_DIR) -> None:
        super().__init__(resolver, max_payload_bytes, Path(schema_dir) / "label.avsc",
                         "stream_infer.LabelRecord")

    def __call__(self, value: bytes | None) -> LabelRecord:
        data = self._fields(value, ("label_time", "event_time"))
        try:
            return check_label(msgspec.convert(data, LabelRecord))
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc)) from None


def make_label_decoder(settings: DecodeSettings, registry: SchemaResolver | None = None, *,
                       schema_id: int = LABEL_SCHEMA_ID) -> LabelDecoder:
    """The label decoder of the format the settings ask for; Avro without a registry serves
    ``label.avsc`` from ``schema_dir`` under ``schema_id``."""
    if settings.format == "json":
        return JsonLabelDecoder(settings.max_payload_bytes)
    resolver = registry or LocalSchemas(settings.schema_dir, schema_id, "label.avsc")
    return AvroLabelDecoder(resolver, settings.max_payload_bytes, schema_dir=settings.schema_dir)


class JsonEncoder:
    """A record struct -> JSON bytes with one reused msgspec encoder."""

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode

    def __call__(self, struct: msgspec.Struct) -> bytes:
        return self._encode(struct)


class AvroEncoder:
    """A record struct -> Confluent-framed Avro under ``schema_id`` (parsed or raw schema)."""

    def __init__(self, schema: Any, schema_id: int) -> None:
        self.schema = fastavro.parse_schema(schema)
        self.schema_id = schema_id

    def __call__(self, struct: msgspec.Struct) -> bytes:
        return encode_avro(msgspec.to_builtins(struct), self.schema, self.schema_id)


def encode_avro(record: Mapping[str, Any], schema: Any, schema_id: int) -> bytes:
    """A dict as Confluent-framed Avro; fields left out take their schema defaults."""
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def encode_avro_transaction(event: Mapping[str, Any], schema_id: int = 1,
                            schema_dir: Path = SCHEMA_DIR) -> bytes:
    """A transaction dict as Confluent-framed Avro with ``transaction.avsc`` (producers, tests)."""
    return encode_avro(event, _transaction_schema(Path(schema_dir)), schema_id)


def encode_avro_label(label: Mapping[str, Any], schema_id: int = LABEL_SCHEMA_ID,
                      schema_dir: Path = SCHEMA_DIR) -> bytes:
    """A label dict as Confluent-framed Avro with ``label.avsc`` (producers, tests)."""
    return encode_avro(label, _schema(Path(schema_dir), "label.avsc"), schema_id)


@functools.cache
def _transaction_schema(schema_dir: Path) -> Any:
    return load_avro_schema(schema_dir / "transaction.avsc")


@functools.cache
def _schema(schema_dir: Path, file: str) -> Any:
    return load_avro_schema(schema_dir / file)


def _sized(value: bytes | None, limit: int) -> bytes:
    if not value:
        raise DecodeError("empty or null value (tombstone)")
    if len(value) > limit:
        raise OversizedError(f"payload of {len(value)} bytes exceeds the {limit}-byte limit")
    return value
