"""Avro decoding through a Schema Registry served over a real socket (a small fake server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stream_infer.adapters.schema_registry import SchemaRegistryClient
from stream_infer.decode import AvroDecoder, encode_avro_transaction
from stream_infer.embedded import free_port
from stream_infer.errors import RegistryUnavailable, UnknownSchemaError

pytestmark = pytest.mark.integration
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


class FakeRegistry(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.schemas: dict[int, str] = {}
        self.gets = 0


class Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def do_GET(self) -> None:
        self.server.gets += 1
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if schema_id in self.server.schemas:
            self.reply(200, {"schema": self.server.schemas[schema_id]})
        else:
            self.reply(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        schema_id = len(self.server.schemas) + 10
        self.server.schemas[schema_id] = body["schema"]
        self.reply(200, {"id": schema_id})

    def reply(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_avro_records_resolve_their_writer_schema_once_per_id(registry: FakeRegistry) -> None:
    client = SchemaRegistryClient(f"http://127.0.0.1:{registry.server_address[1]}")
    schema_id = client.register("transactions-value",
                                json.loads((SCHEMAS / "transaction.avsc").read_text()))
    decode = AvroDecoder(client, SCHEMAS)
    event = {"event_id": "e", "event_time": 1, "card_id": "c", "merchant_id": "m",
             "amount": 2.0, "currency": "EUR"}
    for n in range(3):
        value = encode_avro_transaction({**event, "event_id": f"e{n}"}, schema_id)
        assert decode(value).event_id == f"e{n}"
    assert registry.gets == 1
    with pytest.raises(UnknownSchemaError):
        decode(encode_avro_transaction(event, 999))


def test_an_unreachable_registry_is_not_a_bad_record() -> None:
    client = SchemaRegistryClient(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        client.schema(1)
