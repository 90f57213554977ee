"""Decoding never crashes and never leaks: every bad input is one RecordError with a reason."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import struct
import uuid
from pathlib import Path
from typing import Any

import fastavro
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.config import DecodeSettings
from stream_infer.decode import (
    AvroDecoder,
    AvroEncoder,
    JsonDecoder,
    JsonEncoder,
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
    RegistryUnavailable,
    UnknownSchemaError,
    ValidationError,
)
from stream_infer.records import Alert, Reason, ScoreRecord, Transaction

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
# Luhn-valid test numbers: Visa 16 / 13 / 19, Mastercard, Amex, spaced, dashed, Arabic-Indic.
PANS = ["4111111111111111", "4222222222222", "4111111111111111110", "5500000000000004",
        "378282246310005", "4111 1111 1111 1111", "5500-0000-0000-0004",
        "\u0664" + "\u0661" * 15]
GOOD = {"event_id": "e1", "event_time": "2026-01-02T03:04:05.678Z", "card_id": "card-1",
        "merchant_id": "m1", "amount": 12.5, "currency": "EUR", "attributes": {"x": 1.5}}
LIMIT = 1024


def as_json(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def as_avro(**changes: object) -> bytes:
    return encode_avro_transaction({**GOOD, **changes}, schema_id=1)


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


decode = JsonDecoder(max_payload_bytes=LIMIT)
avro = AvroDecoder(LocalSchemas(SCHEMAS, 1), max_payload_bytes=LIMIT)


class CountingResolver:
    """A resolver over a dict of raw schemas that counts its calls."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []

    def schema(self, schema_id: int) -> Any:
        self.calls.append(schema_id)
        if schema_id not in self.schemas:
            raise UnknownSchemaError(f"unknown Avro schema id {schema_id}")
        return fastavro.parse_schema(self.schemas[schema_id])


def transaction_avsc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / "transaction.avsc").read_text())
    return doc


# --- JSON ---------------------------------------------------------------------------------------

def test_json_event_decodes_with_rfc3339_or_epoch_ms_time() -> None:
    event = decode(as_json())
    assert event.event_time == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert decode(as_json(event_time=1_767_323_045_678)).event_time == 1_767_323_045_678
    assert (event.attributes, event.amount, event.label, event.mcc) == ({"x": 1.5}, 12.5, None,
                                                                        None)


def test_optional_fields_decode() -> None:
    event = decode(as_json(customer_id="u1", terminal_id="t1", mcc="5411", country="FR",
                           channel="pos", label=1))
    assert (event.customer_id, event.terminal_id, event.mcc, event.country, event.channel,
            event.label) == ("u1", "t1", "5411", "FR", "pos", 1)


def test_a_zero_amount_is_a_transaction_on_every_decode_path() -> None:
    """Card verifications and refund reversals carry amount 0: one at a time, in a batch
    (the joined fast path and the split fallback) and in Avro."""
    zero = as_json(event_id="zero", amount=0)
    assert decode(zero).amount == 0.0
    events, failures = decode.many([as_json(), zero, as_json(amount=0.0)])
    assert [e.amount for e in events] == [12.5, 0.0, 0.0] and failures == []
    events, failures = decode.many([zero, as_json(amount=-0.01), b"{"])
    assert [e.event_id for e in events] == ["zero"] and [p for p, _ in failures] == [1, 2]
    assert avro(as_avro(amount=0.0)).amount == 0.0


def test_unknown_fields_are_ignored() -> None:
    assert decode(as_json(new_field={"nested": [1, 2]}, schema_version=3)).event_id == "e1"


@pytest.mark.parametrize(("value", "error", "reason"), [
    (None, DecodeError, "undecodable"),
    (b"", DecodeError, "undecodable"),
    (b"{", DecodeError, "undecodable"),
    (b"\xff\xfe", DecodeError, "undecodable"),
    (b"[1, 2]", ValidationError, "schema"),
    (b'{"amount": NaN}', DecodeError, "undecodable"),
    (as_json() + b"x", DecodeError, "undecodable"),
    (as_json(amount=-1.0), ValidationError, "schema"),
    (as_json(amount=-5e-324), ValidationError, "schema"),
    (as_json(amount="12.5"), ValidationError, "schema"),
    (as_json(currency="eur"), ValidationError, "schema"),
    (as_json(currency="EUR\n"), ValidationError, "schema"),
    (as_json(event_time="yesterday"), ValidationError, "schema"),
    (as_json(event_time="2026-01-02T03:04:05"), ValidationError, "schema"),
    (as_json(event_time=253_402_300_800_000), ValidationError, "schema"),
    (as_json(event_time=1.5), ValidationError, "schema"),
    (as_json(label=2), ValidationError, "schema"),
    (as_json(label=True), ValidationError, "schema"),
    (as_json(event_id=""), ValidationError, "schema"),
    (as_json(card_id="c" * 129), ValidationError, "schema"),
    (as_json(attributes={"x": "high"}), ValidationError, "schema"),
    (as_json(attributes=None), ValidationError, "schema"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "card_id"}).encode(), ValidationError,
     "schema"),
    (as_json(channel="x" * LIMIT), OversizedError, "oversized"),
])
def test_bad_json_is_a_record_error_with_a_reason(value: bytes | None,
                                                  error: type[RecordError],
                                                  reason: str) -> None:
    with pytest.raises(error) as info:
        decode(value)
    assert info.value.reason == reason
    assert info.value.__cause__ is None  # no library exception riding along to a log


@pytest.mark.parametrize(("field", "bad"), [
    ("currency", "eur"), ("currency", "EU1"), ("currency", "ÉUR"), ("currency", "EU"),
    ("currency", ""), ("mcc", "54a1"), ("mcc", "541"), ("mcc", "\uff15\uff14\uff11\uff11"),
    ("mcc", ""), ("country", "fr"), ("country", "F1"), ("country", "ÉS"), ("country", "F"),
    ("country", ""), ("country", "Fr"),
])
def test_a_code_off_its_pattern_is_refused_alone_and_in_a_batch(field: str, bad: str) -> None:
    """Each code field's pattern holds per record and on the batch path (which checks each
    field's values joined); the error names the field, and the batch keeps the good records."""
    value = as_json(**{field: bad})
    with pytest.raises(ValidationError, match=rf"\$\.{field}`") as info:
        decode(value)
    assert info.value.reason == "schema"
    good = [as_json(event_id=f"e{n}", mcc="5411", country="FR") for n in range(3)]
    events, failures = decode.many([*good, value, *good])
    assert len(events) == 6
    assert [(position, error.reason, f"$.{field}`" in str(error))
            for position, error in failures] == [(3, "schema", True)]


@pytest.mark.parametrize("text", ["1e999", "-1e999", "1" + "0" * 400])
def test_json_cannot_carry_a_non_finite_number(text: str) -> None:
    """Why JsonDecoder may skip the finiteness check: msgspec refuses these numbers itself."""
    with pytest.raises(ValidationError, match="out of range"):
        decode(as_json().replace(b"12.5", text.encode()))
    with pytest.raises(ValidationError, match="out of range"):
        decode(as_json().replace(b'"x": 1.5', b'"x": ' + text.encode()))


def test_size_is_checked_before_parsing() -> None:
    value = as_json() + b" " * (LIMIT - len(as_json()))
    assert len(value) == LIMIT and decode(value).event_id == "e1"
    with pytest.raises(OversizedError, match=f"{LIMIT + 1} bytes"):
        decode(value + b" ")
    with pytest.raises(OversizedError):
        decode(b"\xff" * (LIMIT + 1))  # garbage, but too big is what it is first
    with pytest.raises(OversizedError):
        avro(b"\x07" * (LIMIT + 1))


# --- card numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("pan", PANS)
def test_a_card_number_in_card_id_is_refused_without_echoing_it(pan: str) -> None:
    for decoder, value in ((decode, as_json(card_id=pan)), (avro, as_avro(card_id=pan))):
        with pytest.raises(ValidationError, match="card number") as info:
            decoder(value)
        assert info.value.reason == "schema"
        assert digits(pan)[:6] not in digits(str(info.value))


@pytest.mark.parametrize("token", ["4111111111111112", "411111111111", "41111111111111111113",
                                   "card-4111111111111111", "tok_4111111111111111",
                                   "00000000000000000000"])
def test_tokens_that_are_not_card_numbers_pass(token: str) -> None:
    assert decode(as_json(card_id=token)).card_id == token


def test_luhn_check() -> None:
    assert all(looks_like_pan(p) for p in PANS)
    assert looks_like_pan("0000000000000")  # 13 zeros pass Luhn: refused, harmlessly
    assert not looks_like_pan("4111111111111112")
    assert not looks_like_pan("411111111111")  # 12 digits
    assert not looks_like_pan("4111111111111111111111")  # 22 digits
    assert not looks_like_pan("-------------")


FIELDS = ["event_id", "card_id", "merchant_id", "currency", "customer_id", "terminal_id", "mcc",
          "country", "channel", "event_time", "new_field"]


BREAKAGES = [(field, breakage) for field in FIELDS
             for breakage in ("amount", "label", "length", "syntax", "type")
             if field != "new_field" or breakage not in ("length", "type")]


@pytest.mark.parametrize("pan", PANS[:3] + PANS[5:7])
@pytest.mark.parametrize(("field", "breakage"), BREAKAGES)
def test_no_error_message_echoes_a_planted_card_number(pan: str, field: str,
                                                       breakage: str) -> None:
    doc: dict[str, Any] = {**GOOD, field: pan, "attributes": {pan: 1.0, "y": 2.0}}
    value = {
        "amount": lambda: json.dumps({**doc, "amount": -1}).encode(),
        "label": lambda: json.dumps({**doc, "label": int(digits(pan))}).encode(),
        "length": lambda: json.dumps({**doc, field: pan * 20}).encode(),
        "syntax": lambda: json.dumps(doc).encode()[:-2] + pan.encode(),
        "type": lambda: json.dumps({**doc, field: [pan, {pan: pan}]}).encode(),
    }[breakage]()
    with pytest.raises(RecordError) as info:
        decode(value)
    assert digits(pan) not in digits(str(info.value)), str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_error_message_echoes_a_card_number_from_generated_documents(data: Any) -> None:
    pan = data.draw(st.sampled_from(PANS))
    junk = st.one_of(st.just(pan), st.integers(), st.floats(), st.none(), st.booleans(),
                     st.text(max_size=4), st.lists(st.just(pan), max_size=2))
    doc = data.draw(st.fixed_dictionaries({}, optional={k: junk for k in [*GOOD, *FIELDS]}))
    try:
        decode(json.dumps(doc).encode())
    except RecordError as error:
        assert digits(pan) not in digits(str(error))


# --- Avro ---------------------------------------------------------------------------------------

def test_avro_round_trip_in_confluent_wire_format() -> None:
    value = as_avro(event_time=1_099_006_878_916)
    assert value[0] == 0 and struct.unpack(">I", value[1:5]) == (1,)
    event = avro(value)
    assert (event.event_id, event.event_time, event.attributes) == ("e1", 1_099_006_878_916,
                                                                    {"x": 1.5})
    assert avro(as_avro()) == decode(as_json())  # string event_time: same as JSON


def test_avro_timestamp_millis_stays_exact_epoch_milliseconds() -> None:
    when = dt.datetime(2004, 10, 28, 23, 41, 18, 916000, tzinfo=dt.UTC)
    assert avro(as_avro(event_time=when)).event_time == 1_099_006_878_916
    assert avro(as_avro(event_time=-1500)).event_time == -1500


def test_event_time_ms_of_an_rfc3339_time_is_exact() -> None:
    assert decode(as_json(event_time="2004-10-28T23:41:18.916Z")).event_time_ms == (
        1_099_006_878_916)


@pytest.mark.parametrize(("value", "error", "reason"), [
    (b"\x01\x00\x00\x00\x01\x02", DecodeError, "undecodable"),  # wrong magic byte
    (b"\x00", DecodeError, "undecodable"),  # short header
    (b"\x00\x00\x00\x00", DecodeError, "undecodable"),
    (b"\x00\x00\x00\x00\x01", DecodeError, "undecodable"),  # header, no body
    (b"\x00\x00\x00\x00\x07\x02e1", UnknownSchemaError, "unknown-schema"),
    (b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff", DecodeError, "undecodable"),
    (as_avro()[:-3], DecodeError, "undecodable"),  # truncated
    (as_avro() + b"\x00", DecodeError, "undecodable"),  # bytes left after the record
    (as_avro(event_time=253_402_300_800_000), DecodeError, "undecodable"),  # past 9999
    (as_avro(amount=-0.01), ValidationError, "schema"),
    (as_avro(currency="eur"), ValidationError, "schema"),
    (as_avro(label=7), ValidationError, "schema"),
    (as_avro(event_id="x" * 129), ValidationError, "schema"),
    (as_avro(event_time="yesterday"), ValidationError, "schema"),
    (as_avro(attributes={"k" * 65: 1.0}), ValidationError, "schema"),
])
def test_bad_avro_is_a_record_error_with_a_reason(value: bytes, error: type[RecordError],
                                                  reason: str) -> None:
    with pytest.raises(error) as info:
        avro(value)
    assert info.value.reason == reason


@pytest.mark.parametrize("changes", [{"amount": float("nan")}, {"amount": float("inf")},
                                     {"attributes": {"x": float("-inf")}},
                                     {"attributes": {"x": 1.0, "y": float("nan")}}])
def test_avro_doubles_can_carry_nan_or_infinity_which_are_refused(changes: dict[str, Any]
                                                                   ) -> None:
    with pytest.raises(ValidationError) as info:
        avro(as_avro(**changes))
    assert info.value.reason == "schema"


def test_avro_writer_with_extra_and_missing_fields_is_read_by_schema_resolution() -> None:
    writer = transaction_avsc()
    writer["fields"] = [f for f in writer["fields"] if f["name"] not in ("attributes", "mcc")]
    writer["fields"].insert(3, {"name": "device", "type": {"type": "map", "values": "string"}})
    writer["fields"].append({"name": "risk", "type": ["null", "double"], "default": None})
    decoder = AvroDecoder(CountingResolver({2: writer}))
    value = encode_avro({**GOOD, "device": {"os": "ios"}, "risk": 0.5},
                        fastavro.parse_schema(writer), 2)
    event = decoder(value)
    assert (event.event_id, event.attributes, event.mcc) == ("e1", {}, None)


def test_avro_writer_without_the_timestamp_logical_type_reads_the_same() -> None:
    writer = transaction_avsc()
    writer["fields"][1]["type"] = ["string", "long"]
    value = encode_avro({**GOOD, "event_time": 5}, fastavro.parse_schema(writer), 3)
    assert AvroDecoder(CountingResolver({3: writer}))(value).event_time == 5


@pytest.mark.parametrize("change", ["rename", "retype"])
def test_a_writer_schema_that_does_not_resolve_is_an_unknown_schema(change: str) -> None:
    writer = transaction_avsc()
    if change == "rename":
        writer["name"] = "Payment"
    else:
        writer["fields"][4]["type"] = "string"  # amount
    value = encode_avro({**GOOD, "amount": "12.5"} if change == "retype" else GOOD,
                        fastavro.parse_schema(writer), 4)
    with pytest.raises(UnknownSchemaError, match="does not resolve"):
        AvroDecoder(CountingResolver({4: writer}))(value)


def test_writer_schemas_are_resolved_once_per_id_and_unknown_ids_are_asked_again() -> None:
    resolver = CountingResolver({1: transaction_avsc(), 2: transaction_avsc()})
    decoder = AvroDecoder(resolver)
    for schema_id in (1, 1, 2, 1, 2):
        assert decoder(encode_avro_transaction(GOOD, schema_id)).event_id == "e1"
    for _ in range(2):
        with pytest.raises(UnknownSchemaError):
            decoder(encode_avro_transaction(GOOD, 9))
    assert resolver.calls == [1, 2, 9, 9]


def test_a_registry_outage_propagates_and_is_not_a_record_error() -> None:
    class Down:
        def schema(self, schema_id: int) -> Any:
            raise RegistryUnavailable("schema registry unreachable (injected)")

    with pytest.raises(RegistryUnavailable):
        AvroDecoder(Down())(as_avro())
    assert not issubclass(RegistryUnavailable, RecordError)


def test_local_schemas_serve_only_the_configured_id() -> None:
    local = LocalSchemas(SCHEMAS, 42)
    assert local.schema(42)["name"] == "stream_infer.Transaction"
    with pytest.raises(UnknownSchemaError):
        local.schema(1)


# --- construction and encoders -------------------------------------------------------------------

def test_make_decoder_follows_the_settings() -> None:
    json_decoder = make_decoder(DecodeSettings(max_payload_bytes=100))
    assert isinstance(json_decoder, JsonDecoder) and json_decoder.max_payload_bytes == 100
    local = make_decoder(DecodeSettings(format="avro", schema_dir=SCHEMAS, avro_schema_id=7))
    assert isinstance(local, AvroDecoder)
    assert local(encode_avro_transaction(GOOD, 7)).event_id == "e1"
    with pytest.raises(UnknownSchemaError):
        local(encode_avro_transaction(GOOD, 1))
    registry = CountingResolver({3: transaction_avsc()})
    remote = make_decoder(DecodeSettings(format="avro"), registry)
    assert remote(encode_avro_transaction(GOOD, 3)).event_id == "e1" and registry.calls == [3]


def test_encode_avro_transaction_fills_the_optional_fields() -> None:
    minimal = {k: GOOD[k] for k in ("event_id", "event_time", "card_id", "merchant_id",
                                    "amount", "currency")}
    event = avro(encode_avro_transaction(minimal))
    assert (event.attributes, event.label, event.customer_id) == ({}, None, None)


ALERT = Alert(alert_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "e1")), event_id="e1", card_id="c",
              score=0.9, threshold=0.5, model_name="m", model_version="1", event_time=1,
              scored_at=2, reasons=[Reason("amount", 10.0, 0.4), Reason("card.x", None, -0.1)])
SCORE = ScoreRecord(event_id="e1", card_id="c", score=0.1, model_name="m", model_version="1",
                    event_time=1, scored_at=2, features={"amount": 1.0, "card.x": None},
                    label=1)


@pytest.mark.parametrize("record", [ALERT, SCORE, decode(as_json())])
def test_json_encoder_writes_what_msgspec_reads_back(record: msgspec.Struct) -> None:
    encoded = JsonEncoder()(record)
    assert msgspec.json.decode(encoded, type=type(record)) == record


@pytest.mark.parametrize(("record", "avsc"), [(ALERT, "alert.avsc"), (SCORE, "score.avsc")])
def test_avro_encoder_writes_the_confluent_wire_format(record: msgspec.Struct,
                                                      avsc: str) -> None:
    schema = load_avro_schema(SCHEMAS / avsc)
    encoded = AvroEncoder(schema, 23)(record)
    assert encoded[:5] == b"\x00\x00\x00\x00\x17"
    body = fastavro.schemaless_reader(io.BytesIO(encoded[5:]), schema, None)
    assert json.loads(json.dumps(body, default=str)) == msgspec.to_builtins(record)


def test_avro_encoder_and_decoder_round_trip_a_transaction() -> None:
    event = decode(as_json(label=0, mcc="5411", customer_id="u"))
    encoded = AvroEncoder(transaction_avsc(), 1)(event)
    assert avro(encoded) == event


# --- robustness ---------------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_record_errors(value: bytes) -> None:
    for decoder, candidate in ((decode, value), (avro, value), (avro, b"\x00\x00\x00\x00\x01"
                                                                + value)):
        with contextlib.suppress(RecordError):
            decoder(candidate)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=8), st.integers(0, 200))
def test_truncated_and_corrupted_avro_only_raise_record_errors(noise: bytes, at: int) -> None:
    value = bytearray(as_avro(customer_id="u", label=1, mcc="5411"))
    at = 5 + at % (len(value) - 5)
    corrupted = value[:at] + noise + value[at + len(noise):]
    for candidate in (bytes(corrupted), bytes(value[:at])):
        with contextlib.suppress(RecordError):
            avro(candidate)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "label", "mcc", "attributes", "x"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                                    | st.text(max_size=20),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                                    max_leaves=8)))
def test_arbitrary_json_documents_decode_or_raise_record_errors(doc: dict[str, Any]) -> None:
    value = json.dumps({**GOOD, **doc}).encode()
    with contextlib.suppress(RecordError):
        assert isinstance(decode(value), Transaction)
