"""schemas/ is the source of truth: the schema files, records.py and the decoders must agree."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stream_infer.decode import AvroDecoder, AvroEncoder, JsonDecoder, LocalSchemas
from stream_infer.decode import encode_avro_transaction as to_avro
from stream_infer.errors import RecordError
from stream_infer.records import Alert, Reason, ScoreRecord, Transaction

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return doc


# "integer" means an integer JSON token (1, not 1.0), as schemas/README.md says; JSON Schema
# alone would also accept 1.0. `format` is asserted.
_Strict = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    ),
)
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
TX_SCHEMA = _Strict(schema("transaction.schema.json"), format_checker=FORMATS)
decode = JsonDecoder(max_payload_bytes=1 << 20)
avro = AvroDecoder(LocalSchemas(SCHEMAS, 1), max_payload_bytes=1 << 20)
BASE = {"event_id": "e", "event_time": 1, "card_id": "c", "merchant_id": "m", "amount": 1.0,
        "currency": "EUR"}
MAX = 1.7976931348623157e308
FIRST_MS, LAST_MS = -62_135_596_800_000, 253_402_300_799_999


def is_card_number(value: object) -> bool:
    """The schema's card_id rule, written independently of stream_infer.decode."""
    if not isinstance(value, str):
        return False
    digits = [int(c) for c in re.sub("[ -]", "", value) if c.isdecimal()][::-1]
    if len(digits) != len(re.sub("[ -]", "", value)) or not 13 <= len(digits) <= 19:
        return False
    return (sum(digits[0::2]) + sum(d * 2 - 9 * (d > 4) for d in digits[1::2])) % 10 == 0


def accepted_by_schema(doc: Any) -> bool:
    card = doc.get("card_id") if isinstance(doc, dict) else None
    return TX_SCHEMA.is_valid(doc) and not is_card_number(card)


def accepted_by_decoder(doc: Any) -> bool:
    try:
        decode(json.dumps(doc).encode())
    except RecordError:
        return False
    return True


def as_the_schema_reads_it(doc: dict[str, Any]) -> dict[str, Any]:
    """The decoder's documented leniency (schemas/README.md), rewritten into RFC 3339."""
    when = doc.get("event_time")
    if not isinstance(when, str):
        return doc
    when = re.sub(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}) ", r"\1T", when)
    return {**doc, "event_time": re.sub(r"([+-][0-9]{2})([0-9]{2})$", r"\1:\2", when)}


EDGE_CASES: list[tuple[dict[str, Any], bool]] = [
    (BASE, True),
    ({**BASE, "event_time": "2026-01-01T00:00:00+02:00"}, True),
    ({**BASE, "event_time": "2026-01-01t00:00:00.123456789z"}, True),
    ({**BASE, "event_time": "2026-01-01T00:00:00-00:00"}, True),
    ({**BASE, "event_time": "2024-02-29T23:59:59+23:59"}, True),
    ({**BASE, "event_time": "2023-02-29T00:00:00Z"}, False),
    ({**BASE, "event_time": "2026-12-31T23:59:60Z"}, False),
    ({**BASE, "event_time": "2026-01-01T24:00:00Z"}, False),
    ({**BASE, "event_time": "2026-01-01T00:00:00+24:00"}, False),
    ({**BASE, "event_time": "0000-01-01T00:00:00Z"}, False),
    ({**BASE, "event_time": "0001-01-01T00:00:00Z"}, True),
    ({**BASE, "event_time": "2026-01-01T00:00:00"}, False),
    ({**BASE, "event_time": "2026-01-01T00:00Z"}, False),
    ({**BASE, "event_time": "2026-01-01T00:00:00+02"}, False),
    ({**BASE, "event_time": "2026-01-01T00:00:00.Z"}, False),
    ({**BASE, "event_time": "2026-01-01"}, False),
    ({**BASE, "event_time": ""}, False),
    ({**BASE, "event_time": FIRST_MS}, True), ({**BASE, "event_time": FIRST_MS - 1}, False),
    ({**BASE, "event_time": LAST_MS}, True), ({**BASE, "event_time": LAST_MS + 1}, False),
    ({**BASE, "event_time": 2**64}, False), ({**BASE, "event_time": -1}, True),
    ({**BASE, "event_time": 1.5}, False), ({**BASE, "event_time": 5.0}, False),
    ({**BASE, "event_time": True}, False), ({**BASE, "event_time": None}, False),
    ({**BASE, "amount": 0}, True), ({**BASE, "amount": 0.0}, True),
    ({**BASE, "amount": -0.0}, True), ({**BASE, "amount": -5e-324}, False),
    ({**BASE, "amount": -0.01}, False), ({**BASE, "amount": 5e-324}, True),
    ({**BASE, "amount": 7}, True), ({**BASE, "amount": MAX}, True),
    ({**BASE, "amount": 10**400}, False), ({**BASE, "amount": "1.0"}, False),
    ({**BASE, "amount": True}, False),
    ({**BASE, "currency": "EU"}, False), ({**BASE, "currency": "EURO"}, False),
    ({**BASE, "currency": "eur"}, False), ({**BASE, "currency": "EUR\n"}, False),
    ({**BASE, "currency": "ÉUR"}, False),
    ({**BASE, "event_id": ""}, False), ({**BASE, "event_id": "x" * 128}, True),
    ({**BASE, "event_id": "x" * 129}, False), ({**BASE, "event_id": "😀" * 128}, True),
    ({**BASE, "event_id": "😀" * 129}, False), ({**BASE, "event_id": "\x00"}, True),
    ({**BASE, "card_id": 5}, False), ({**BASE, "card_id": "4111111111111111"}, False),
    ({**BASE, "card_id": "4111-1111-1111-1111"}, False),
    ({**BASE, "card_id": "4111111111111112"}, True),
    ({**BASE, "mcc": "541"}, False), ({**BASE, "mcc": "5411"}, True),
    ({**BASE, "mcc": "5411\n"}, False), ({**BASE, "mcc": "٥٤١١"}, False),
    ({**BASE, "mcc": None}, True), ({**BASE, "mcc": 5411}, False),
    ({**BASE, "country": "fr"}, False), ({**BASE, "country": "FR"}, True),
    ({**BASE, "country": "FR\n"}, False),
    ({**BASE, "label": 0}, True), ({**BASE, "label": 1}, True), ({**BASE, "label": 2}, False),
    ({**BASE, "label": -1}, False), ({**BASE, "label": None}, True),
    ({**BASE, "label": True}, False), ({**BASE, "label": 1.0}, False),
    ({**BASE, "channel": ""}, True), ({**BASE, "channel": "c" * 64}, True),
    ({**BASE, "channel": "c" * 65}, False),
    ({**BASE, "attributes": {}}, True), ({**BASE, "attributes": {"a": 1, "b": -2.5}}, True),
    ({**BASE, "attributes": {"a": "1"}}, False), ({**BASE, "attributes": {"a": None}}, False),
    ({**BASE, "attributes": {"a": True}}, False), ({**BASE, "attributes": {"a": 10**400}}, False),
    ({**BASE, "attributes": {"k" * 64: 1}}, True), ({**BASE, "attributes": {"k" * 65: 1}}, False),
    ({**BASE, "attributes": {f"k{i}": 1 for i in range(256)}}, True),
    ({**BASE, "attributes": {f"k{i}": 1 for i in range(257)}}, False),
    ({**BASE, "attributes": []}, False), ({**BASE, "attributes": None}, False),
    ({**BASE, "customer_id": ""}, False), ({**BASE, "customer_id": None}, True),
    ({**BASE, "terminal_id": "t" * 129}, False),
    ({**BASE, "unknown": {"any": "thing"}}, True),
    ({k: v for k, v in BASE.items() if k != "merchant_id"}, False),
]


@pytest.mark.parametrize(("doc", "accepted"), EDGE_CASES, ids=lambda d: json.dumps(d)[:70])
def test_schema_and_decoder_agree_on_edge_cases(doc: dict[str, Any], accepted: bool) -> None:
    assert (accepted_by_schema(doc), accepted_by_decoder(doc)) == (accepted, accepted)


@pytest.mark.parametrize(("doc", "by_decoder", "by_schema"), [
    # msgspec's datetime parser: leniency documented in schemas/README.md
    ({**BASE, "event_time": "2026-01-01 00:00:00Z"}, True, False),
    ({**BASE, "event_time": "2026-01-01T00:00:00+0200"}, True, False),
    # an instant past 9999-12-31 once rounded to microseconds
    ({**BASE, "event_time": "9999-12-31T23:59:59.9999999Z"}, False, True),
    # Python's `$` matches before a final newline; ECMA-262 validators reject this too
    ({**BASE, "event_time": "2026-01-01T00:00:00Z\n"}, False, True),
    # an integer just above the largest double, which msgspec rounds down to it
    ({**BASE, "amount": 17976931348623158 * 10**292}, True, False),
])
def test_the_known_disagreements_are_exactly_these(doc: dict[str, Any], by_decoder: bool,
                                                   by_schema: bool) -> None:
    assert (accepted_by_decoder(doc), accepted_by_schema(doc)) == (by_decoder, by_schema)


junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3),
                 st.floats(allow_nan=False, allow_infinity=False), st.just([]), st.just({}))


def sized(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high)


def near(length: int) -> st.SearchStrategy[str]:
    return st.integers(max(length - 2, 0), length + 2).map(lambda n: "x" * n)


def mostly(valid: st.SearchStrategy[Any], *edges: Any) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, else one of the ``edges``."""
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(edges) if n == 0 else valid)


timestamps = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    mostly(st.integers(1, 9998), 0, 1, 9998), mostly(st.integers(1, 12), 0, 13),
    mostly(st.integers(1, 28), 0, 29, 30, 31, 32), mostly(st.just("T"), "t", " ", "_"),
    mostly(st.integers(0, 23), 24), mostly(st.integers(0, 59), 60),
    mostly(st.integers(0, 59), 60, 61),
    st.sampled_from(["", ".", ".5", ".123", ".123456", ".1234567895"]),
    mostly(st.sampled_from(["Z", "+00:00", "+05:30", "-23:59"]), "z", "", "-00:00", "+24:00",
           "+05:60", "+0530", "+05", "Z "),
)
ids = st.one_of(sized("ab1 -é", 0, 3), near(128), st.sampled_from(
    ["4111111111111111", "4111 1111 1111 1111", "4111111111111112", "5500-0000-0000-0004"]))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": ids, "card_id": ids, "merchant_id": ids, "customer_id": ids | st.none(),
    "terminal_id": ids | st.none(),
    "event_time": st.one_of(timestamps, timestamps, timestamps, st.integers(),
                            st.integers(FIRST_MS - 2, FIRST_MS + 2),
                            st.integers(LAST_MS - 2, LAST_MS + 2), st.text(max_size=25)),
    "amount": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(),
                        st.sampled_from([0, -0.0, 5e-324, MAX, 10**309])),
    "currency": sized("EURusd\n ", 2, 4), "mcc": sized("0159a\n", 3, 5) | st.none(),
    "country": sized("FRfr\n", 1, 3) | st.none(), "channel": near(64) | st.none(),
    "label": st.one_of(st.integers(-1, 2), st.none(), st.just(1.0)),
    "attributes": st.one_of(
        st.dictionaries(st.text("k", max_size=66), st.floats(allow_nan=False,
                                                             allow_infinity=False)
                        | st.integers() | junk, max_size=3),
        st.integers(255, 257).map(lambda n: {f"k{i}": 1.0 for i in range(n)})),
    "extra": st.dictionaries(st.text(max_size=3), junk, max_size=2),
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """BASE with up to three fields changed: to a near-valid value, to junk, or dropped."""
    doc: dict[str, Any] = dict(BASE)
    for name in draw(st.lists(st.sampled_from(list(FIELDS)), max_size=3, unique=True)):
        how = draw(st.sampled_from(["value", "value", "value", "junk", "drop"]))
        if how == "drop":
            doc.pop(name, None)
        else:
            doc[name] = draw(FIELDS[name] if how == "value" else junk)
    return doc


one_field_changed = st.sampled_from(list(FIELDS)).flatmap(
    lambda name: FIELDS[name].map(lambda value: {**BASE, name: value}))


@settings(max_examples=1000, deadline=None)
@given(st.one_of(timestamps.map(lambda t: {**BASE, "event_time": t}), one_field_changed))
def test_schema_and_decoder_agree_on_each_generated_field(doc: dict[str, Any]) -> None:
    assert accepted_by_decoder(doc) == accepted_by_schema(as_the_schema_reads_it(doc))


@settings(max_examples=1000, deadline=None)
@given(documents())
def test_schema_and_decoder_agree_on_generated_documents(doc: dict[str, Any]) -> None:
    assert accepted_by_decoder(doc) == accepted_by_schema(as_the_schema_reads_it(doc))


@settings(max_examples=300, deadline=None)
@given(documents())
def test_avro_and_json_decode_a_valid_document_to_the_same_transaction(doc: dict[str,
                                                                           Any]) -> None:
    assume(accepted_by_decoder(doc))
    assert avro(to_avro(doc)) == decode(json.dumps(doc).encode())


def _flatten(node: Any, defs: dict[str, Any], path: tuple[str, ...] = ()) -> set[tuple[Any, ...]]:
    """A schema as a set of (path..., type[, keyword, value]) facts, whatever its spelling."""
    if "$ref" in node:
        return _flatten(defs[node["$ref"].rsplit("/", 1)[1]], defs, path)
    facts: set[tuple[Any, ...]] = set()
    for branch in node.get("anyOf", node.get("oneOf", [node])):
        branch = defs[branch["$ref"].rsplit("/", 1)[1]] if "$ref" in branch else branch
        types = branch["type"] if isinstance(branch["type"], list) else [branch["type"]]
        for kind in types:
            at = (*path, kind)
            facts.add(at)
            for key, value in branch.items():
                if key in ("properties",) and kind == "object":
                    for name, sub in value.items():
                        facts |= _flatten(sub, defs, (*at, name))
                elif key in ("items", "additionalProperties") and isinstance(value, dict):
                    facts |= _flatten(value, defs, (*at, key))
                elif key == "required" and kind == "object":
                    facts.add((*at, key, tuple(sorted(value))))
                elif key not in ("type", "title", "description", "default", "$schema", "$id",
                                 "anyOf", "oneOf") and _applies(key, kind):
                    facts.add((*at, key, json.dumps(value, sort_keys=True)))
    return facts


def _applies(keyword: str, kind: str) -> bool:
    """Whether a JSON Schema keyword constrains values of this type."""
    by_type = {"string": ("Length", "pattern", "format"), "array": ("Items",),
               "integer": ("imum",), "number": ("imum",),
               "object": ("Properties", "propertyNames", "additionalProperties")}
    return any(part in keyword for part in by_type.get(kind, ()))


def generated(struct: type[msgspec.Struct]) -> set[tuple[Any, ...]]:
    doc = msgspec.json.schema(struct)
    return _flatten(doc, doc["$defs"])


def declared(name: str) -> set[tuple[Any, ...]]:
    return _flatten(schema(name), {})


def test_transaction_schema_states_exactly_the_struct_constraints() -> None:
    """msgspec's own JSON Schema for Transaction, against ours: the only differences are these
    additions, each stating what msgspec enforces without a keyword for it."""
    extra = {fact[:-1] for fact in declared("transaction.schema.json") - generated(Transaction)}
    assert generated(Transaction) - declared("transaction.schema.json") == set()
    assert extra == {
        ("object", "additionalProperties"),  # true: unknown fields are ignored
        ("object", "event_time", "string", "pattern"),  # RFC 3339 syntax, if format is off
        ("object", "amount", "number", "maximum"),  # finite
        ("object", "attributes", "object", "additionalProperties", "number", "minimum"),
        ("object", "attributes", "object", "additionalProperties", "number", "maximum"),
    }


@pytest.mark.parametrize(("struct", "name", "additions"), [
    (Alert, "alert.schema.json", {
        ("object", "additionalProperties"), ("object", "required"),
        ("object", "alert_id", "string", "format"),
        ("object", "score", "number", "minimum"), ("object", "score", "number", "maximum"),
        ("object", "reasons", "array", "items", "object", "additionalProperties"),
    }),
    (ScoreRecord, "score.schema.json", {
        ("object", "additionalProperties"), ("object", "required"),
        ("object", "score", "number", "minimum"), ("object", "score", "number", "maximum"),
    }),
])
def test_output_schemas_state_the_struct_types(struct: type[msgspec.Struct], name: str,
                                               additions: set[tuple[str, ...]]) -> None:
    """Types match exactly; the outputs' schemas add a few rules on what we promise to emit:
    every field, nothing else, a UUID alert id, a probability score."""
    ours, theirs = declared(name), generated(struct)
    assert {fact[:-1] for fact in ours - theirs} == additions
    assert {fact[:-1] for fact in theirs - ours} == {("object", "required")}
    assert schema(name)["required"] == list(struct.__struct_fields__)


def _avro_types(avro_type: Any) -> set[str]:
    if isinstance(avro_type, list):
        return set().union(*map(_avro_types, avro_type))
    if isinstance(avro_type, str):
        return {avro_type}
    kind = avro_type["type"]
    if kind == "map":
        return {f"map<{'|'.join(sorted(_avro_types(avro_type['values'])))}>"}
    if kind == "array":
        return {f"array<{'|'.join(sorted(_avro_types(avro_type['items'])))}>"}
    return {"record:" + avro_type["name"]} if kind == "record" else {kind}


def _python_types(t: msgspec.inspect.Type) -> set[str]:
    """The Avro type each msgspec type needs: int only when its bounds fit 32 bits."""
    mi = msgspec.inspect
    if isinstance(t, mi.Metadata):  # schema-only facts (a pattern decode.check_codes enforces)
        return _python_types(t.type)
    if isinstance(t, mi.UnionType):
        return set().union(*map(_python_types, t.types))
    if isinstance(t, mi.IntType):
        fits = t.ge is not None and t.le is not None and t.ge >= -(2**31) and t.le < 2**31
        return {"int" if fits else "long"}
    if isinstance(t, mi.DictType):
        assert isinstance(t.key_type, mi.StrType)
        return {f"map<{'|'.join(sorted(_python_types(t.value_type)))}>"}
    if isinstance(t, mi.ListType):
        return {f"array<{'|'.join(sorted(_python_types(t.item_type)))}>"}
    if isinstance(t, mi.StructType):
        return {"record:" + t.cls.__name__}
    simple = {mi.StrType: "string", mi.FloatType: "double", mi.BoolType: "boolean",
              mi.NoneType: "null", mi.DateTimeType: "string"}
    return {simple[type(t)]}


def _assert_record_matches(struct: type[msgspec.Struct], record: dict[str, Any]) -> None:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f["name"]: f for f in record["fields"]}
    assert list(fields) == [f.name for f in info.fields], record["name"]
    for field in info.fields:
        avro_field = fields[field.name]
        assert _avro_types(avro_field["type"]) == _python_types(field.type), field.name
        assert ("default" in avro_field) == (not field.required), field.name
        if not field.required:
            default = field.default
            if default is msgspec.NODEFAULT:
                default = field.default_factory()
            assert avro_field["default"] == msgspec.to_builtins(default), field.name
            first = avro_field["type"][0] if isinstance(avro_field["type"], list) else None
            assert default is not None or first == "null", field.name
        nested = [t for t in _flat(field.type) if isinstance(t, msgspec.inspect.StructType)]
        for inner in nested:
            _assert_record_matches(inner.cls, _avro_records(avro_field["type"])[inner.cls.__name__])


def _flat(t: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    mi = msgspec.inspect
    if isinstance(t, mi.Metadata):  # schema-only facts (a pattern decode.check_codes enforces)
        return _python_types(t.type)
    if isinstance(t, mi.UnionType):
        return [x for member in t.types for x in _flat(member)]
    if isinstance(t, mi.ListType | mi.DictType):
        return [t, *_flat(t.item_type if isinstance(t, mi.ListType) else t.value_type)]
    return [t]


def _avro_records(avro_type: Any) -> dict[str, Any]:
    if isinstance(avro_type, list):
        return {k: v for member in avro_type for k, v in _avro_records(member).items()}
    if isinstance(avro_type, dict):
        inner = avro_type.get("items") or avro_type.get("values")
        found = _avro_records(inner) if inner is not None else {}
        return {**found, avro_type["name"]: avro_type} if avro_type["type"] == "record" else found
    return {}


@pytest.mark.parametrize(("struct", "avsc"), [(Transaction, "transaction.avsc"),
                                              (Alert, "alert.avsc"), (ScoreRecord, "score.avsc")])
def test_avro_schemas_have_the_struct_fields_types_and_defaults(struct: type[msgspec.Struct],
                                                               avsc: str) -> None:
    record = schema(avsc)
    assert (record["namespace"], record["name"]) == ("stream_infer", struct.__name__)
    _assert_record_matches(struct, record)
    fastavro.parse_schema(record)


def test_the_avro_event_time_is_timestamp_millis_or_a_string() -> None:
    (field,) = [f for f in schema("transaction.avsc")["fields"] if f["name"] == "event_time"]
    assert field["type"] == [{"type": "long", "logicalType": "timestamp-millis"}, "string"]
    info = msgspec.inspect.type_info(Transaction)
    assert isinstance(info, msgspec.inspect.StructType)
    required = {f.name for f in info.fields if f.required}
    assert set(schema("transaction.schema.json")["required"]) == required


@pytest.mark.parametrize("name", ["transaction.schema.json", "alert.schema.json",
                                  "score.schema.json"])
def test_json_schemas_are_valid_draft_2020_12(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))
    assert schema(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


finite = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=8)
alerts = st.builds(
    Alert, alert_id=st.uuids().map(str), event_id=texts, card_id=texts,
    score=st.floats(0, 1), threshold=finite, model_name=texts, model_version=texts,
    event_time=st.integers(-(2**63), 2**63 - 1), scored_at=st.integers(0, 2**62),
    reasons=st.lists(st.builds(Reason, texts, finite | st.none(), finite), max_size=3),
    degraded=st.booleans(),
)
scores = st.builds(
    ScoreRecord, event_id=texts, card_id=texts, score=st.floats(0, 1), model_name=texts,
    model_version=texts, event_time=st.integers(-(2**63), 2**63 - 1),
    scored_at=st.integers(0, 2**62), features=st.dictionaries(texts, finite | st.none()),
    label=st.none() | st.integers(0, 1), degraded=st.booleans(),
)
OUTPUTS = {Alert: ("alert.schema.json", "alert.avsc"), ScoreRecord: ("score.schema.json",
                                                                     "score.avsc")}


@settings(max_examples=200, deadline=None)
@given(st.one_of(alerts, scores))
def test_encoded_outputs_validate_against_their_json_and_avro_schemas(
        record: Alert | ScoreRecord) -> None:
    json_name, avsc = OUTPUTS[type(record)]
    doc = json.loads(msgspec.json.encode(record))
    _Strict(schema(json_name), format_checker=FORMATS).validate(doc)
    parsed = fastavro.parse_schema(schema(avsc))
    body = fastavro.schemaless_reader(io.BytesIO(AvroEncoder(parsed, 5)(record)[5:]), parsed,
                                      None)
    assert json.loads(json.dumps(body, default=str)) == doc


@pytest.mark.parametrize(("name", "doc"), [
    ("alert.schema.json", {"alert_id": "x"}),
    ("alert.schema.json", {**msgspec.to_builtins(Alert("not-a-uuid", "e", "c", 0.5, 0.5, "m",
                                                       "1", 1, 2))}),
    ("alert.schema.json", {**msgspec.to_builtins(Alert(
        "6f1d4f0e-2b8a-5c47-9a53-3d0c2f9b7e11", "e", "c", 0.5, 0.5, "m", "1", 1, 2)), "x": 1}),
    ("score.schema.json", {**msgspec.to_builtins(ScoreRecord("e", "c", 1.5, "m", "1", 1, 2,
                                                             {}))}),
])
def test_output_schemas_reject_what_we_never_emit(name: str, doc: dict[str, Any]) -> None:
    assert not _Strict(schema(name), format_checker=FORMATS).is_valid(doc)


def test_the_package_ships_the_schemas_as_they_are_in_the_repository() -> None:
    from stream_infer.config import SCHEMA_DIR

    def files(directory: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in directory.iterdir()
                if p.suffix in {".avsc", ".json"}}

    shipped, source = files(SCHEMA_DIR), files(SCHEMAS)
    assert source, "no schemas found in the repository's schemas/"
    assert shipped == source, "stream_infer/schemas/ differs from schemas/: copy them again"
