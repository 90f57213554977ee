"""schemas/ is the source of truth: the decoder and the schema files must agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.decode import JsonDecoder, encode_avro_transaction
from stream_infer.errors import RecordError
from stream_infer.records import Alert, Reason, ScoreRecord, Transaction

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


# The one documented reading of the schema: "integer" means an integer JSON token (1, not 1.0),
# as in schemas/README.md; JSON Schema alone would also accept 1.0.
_Strict = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    ),
)
TX_SCHEMA = _Strict(schema("transaction.schema.json"), format_checker=jsonschema.FormatChecker())
decode = JsonDecoder(max_payload_bytes=1 << 20)
BASE = {"event_id": "e", "event_time": 1, "card_id": "c", "merchant_id": "m", "amount": 1.0,
        "currency": "EUR"}

EDGE_CASES: list[dict[str, Any]] = [
    BASE,
    {**BASE, "event_time": "2026-01-01T00:00:00+02:00"},
    {**BASE, "event_time": "2026-01-01T00:00:00"}, {**BASE, "event_time": "2026-01-01"},
    {**BASE, "amount": 0}, {**BASE, "amount": -0.01}, {**BASE, "amount": 1e-9},
    {**BASE, "currency": "EU"}, {**BASE, "currency": "EURO"}, {**BASE, "currency": "eur"},
    {**BASE, "event_id": ""}, {**BASE, "event_id": "x" * 128}, {**BASE, "event_id": "x" * 129},
    {**BASE, "mcc": "541"}, {**BASE, "mcc": "5411"}, {**BASE, "mcc": None},
    {**BASE, "country": "fr"}, {**BASE, "country": "FR"},
    {**BASE, "label": 0}, {**BASE, "label": 1}, {**BASE, "label": 2}, {**BASE, "label": -1},
    {**BASE, "label": None}, {**BASE, "channel": "c" * 64}, {**BASE, "channel": "c" * 65},
    {**BASE, "attributes": {"a": 1, "b": 2.5}}, {**BASE, "attributes": {"a": "1"}},
    {**BASE, "attributes": {"k" * 65: 1}}, {**BASE, "attributes": []},
    {**BASE, "customer_id": ""}, {**BASE, "unknown": {"any": "thing"}},
    {k: v for k, v in BASE.items() if k != "merchant_id"},
    {**BASE, "amount": "1.0"}, {**BASE, "event_time": 1.5}, {**BASE, "card_id": 5},
    {**BASE, "label": True}, {**BASE, "event_time": 5.0},
]


def accepted_by_schema(doc: Any) -> bool:
    return TX_SCHEMA.is_valid(doc)


def accepted_by_decoder(doc: Any) -> bool:
    try:
        decode(json.dumps(doc).encode())
    except RecordError:
        return False
    return True


@pytest.mark.parametrize("doc", EDGE_CASES, ids=lambda d: json.dumps(d)[:60])
def test_schema_and_decoder_agree_on_edge_cases(doc: dict[str, Any]) -> None:
    assert accepted_by_schema(doc) == accepted_by_decoder(doc)


values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2),
                   st.text(alphabet="AEFRUXYZ0123456789-", max_size=5))


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: values for k in [*BASE, "label", "mcc", "country"]}))
def test_schema_and_decoder_agree_on_generated_documents(mutation: dict[str, Any]) -> None:
    doc = {**BASE, **mutation}
    assert accepted_by_schema(doc) == accepted_by_decoder(doc)


def test_avro_schema_has_exactly_the_transaction_fields_with_matching_optionality() -> None:
    fields = {f["name"]: f for f in schema("transaction.avsc")["fields"]}
    assert list(fields) == list(Transaction.__struct_fields__)
    required = set(schema("transaction.schema.json")["required"])
    for name, field in fields.items():
        optional = isinstance(field["type"], list) and "null" in field["type"]
        assert optional == (name not in required and name != "attributes"), name
    assert set(schema("transaction.schema.json")["properties"]) == set(fields)


def test_avro_encoding_of_a_valid_event_decodes_to_the_same_transaction() -> None:
    from stream_infer.decode import AvroDecoder, LocalSchemas

    doc = {**BASE, "label": 1, "mcc": "5411", "attributes": {"a": 2.0}}
    value = encode_avro_transaction(doc)
    assert AvroDecoder(LocalSchemas(SCHEMAS, 1), SCHEMAS)(value) == decode(json.dumps(doc).encode())


@pytest.mark.parametrize(("struct", "json_schema", "avsc"), [
    (Alert(alert_id="6f1d4f0e-2b8a-5c47-9a53-3d0c2f9b7e11", event_id="e", card_id="c",
           score=0.9, threshold=0.5, model_name="m", model_version="1", event_time=1,
           scored_at=2, reasons=[Reason("amount", 10.0, 0.4), Reason("card.x", None, -0.1)]),
     "alert.schema.json", "alert.avsc"),
    (ScoreRecord(event_id="e", card_id="c", score=0.1, model_name="m", model_version="1",
                 event_time=1, scored_at=2, features={"amount": 1.0, "card.x": None}, label=1),
     "score.schema.json", "score.avsc"),
])
def test_output_records_match_their_json_and_avro_schemas(struct: msgspec.Struct,
                                                          json_schema: str, avsc: str) -> None:
    doc = json.loads(msgspec.json.encode(struct))
    jsonschema.validate(doc, schema(json_schema), format_checker=jsonschema.FormatChecker())
    declared = schema(json_schema)
    assert set(doc) == set(declared["properties"]) == set(declared["required"])
    parsed = fastavro.parse_schema(schema(avsc))
    assert [f["name"] for f in schema(avsc)["fields"]] == list(type(struct).__struct_fields__)
    assert fastavro.validate(doc, parsed, raise_errors=True)


def test_an_alert_missing_a_field_fails_its_schema() -> None:
    doc = {"alert_id": "x"}
    assert not jsonschema.Draft202012Validator(schema("alert.schema.json")).is_valid(doc)
