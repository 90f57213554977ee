"""The one exception tree of stream-infer.

::

    StreamInferError
    ├── ConfigError              settings that cannot run (bad file, bad value, missing topic)
    ├── ModelError               a model that must not be served
    │   └── ModelIntegrityError  sha256 mismatch, pickle, or feature order mismatch
    ├── RecordError              one input record that cannot be scored -> dead-letter topic
    │   ├── DecodeError          undecodable bytes, unknown schema id, oversized payload
    │   └── ValidationError      decodes, but violates the transaction schema
    ├── DependencyUnavailable    a service the batch needs is down: the batch is retried
    │   ├── FeatureStoreError    the feature store (Redis) timed out or is down
    │   └── RegistryUnavailable  the Schema Registry cannot be reached
    ├── BrokerError              Kafka unreachable, topic missing, fatal producer error
    ├── DeliveryError            an output was not acknowledged: its input offsets are not stored
    └── AccountingError          a replay cannot prove what it read (ends, counts)

Library errors are translated once, inside the adapter that called the library
(``raise BrokerError(...) from exc``). Messages never carry payload bytes or card numbers:
:func:`redact` masks any long digit run before a message leaves the process.
"""

from __future__ import annotations

import re

_LONG_DIGITS = re.compile(r"\d(?:[ -]?\d){11,}")


def redact(text: str) -> str:
    """Mask every run of 12 or more digits (spaces or dashes allowed between them)."""
    return _LONG_DIGITS.sub("[redacted]", text)


class StreamInferError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(StreamInferError):
    """The configuration cannot run; the message says which setting and why."""


class ModelError(StreamInferError):
    """A model that must not be served."""


class ModelIntegrityError(ModelError):
    """The model file does not match its manifest, or is a format we refuse to load."""


class RecordError(StreamInferError):
    """One input record that cannot be scored; it goes to the dead-letter topic.

    ``reason`` is a short stable code (``undecodable``, ``schema``, ``oversized``, ...);
    the message explains it for humans and is already redacted.
    """

    reason = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class DecodeError(RecordError):
    """The bytes are not a transaction in the configured format."""

    reason = "undecodable"


class OversizedError(DecodeError):
    """The payload is larger than ``decode.max_payload_bytes``."""

    reason = "oversized"


class UnknownSchemaError(DecodeError):
    """An Avro record names a schema id that cannot be resolved."""

    reason = "unknown-schema"


class ValidationError(RecordError):
    """The record decodes but violates the transaction schema."""

    reason = "schema"


class DependencyUnavailable(StreamInferError):
    """A service a batch needs is unavailable; the runner pauses and retries the batch."""


class FeatureStoreError(DependencyUnavailable):
    """The feature store timed out or is unreachable."""


class RegistryUnavailable(DependencyUnavailable):
    """The Schema Registry cannot be reached (an unknown id is a RecordError instead)."""


class BrokerError(StreamInferError):
    """The Kafka cluster is unreachable, a topic is missing, or the client failed fatally."""


class DeliveryError(StreamInferError):
    """At least one output of a batch was not acknowledged by the broker."""


class AccountingError(StreamInferError):
    """Replay cannot prove what it read: a partition ended before the offsets asked, or
    before the end the broker reported, or the counts do not add up to the records read."""
