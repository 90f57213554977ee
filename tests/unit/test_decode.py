"""Decoding never crashes and never leaks: every bad input is one RecordError with a reason."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.config import DecodeSettings
from stream_infer.decode import (
    AvroDecoder,
    JsonDecoder,
    LocalSchemas,
    encode_avro,
    encode_avro_transaction,
    load_avro_schema,
    looks_like_pan,
    make_decoder,
)
from stream_infer.errors import (
    DecodeError,
    OversizedError,
    RecordError,
    UnknownSchemaError,
    ValidationError,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
PANS = ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"]
GOOD = {"event_id": "e1", "event_time": "2026-01-02T03:04:05.678Z", "card_id": "card-1",
        "merchant_id": "m1", "amount": 12.5, "currency": "EUR", "attributes": {"x": 1.5}}


def as_json(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


decode = JsonDecoder(max_payload_bytes=1024)
avro = AvroDecoder(LocalSchemas(SCHEMAS, 1), SCHEMAS, max_payload_bytes=1024)


def test_json_event_decodes_with_rfc3339_or_epoch_ms_time() -> None:
    event = decode(as_json())
    assert event.event_time_ms == 1_767_323_045_678
    assert decode(as_json(event_time=1_767_323_045_678)).event_time_ms == 1_767_323_045_678
    assert event.attributes == {"x": 1.5} and event.amount == 12.5


def test_unknown_fields_are_ignored() -> None:
    assert decode(as_json(new_field={"nested": [1, 2]})).event_id == "e1"


@pytest.mark.parametrize(("value", "error", "reason"), [
    (None, DecodeError, "undecodable"),
    (b"", DecodeError, "undecodable"),
    (b"{", DecodeError, "undecodable"),
    (b"\xff\xfe", DecodeError, "undecodable"),
    (b'{"amount": NaN}', DecodeError, "undecodable"),
    (as_json(amount=0), ValidationError, "schema"),
    (as_json(amount=-1.0), ValidationError, "schema"),
    (as_json().replace(b"12.5", b"1e999"), ValidationError, "schema"),
    (as_json(currency="eur"), ValidationError, "schema"),
    (as_json(event_time="yesterday"), ValidationError, "schema"),
    (as_json(label=2), ValidationError, "schema"),
    (as_json(attributes={"x": "high"}), ValidationError, "schema"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "card_id"}).encode(), ValidationError,
     "schema"),
    (as_json(channel="x" * 2000), OversizedError, "oversized"),
])
def test_bad_json_is_a_record_error_with_a_reason(value: bytes | None, error: type,
                                                  reason: str) -> None:
    with pytest.raises(error) as info:
        decode(value)
    assert info.value.reason == reason


@pytest.mark.parametrize("pan", PANS)
def test_a_card_number_in_card_id_is_refused_without_echoing_it(pan: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode(as_json(card_id=pan))
    assert "card number" in str(info.value)
    assert pan[:6] not in str(info.value)


@pytest.mark.parametrize("field", ["event_id", "merchant_id", "currency", "mcc", "channel"])
def test_no_error_message_echoes_a_planted_card_number(field: str) -> None:
    bad = {**GOOD, field: PANS[0], "amount": -1}
    with pytest.raises(RecordError) as info:
        decode(json.dumps(bad).encode())
    assert "4111" not in str(info.value)


def test_luhn_check() -> None:
    assert all(looks_like_pan(p) for p in PANS)
    assert not looks_like_pan("4111111111111112")  # Luhn fails
    assert not looks_like_pan("card-4111111111111111")
    assert not looks_like_pan("411111111111")  # 12 digits


def test_avro_round_trip_in_confluent_wire_format() -> None:
    value = encode_avro_transaction({**GOOD, "event_time": 5}, schema_id=1)
    assert value[0] == 0 and struct.unpack(">I", value[1:5]) == (1,)
    event = avro(value)
    assert (event.event_id, event.event_time_ms, event.attributes) == ("e1", 5, {"x": 1.5})


@pytest.mark.parametrize(("value", "error"), [
    (b"\x01" + b"\x00\x00\x00\x01" + b"\x02", DecodeError),  # wrong magic byte
    (b"\x00\x00", DecodeError),  # short header
    (b"\x00\x00\x00\x00\x07\x02e1", UnknownSchemaError),
    (b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff", DecodeError),  # corrupt body
])
def test_bad_avro_framing_and_bodies(value: bytes, error: type) -> None:
    with pytest.raises(error):
        avro(value)


def test_avro_doubles_can_carry_nan_which_is_refused() -> None:
    with pytest.raises(ValidationError, match="finite"):
        avro(encode_avro_transaction({**GOOD, "attributes": {"x": float("inf")}}))
    with pytest.raises(ValidationError):
        avro(encode_avro_transaction({**GOOD, "amount": float("nan")}))


def test_avro_writer_with_an_extra_field_is_read_forward_compatibly() -> None:
    writer = json.loads((SCHEMAS / "transaction.avsc").read_text())
    writer["fields"].append({"name": "device", "type": "string", "default": ""})

    class Registry:
        def schema(self, schema_id: int) -> object:
            return load_avro_schema_from(writer)

    record = {**GOOD, "device": "phone", "customer_id": None, "terminal_id": None, "mcc": None,
              "country": None, "channel": None, "label": None}
    value = encode_avro(record, load_avro_schema_from(writer), 2)
    assert AvroDecoder(Registry(), SCHEMAS)(value).event_id == "e1"


def load_avro_schema_from(doc: dict) -> object:
    import fastavro

    return fastavro.parse_schema(doc)


def test_make_decoder_follows_the_settings() -> None:
    assert isinstance(make_decoder(DecodeSettings()), JsonDecoder)
    assert isinstance(make_decoder(DecodeSettings(format="avro", schema_dir=SCHEMAS)),
                      AvroDecoder)
    assert load_avro_schema(SCHEMAS / "alert.avsc")["name"] == "stream_infer.Alert"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_record_errors(value: bytes) -> None:
    for decoder in (decode, avro):
        with contextlib.suppress(RecordError):
            decoder(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(0, 40))
def test_truncated_and_bit_flipped_avro_only_raise_record_errors(noise: bytes, cut: int) -> None:
    value = bytearray(encode_avro_transaction(GOOD))
    value[5 + cut % (len(value) - 5)] ^= noise[0] or 1
    for candidate in (bytes(value), bytes(value[: 5 + cut])):
        with contextlib.suppress(RecordError):
            avro(candidate)
