"""Bytes -> validated :class:`~stream_infer.records.Transaction`, or a RecordError saying why.

A decoder is built once and called per record: ``decoder(value) -> Transaction``. It raises
only :class:`~stream_infer.errors.RecordError` subclasses, whatever the bytes: tombstones,
oversized payloads (checked before parsing), undecodable bytes, unknown Avro schema ids,
schema violations, and checks the schema language cannot state (finite numbers; a card
"token" that is really a card number). Error messages never contain the offending value.

JSON uses one reused typed msgspec decoder. Avro uses the Confluent wire format (magic byte 0,
4-byte big-endian schema id, Avro binary), resolving the writer schema by id through a
:class:`SchemaResolver` (a Schema Registry client, or :class:`LocalSchemas` from ``schemas/``)
and reading into ``schemas/transaction.avsc``.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import fastavro
import msgspec

from .config import DecodeSettings
from .errors import DecodeError, OversizedError, UnknownSchemaError, ValidationError
from .records import Transaction

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
MAGIC = 0
_HEADER = struct.Struct(">bI")
_DIGITS_ONLY = str.maketrans("", "", " -")


class SchemaResolver(Protocol):
    """Finds the parsed Avro writer schema for a schema id; raises UnknownSchemaError."""

    def schema(self, schema_id: int) -> Any: ...


def load_avro_schema(path: Path) -> Any:
    """Parse an ``.avsc`` file with fastavro."""
    return fastavro.parse_schema(json.loads(Path(path).read_text()))


class LocalSchemas:
    """Serves ``transaction.avsc`` from a directory under one configured schema id."""

    def __init__(self, schema_dir: Path, schema_id: int) -> None:
        self.schema_id = schema_id
        self._schema = load_avro_schema(Path(schema_dir) / "transaction.avsc")

    def schema(self, schema_id: int) -> Any:
        if schema_id != self.schema_id:
            raise UnknownSchemaError(f"unknown Avro schema id {schema_id}")
        return self._schema


def looks_like_pan(value: str) -> bool:
    """True for 13-19 digits (spaces/dashes allowed) passing the Luhn check."""
    digits = value.translate(_DIGITS_ONLY)
    if not (13 <= len(digits) <= 19 and digits.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def check(event: Transaction) -> Transaction:
    """Semantic checks beyond the schema language; raises ValidationError."""
    if not math.isfinite(event.amount):
        raise ValidationError("amount must be a finite number - at `$.amount`")
    if event.attributes and not all(math.isfinite(v) for v in event.attributes.values()):
        raise ValidationError("attributes must be finite numbers - at `$.attributes`")
    if looks_like_pan(event.card_id):
        raise ValidationError("card_id looks like a card number, not a token - at `$.card_id`")
    return event


class JsonDecoder:
    """JSON -> Transaction with one reused typed msgspec decoder."""

    def __init__(self, max_payload_bytes: int = 64 * 1024) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._decode = msgspec.json.Decoder(Transaction).decode

    def __call__(self, value: bytes | None) -> Transaction:
        _check_size(value, self.max_payload_bytes)
        try:
            return check(self._decode(value))  # type: ignore[arg-type]
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise DecodeError(str(exc)) from None


class AvroDecoder:
    """Confluent-framed Avro -> Transaction, writer schema resolved by id."""

    def __init__(self, resolver: SchemaResolver, schema_dir: Path,
                 max_payload_bytes: int = 64 * 1024) -> None:
        self.resolver = resolver
        self.max_payload_bytes = max_payload_bytes
        self._reader = load_avro_schema(Path(schema_dir) / "transaction.avsc")

    def __call__(self, value: bytes | None) -> Transaction:
        _check_size(value, self.max_payload_bytes)
        assert value is not None
        if len(value) < _HEADER.size:
            raise DecodeError("shorter than the Confluent wire-format header")
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC:
            raise DecodeError(f"wrong magic byte {magic}: not Confluent wire format")
        writer = self.resolver.schema(schema_id)
        try:
            data = fastavro.schemaless_reader(io.BytesIO(value[_HEADER.size:]), writer,
                                              self._reader)
        except Exception as exc:  # fastavro raises many kinds on corrupt input
            raise DecodeError(f"Avro decoding failed: {type(exc).__name__}") from None
        try:
            return check(msgspec.convert(_clean(data), Transaction))
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc)) from None


def make_decoder(settings: DecodeSettings, registry: SchemaResolver | None = None
                 ) -> Callable[[bytes | None], Transaction]:
    """The decoder the settings ask for."""
    if settings.format == "json":
        return JsonDecoder(settings.max_payload_bytes)
    resolver = registry or LocalSchemas(settings.schema_dir, settings.avro_schema_id)
    return AvroDecoder(resolver, settings.schema_dir, settings.max_payload_bytes)


def encode_avro(record: dict[str, Any], schema: Any, schema_id: int) -> bytes:
    """A dict as Confluent-framed Avro (for producers, the simulator and tests)."""
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


_TRANSACTION_SCHEMA: dict[str, Any] = {}


def encode_avro_transaction(event: dict[str, Any], schema_id: int = 1,
                            schema_dir: Path = SCHEMA_DIR) -> bytes:
    """A transaction dict as Confluent-framed Avro with ``schemas/transaction.avsc``."""
    key = str(schema_dir)
    if key not in _TRANSACTION_SCHEMA:
        _TRANSACTION_SCHEMA[key] = load_avro_schema(schema_dir / "transaction.avsc")
    return encode_avro({**_AVRO_DEFAULTS, **event}, _TRANSACTION_SCHEMA[key], schema_id)


_AVRO_DEFAULTS: dict[str, Any] = {
    "customer_id": None, "terminal_id": None, "mcc": None, "country": None, "channel": None,
    "label": None, "attributes": {},
}


def _check_size(value: bytes | None, limit: int) -> None:
    if not value:
        raise DecodeError("empty or null value (tombstone)")
    if len(value) > limit:
        raise OversizedError(f"payload of {len(value)} bytes exceeds the {limit}-byte limit")


def _clean(data: Any) -> Any:
    """Drop Avro nulls so optional fields take their defaults."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if v is not None}
    raise DecodeError("Avro record is not a record")
