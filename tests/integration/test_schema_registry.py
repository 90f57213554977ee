"""Avro decoding through SchemaRegistryClient and a small fake Schema Registry on a real socket."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest

from stream_infer.adapters.schema_registry import SchemaRegistryClient
from stream_infer.decode import AvroDecoder, encode_avro, encode_avro_transaction
from stream_infer.demo.embedded import free_port
from stream_infer.errors import (
    ConfigError,
    RecordError,
    RegistryUnavailable,
    UnknownSchemaError,
)

pytestmark = pytest.mark.integration
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TRANSACTION = json.loads((SCHEMAS / "transaction.avsc").read_text())
EVENT = {"event_id": "e", "event_time": 1, "card_id": "c", "merchant_id": "m", "amount": 2.0,
         "currency": "EUR"}


class FakeRegistry(ThreadingHTTPServer):
    """The two Schema Registry endpoints the client uses, and knobs to make them fail."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.schemas: dict[int, dict[str, Any]] = {}
        self.gets: Counter[str] = Counter()
        self.status: int | None = None  # answer every request with this status
        self.raw: bytes | None = None  # or with 200 and this body
        self.auth: str | None = None  # require this Authorization header
        self.release = threading.Event()  # a status of 0 hangs until released

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def do_GET(self) -> None:
        self.server.gets[self.path] += 1
        if self.refused():
            return
        schema_id = int(self.path.removeprefix("/schemas/ids/"))
        if schema_id in self.server.schemas:
            self.reply(200, self.server.schemas[schema_id])
        else:
            self.reply(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.refused():
            return
        known = {json.dumps(v, sort_keys=True): k for k, v in self.server.schemas.items()}
        key = json.dumps(body, sort_keys=True)
        schema_id = known.get(key, len(self.server.schemas) + 10)
        self.server.schemas[schema_id] = body
        self.reply(200, {"id": schema_id, "subject": self.path.split("/")[2]})

    def refused(self) -> bool:
        if self.server.auth and self.headers.get("Authorization") != self.server.auth:
            self.reply(401, {"error_code": 401, "message": "Unauthorized"})
            return True
        if self.server.status == 0:
            self.server.release.wait(10)
            return True
        if self.server.raw is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.server.raw)))
            self.end_headers()
            self.wfile.write(self.server.raw)
            return True
        if self.server.status is not None:
            self.reply(self.server.status, {"error_code": 50001, "message": "Store error"})
            return True
        return False

    def reply(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def client(registry: FakeRegistry) -> SchemaRegistryClient:
    return SchemaRegistryClient(registry.url, timeout_s=2)


def test_avro_records_resolve_their_writer_schema_once_per_id(
        registry: FakeRegistry, client: SchemaRegistryClient) -> None:
    evolved = {**TRANSACTION, "fields": [*TRANSACTION["fields"],
                                         {"name": "device", "type": "string", "default": ""}]}
    first = client.register("transactions-value", TRANSACTION)
    second = client.register("transactions-value", evolved)
    assert first != second and client.register("transactions-value", TRANSACTION) == first
    decode = AvroDecoder(client)
    for n in range(5):
        value = encode_avro_transaction({**EVENT, "event_id": f"a{n}"}, first)
        assert decode(value).event_id == f"a{n}"
    for n in range(3):
        value = encode_avro({**EVENT, "event_id": f"b{n}", "device": "ios"},
                            fastavro.parse_schema(evolved), second)
        assert decode(value).event_id == f"b{n}"
    assert registry.gets == {f"/schemas/ids/{first}": 1, f"/schemas/ids/{second}": 1}


def test_the_client_caches_each_id_itself(registry: FakeRegistry,
                                          client: SchemaRegistryClient) -> None:
    schema_id = client.register("transactions-value", TRANSACTION)
    assert client.schema(schema_id) is client.schema(schema_id)
    assert client.schema(schema_id) == fastavro.parse_schema(TRANSACTION)
    assert registry.gets == {f"/schemas/ids/{schema_id}": 1}


def test_an_unknown_id_is_a_bad_record_and_is_asked_again_later(
        registry: FakeRegistry, client: SchemaRegistryClient) -> None:
    decode = AvroDecoder(client)
    value = encode_avro_transaction(EVENT, 999)
    for _ in range(2):
        with pytest.raises(UnknownSchemaError) as info:
            decode(value)
        assert info.value.reason == "unknown-schema"
    registry.schemas[999] = {"schema": json.dumps(TRANSACTION)}  # registered meanwhile
    assert decode(value).event_id == "e"
    assert registry.gets["/schemas/ids/999"] == 3


def test_a_schema_that_is_not_avro_is_a_bad_record(registry: FakeRegistry,
                                                  client: SchemaRegistryClient) -> None:
    registry.schemas[5] = {"schemaType": "PROTOBUF", "schema": "syntax = 'proto3';"}
    registry.schemas[6] = {"schema": "{not json"}
    with pytest.raises(UnknownSchemaError, match="PROTOBUF"):
        AvroDecoder(client)(encode_avro_transaction(EVENT, 5))
    with pytest.raises(UnknownSchemaError, match="not an Avro schema"):
        client.schema(6)


@pytest.mark.parametrize("status", [500, 503, 403])
def test_a_failing_registry_is_unavailable_not_a_bad_record(
        registry: FakeRegistry, client: SchemaRegistryClient, status: int) -> None:
    registry.schemas[1] = {"schema": json.dumps(TRANSACTION)}
    registry.status = status
    decode = AvroDecoder(client)
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}") as info:
        decode(encode_avro_transaction(EVENT, 1))
    assert not isinstance(info.value, RecordError)
    registry.status = None  # recovered: the failure was not cached
    assert decode(encode_avro_transaction(EVENT, 1)).event_id == "e"


def test_a_404_that_is_not_the_registrys_answer_is_a_wrong_url(
        registry: FakeRegistry) -> None:
    registry.schemas[1] = {"schema": json.dumps(TRANSACTION)}
    wrong = SchemaRegistryClient(registry.url + "/api/v1", timeout_s=2)
    registry.status = 404  # a 404 without error_code 40403, as a proxy would send
    with pytest.raises(RegistryUnavailable, match="404"):
        wrong.schema(1)


@pytest.mark.parametrize("body", [b"<html>login</html>", b"[]", b'{"schema": 5}'])
def test_an_answer_that_is_not_the_registrys_is_unavailable(
        registry: FakeRegistry, client: SchemaRegistryClient, body: bytes) -> None:
    registry.raw = body
    with pytest.raises(RegistryUnavailable):
        client.schema(1)


def test_an_unreachable_registry_is_not_a_bad_record() -> None:
    client = SchemaRegistryClient(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        AvroDecoder(client)(encode_avro_transaction(EVENT, 1))


def test_a_registry_that_does_not_answer_times_out(registry: FakeRegistry) -> None:
    registry.status = 0
    client = SchemaRegistryClient(registry.url, timeout_s=0.3)
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        client.schema(1)


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_messages(
        registry: FakeRegistry) -> None:
    registry.auth = "Basic " + base64.b64encode(b"key:s3cr%t").decode()
    registry.schemas[1] = {"schema": json.dumps(TRANSACTION)}
    host = registry.url.removeprefix("http://")
    assert SchemaRegistryClient(f"http://key:s3cr%25t@{host}").schema(1)["name"] == (
        "stream_infer.Transaction")
    with pytest.raises(RegistryUnavailable, match="HTTP 401") as info:
        SchemaRegistryClient(f"http://key:wrong-secret@{host}").schema(1)
    assert "wrong-secret" not in str(info.value) and "key:" not in str(info.value)


@pytest.mark.parametrize("url", ["127.0.0.1:8081", "ftp://registry", "http://"])
def test_a_url_that_is_not_http_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        SchemaRegistryClient(url)
