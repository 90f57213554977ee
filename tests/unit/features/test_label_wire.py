"""Labels on the wire: ``schemas/label.schema.json`` and ``label.avsc``, the
:class:`~stream_infer.records.LabelRecord` they describe, and its JSON and Avro decoders,
which refuse a bad label with the reasons a bad transaction gets."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.config import DecodeSettings
from stream_infer.decode import (
    AvroLabelDecoder,
    JsonLabelDecoder,
    LocalSchemas,
    encode_avro,
    encode_avro_label,
    encode_avro_transaction,
    make_label_decoder,
)
from stream_infer.errors import RecordError
from stream_infer.features import Label
from stream_infer.records import LabelRecord
from tests.unit.test_schema_contract import (
    FORMATS,
    _assert_record_matches,
    _Strict,
    as_the_schema_reads_it,
    declared,
    generated,
    is_card_number,
    schema,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
LABEL_SCHEMA = _Strict(schema("label.schema.json"), format_checker=FORMATS)
LIMIT = 4096
json_label = JsonLabelDecoder(LIMIT)
avro_label = AvroLabelDecoder(LocalSchemas(SCHEMAS, 2, "label.avsc"), LIMIT, schema_dir=SCHEMAS)
BASE: dict[str, Any] = {"event_id": "ev-1", "label": 1, "label_time": 1_700_000_000_000}
FULL: dict[str, Any] = {**BASE, "event_time": "2023-11-14T22:13:20+01:00", "card_id": "tok-9",
                        "merchant_id": "m-1", "customer_id": "c-1", "terminal_id": "t-1"}
PAN = "4111 1111 1111 1111"


def reason(decode: Any, value: bytes | None) -> str:
    with pytest.raises(RecordError) as caught:
        decode(value)
    return caught.value.reason


def accepted_by_decoder(doc: Any) -> bool:
    try:
        json_label(json.dumps(doc).encode())
    except RecordError:
        return False
    return True


def accepted_by_schema(doc: Any) -> bool:
    card = doc.get("card_id") if isinstance(doc, dict) else None
    return LABEL_SCHEMA.is_valid(as_the_schema_reads_it_label(doc)) and not is_card_number(card)


def as_the_schema_reads_it_label(doc: Any) -> Any:
    """The decoder's documented datetime leniency, rewritten into RFC 3339 (both times)."""
    if not isinstance(doc, dict):
        return doc
    for name in ("label_time", "event_time"):
        if isinstance(doc.get(name), str):
            doc = {**doc, name: as_the_schema_reads_it({"event_time": doc[name]})["event_time"]}
    return doc


@pytest.mark.parametrize("doc", [
    BASE, FULL, {**BASE, "label": 0}, {**BASE, "label_time": "2026-01-01T00:00:00Z"},
    {**BASE, "unknown": [1, 2]}, {**BASE, "event_time": None, "card_id": None},
])
def test_valid_labels_decode_from_json_and_avro_to_the_same_record(doc: dict[str, Any]) -> None:
    label = json_label(json.dumps(doc).encode())
    assert LABEL_SCHEMA.is_valid(doc)
    wire = {k: v for k, v in doc.items() if k != "unknown"}
    assert avro_label(encode_avro_label(wire, 2, SCHEMAS)) == label
    assert (label.event_id, label.label) == (doc["event_id"], doc["label"])


def test_a_label_becomes_the_engines_label_with_its_time_in_epoch_ms() -> None:
    label = json_label(json.dumps({**BASE, "label_time": "1970-01-01T00:00:01.5+00:00"}).encode())
    assert label.label_time_ms == 1500
    assert Label(label.event_id, label.label, label.label_time_ms) == Label("ev-1", 1, 1500)
    assert json_label(json.dumps(BASE).encode()).label_time_ms == BASE["label_time"]


@pytest.mark.parametrize(("value", "expected"), [
    (None, "undecodable"), (b"", "undecodable"), (b"not json", "undecodable"),
    (b'{"event_id": "e", "label": 1', "undecodable"), (b'{"event_id": "\xff"}', "undecodable"),
    (b"{" + b" " * LIMIT + b"}", "oversized"),
    (json.dumps({**BASE, "label": 2}).encode(), "schema"),
    (json.dumps({**BASE, "label": -1}).encode(), "schema"),
    (json.dumps({**BASE, "label": "1"}).encode(), "schema"),
    (json.dumps({**BASE, "label": 1.0}).encode(), "schema"),
    (json.dumps({**BASE, "label": True}).encode(), "schema"),
    (json.dumps({k: v for k, v in BASE.items() if k != "label_time"}).encode(), "schema"),
    (json.dumps({k: v for k, v in BASE.items() if k != "event_id"}).encode(), "schema"),
    (json.dumps({**BASE, "event_id": ""}).encode(), "schema"),
    (json.dumps({**BASE, "event_id": "x" * 129}).encode(), "schema"),
    (json.dumps({**BASE, "label_time": "2026-01-01T00:00:00"}).encode(), "schema"),
    (json.dumps({**BASE, "label_time": 1.5}).encode(), "schema"),
    (json.dumps({**BASE, "label_time": 2**63}).encode(), "schema"),
    (json.dumps({**BASE, "event_time": "yesterday"}).encode(), "schema"),
    (json.dumps({**BASE, "card_id": PAN}).encode(), "schema"),
    (json.dumps([BASE]).encode(), "schema"),
])
def test_bad_json_labels_are_refused_with_the_transaction_reasons(value: bytes | None,
                                                                  expected: str) -> None:
    assert reason(json_label, value) == expected


def test_a_refused_label_never_echoes_a_card_number() -> None:
    with pytest.raises(RecordError) as caught:
        json_label(json.dumps({**BASE, "card_id": PAN}).encode())
    assert "4111" not in str(caught.value)


def avro_writer(record: dict[str, Any]) -> Any:
    return fastavro.parse_schema(record)


def test_bad_avro_labels_are_refused_with_the_transaction_reasons() -> None:
    good = encode_avro_label(BASE, 2, SCHEMAS)
    assert reason(avro_label, None) == "undecodable"
    assert reason(avro_label, b"\x00\x00") == "undecodable"
    assert reason(avro_label, b"\x01" + good[1:]) == "undecodable"
    assert reason(avro_label, good + b"\x00") == "undecodable"
    assert reason(avro_label, good[:-3]) == "undecodable"
    assert reason(avro_label, struct.pack(">bI", 0, 7) + good[5:]) == "unknown-schema"
    assert reason(avro_label, good + b"\x00" * LIMIT) == "oversized"
    assert reason(avro_label, encode_avro_label({**BASE, "label": 3}, 2, SCHEMAS)) == "schema"
    assert reason(avro_label, encode_avro_label({**BASE, "event_id": ""}, 2, SCHEMAS)) == "schema"
    assert reason(avro_label, encode_avro_label({**BASE, "card_id": PAN}, 2, SCHEMAS)) == "schema"


def test_an_avro_writer_schema_that_is_not_a_label_is_an_unknown_schema() -> None:
    transaction = {"event_id": "e", "event_time": 1, "card_id": "c", "merchant_id": "m",
                   "amount": 1.0, "currency": "EUR"}
    decoder = AvroLabelDecoder(LocalSchemas(SCHEMAS, 1), LIMIT, schema_dir=SCHEMAS)
    with pytest.raises(RecordError) as caught:
        decoder(encode_avro_transaction(transaction, 1, SCHEMAS))
    assert caught.value.reason == "unknown-schema"
    assert "stream_infer.LabelRecord" in str(caught.value)


def test_an_older_writer_schema_with_fewer_fields_resolves_to_the_label() -> None:
    writer = {"type": "record", "name": "LabelRecord", "namespace": "stream_infer", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "label", "type": "int"},
        {"name": "label_time", "type": "long"}, {"name": "source", "type": "string"}]}

    class Registry:
        def schema(self, schema_id: int) -> Any:
            return avro_writer(writer)

    decoder = AvroLabelDecoder(Registry(), LIMIT, schema_dir=SCHEMAS)
    value = encode_avro({**BASE, "source": "chargebacks"}, avro_writer(writer), 9)
    assert decoder(value) == LabelRecord("ev-1", 1, BASE["label_time"])


def test_the_settings_choose_the_label_decoder() -> None:
    assert isinstance(make_label_decoder(DecodeSettings()), JsonLabelDecoder)
    avro = make_label_decoder(DecodeSettings(format="avro", schema_dir=SCHEMAS), schema_id=5)
    assert avro(encode_avro_label(BASE, 5, SCHEMAS)) == LabelRecord("ev-1", 1, BASE["label_time"])
    assert reason(avro, encode_avro_label(BASE, 2, SCHEMAS)) == "unknown-schema"


# The schema contract, as tests/unit/test_schema_contract.py proves it for transactions.

def test_the_label_schema_states_exactly_the_struct_constraints() -> None:
    """msgspec's own JSON Schema for LabelRecord, against ours: the only differences are
    these additions, each stating what msgspec enforces without a keyword for it."""
    ours, theirs = declared("label.schema.json"), generated(LabelRecord)
    assert theirs - ours == set()
    assert {fact[:-1] for fact in ours - theirs} == {
        ("object", "additionalProperties"),  # true: unknown fields are ignored
        ("object", "label_time", "string", "pattern"),  # RFC 3339 syntax, if format is off
        ("object", "event_time", "string", "pattern"),
    }


def test_the_label_avro_schema_has_the_struct_fields_types_and_defaults() -> None:
    record = schema("label.avsc")
    assert (record["namespace"], record["name"]) == ("stream_infer", "LabelRecord")
    _assert_record_matches(LabelRecord, record)
    fastavro.parse_schema(record)
    times = {f["name"]: f["type"] for f in record["fields"] if f["name"].endswith("_time")}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert times == {"label_time": [millis, "string"], "event_time": ["null", millis, "string"]}


def test_the_label_json_schema_is_valid_draft_2020_12_and_requires_the_struct_fields() -> None:
    jsonschema.Draft202012Validator.check_schema(schema("label.schema.json"))
    info = msgspec.inspect.type_info(LabelRecord)
    assert isinstance(info, msgspec.inspect.StructType)
    required = [f.name for f in info.fields if f.required]
    assert schema("label.schema.json")["required"] == required == ["event_id", "label",
                                                                    "label_time"]


TIMES = st.one_of(st.integers(-62_135_596_800_001, 253_402_300_800_000),
                  st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
                                   "2026-01-01 00:00:00+02:00", "2026-13-01T00:00:00Z",
                                   "2026-01-01T00:00:00+0200", ""]),
                  st.floats(allow_nan=False), st.none(), st.booleans())
IDS = st.one_of(st.text(max_size=3), st.text(min_size=127, max_size=130), st.none(),
                st.integers(), st.sampled_from([PAN, "4111111111111112", "tok"]))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": IDS, "label": st.one_of(st.integers(-2, 3), st.floats(0, 1), st.booleans(),
                                        st.none(), st.text(max_size=1)),
    "label_time": TIMES, "event_time": TIMES, "card_id": IDS, "merchant_id": IDS,
    "customer_id": IDS, "terminal_id": IDS,
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """FULL with up to three fields changed to a near-valid value, or dropped."""
    doc: dict[str, Any] = dict(FULL)
    for name in draw(st.lists(st.sampled_from(list(FIELDS)), max_size=3, unique=True)):
        if draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(FIELDS[name])
    return doc


@settings(max_examples=500, deadline=None)
@given(documents())
def test_the_schema_and_the_json_decoder_agree_on_generated_labels(doc: dict[str, Any]) -> None:
    assert accepted_by_decoder(doc) == accepted_by_schema(doc)


@settings(max_examples=200, deadline=None)
@given(documents())
def test_avro_and_json_decode_a_valid_label_to_the_same_record(doc: dict[str, Any]) -> None:
    if not accepted_by_decoder(doc):
        return
    assert avro_label(encode_avro_label(doc, 2, SCHEMAS)) == json_label(json.dumps(doc).encode())


def test_encoded_labels_validate_against_both_schemas() -> None:
    record = json_label(json.dumps(FULL).encode())
    doc = json.loads(msgspec.json.encode(record))
    LABEL_SCHEMA.validate(doc)
    parsed = fastavro.parse_schema(schema("label.avsc"))
    body = encode_avro_label(doc, 2, SCHEMAS)[5:]
    read = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
    assert read["event_id"] == "ev-1" and read["label"] == 1
