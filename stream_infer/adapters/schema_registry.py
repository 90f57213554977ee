"""A minimal Confluent Schema Registry client (HTTP, stdlib only) for Avro writer schemas.

Implements :class:`stream_infer.decode.SchemaResolver`. A schema id the registry does not
know (404) is a property of the record: :class:`UnknownSchemaError`, so the record goes to
the dead-letter topic. A registry that cannot be reached is not: :class:`RegistryUnavailable`
is raised, and the runner pauses and retries the batch instead of dead-lettering good
records during an outage. Parsed schemas are cached per id, forever (ids are immutable).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import fastavro

from ..errors import RegistryUnavailable, UnknownSchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryClient:
    """``schema(id)`` via ``GET /schemas/ids/{id}``; ``register`` for tools and tests."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._cache: dict[int, Any] = {}

    def schema(self, schema_id: int) -> Any:
        cached = self._cache.get(schema_id)
        if cached is None:
            doc = self._request("GET", f"/schemas/ids/{schema_id}", schema_id=schema_id)
            cached = self._cache[schema_id] = fastavro.parse_schema(json.loads(doc["schema"]))
        return cached

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject``; return its id."""
        body = json.dumps({"schema": json.dumps(schema)}).encode()
        return int(self._request("POST", f"/subjects/{subject}/versions", body=body)["id"])

    def _request(self, method: str, path: str, *, body: bytes | None = None,
                 schema_id: int | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": CONTENT_TYPE,
                                                  "Accept": CONTENT_TYPE})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and schema_id is not None:
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from None
            raise RegistryUnavailable(
                f"schema registry {method} {path}: HTTP {exc.code}"
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(f"schema registry unreachable at {self.url}: {exc}") from exc
