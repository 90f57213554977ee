"""A minimal Confluent Schema Registry client (stdlib HTTP) resolving Avro writer schemas.

Implements :class:`stream_infer.decode.SchemaResolver`. What is wrong with the *record* is a
:class:`UnknownSchemaError` and sends it to the dead-letter topic: an id the registry answers
"not found" (HTTP 404, error code 40403), or a schema that is not Avro or does not parse.
What is wrong with the *registry* is :class:`RegistryUnavailable`, so the runner pauses and
retries the batch instead of dead-lettering good records during an outage: no connection, a
timeout, any other status (5xx, 401/403), an answer that is not the registry's JSON, and a 404
without the registry's error body (a wrong URL, not a missing schema).

Parsed schemas are cached per id, forever (ids are immutable); failures are not cached.
Credentials in the URL (``https://key:secret@host``) become a Basic ``Authorization`` header
and never appear in messages.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import fastavro

from ..config import DecodeSettings
from ..errors import ConfigError, RegistryUnavailable, UnknownSchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_NOT_FOUND = 40403


class SchemaRegistryClient:
    """``schema(id)`` via ``GET {url}/schemas/ids/{id}``; ``register`` for tools and tests."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("schema registry URL must be http(s)://host[:port][/path]")
        self.url, self._headers = _split_credentials(url.rstrip("/"))
        self.timeout_s = timeout_s
        self._cache: dict[int, Any] = {}

    def schema(self, schema_id: int) -> Any:
        """The parsed Avro schema for ``schema_id``: one HTTP call per id, then cached."""
        cached = self._cache.get(schema_id)
        if cached is None:
            doc = self._request("GET", f"/schemas/ids/{int(schema_id)}", not_found_id=schema_id)
            cached = self._cache[schema_id] = _parse(schema_id, doc)
        return cached

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register an Avro ``schema`` under ``subject`` (idempotent); return its id."""
        body = json.dumps({"schema": json.dumps(schema)}).encode()
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        return int(self._request("POST", path, body=body)["id"])

    def _request(self, method: str, path: str, *, body: bytes | None = None,
                 not_found_id: int | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=self._headers)
        where = f"schema registry {method} {self.url}{path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return _json_object(response.read(), where)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, where, not_found_id) from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            raise RegistryUnavailable(f"{where}: unreachable ({exc})") from exc


def schema_resolver(settings: DecodeSettings) -> SchemaRegistryClient | None:
    """The Schema Registry client the decode settings ask for (Avro with a registry URL)."""
    if settings.format != "avro" or not settings.schema_registry_url:
        return None
    return SchemaRegistryClient(settings.schema_registry_url)


def _parse(schema_id: int, doc: dict[str, Any]) -> Any:
    kind, text = doc.get("schemaType", "AVRO"), doc.get("schema")
    if not isinstance(text, str):
        raise RegistryUnavailable(f"schema registry answer for id {schema_id} has no schema")
    if kind != "AVRO":
        raise UnknownSchemaError(f"schema id {schema_id} is a {kind} schema, not Avro")
    try:
        return fastavro.parse_schema(json.loads(text))
    except Exception as exc:  # not JSON, or Avro fastavro cannot parse (e.g. references)
        raise UnknownSchemaError(
            f"schema id {schema_id} is not an Avro schema we can parse: {type(exc).__name__}"
        ) from None


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryUnavailable(f"{where}: the answer is not a JSON object")
    return doc


def _http_error(exc: urllib.error.HTTPError, where: str,
                not_found_id: int | None) -> UnknownSchemaError | RegistryUnavailable:
    code, message = _registry_error(exc)
    if exc.code == 404 and not_found_id is not None and code == SCHEMA_NOT_FOUND:
        return UnknownSchemaError(f"schema id {not_found_id} is not in the registry")
    if exc.code == 404 and code is None:
        message = "not a Schema Registry answer: check the URL"
    return RegistryUnavailable(f"{where}: HTTP {exc.code} {message}".rstrip())


def _registry_error(exc: urllib.error.HTTPError) -> tuple[int | None, str]:
    """The registry's ``(error_code, message)`` from an error body, if it sent one."""
    try:
        doc = json.loads(exc.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None, ""
    if not isinstance(doc, dict):
        return None, ""
    code = doc.get("error_code")
    return (code if isinstance(code, int) else None), str(doc.get("message", ""))[:200]


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without ``user:password@``, and the headers carrying them instead."""
    headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, headers
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl(), {**headers, "Authorization": f"Basic {token}"}
