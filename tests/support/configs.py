"""Service configs for one run: as sections, as ``Settings``, as a TOML file.

A run is named by an id: it reads ``tx-<id>``, writes ``alerts-<id>``, ``dlq-<id>`` and
``scores-<id>``, in consumer group ``g-<id>``, with the shipped demo model and the
simulator's features (:data:`~tests.support.population.HASH_VIEWS`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream_infer.config import Settings, load_settings

from .population import HASH_VIEWS

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SCHEMAS = ROOT / "schemas"
Sections = dict[str, dict[str, Any]]


def service_config(run_id: str, bootstrap: str, redis_url: str,
                   **overrides: Mapping[str, Any]) -> Sections:
    """The sections of run ``run_id``'s config; ``overrides`` are merged per section (see
    :func:`merge`)."""
    sections: Sections = {
        "kafka": {
            "bootstrap_servers": bootstrap, "group_id": f"g-{run_id}",
            "input_topics": [f"tx-{run_id}"], "alert_topic": f"alerts-{run_id}",
            "dlq_topic": f"dlq-{run_id}", "scores_topic": f"scores-{run_id}",
            "session_timeout_ms": 6000, "topic_partitions": 2, "commit_interval_ms": 500,
        },
        "batch": {"max_records": 100, "max_wait_ms": 20},
        "redis": {"url": redis_url},
        "features": copy.deepcopy(HASH_VIEWS),
        "model": {"dir": str(MODELS), "name": "demo"},
    }
    return merge(sections, overrides)


def merge(sections: Sections, overrides: Mapping[str, Mapping[str, Any]]) -> Sections:
    """``sections`` with each override section's keys set; a dict value set on a dict (a
    client's options, a feature view) updates it key by key."""
    out = copy.deepcopy(sections)
    for name, values in overrides.items():
        section = out.setdefault(name, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(section.get(key), dict):
                section[key] = {**section[key], **value}
            else:
                section[key] = value
    return out


def settings_for(run_id: str, bootstrap: str, redis_url: str,
                 **overrides: Mapping[str, Any]) -> Settings:
    """The settings in-process tests build runners from: :func:`service_config` with four
    partitions, batches of up to 200 records and payloads of up to 2048 bytes (what
    :func:`~tests.support.events.bad_records` expects), then ``overrides``."""
    sections = service_config(run_id, bootstrap, redis_url, kafka={"topic_partitions": 4},
                              batch={"max_records": 200}, decode={"max_payload_bytes": 2048})
    return load_settings(**merge(sections, overrides))


def write_config(path: Path, sections: Mapping[str, Any]) -> Path:
    """``sections`` as a TOML file at ``path``; returns ``path``."""
    path.write_text(toml(sections))
    return path


_INLINE = {"consumer", "producer", "options"}
"""Keys whose dicts are librdkafka/redis-py options: inline tables with quoted keys."""


def toml(tables: Mapping[str, Any], prefix: str = "") -> str:
    """Nested dicts as TOML: keys before sub-tables, client options as inline tables."""
    lines, subtables = [], []
    for key, value in tables.items():
        if isinstance(value, dict) and key not in _INLINE:
            subtables.append(toml(value, f"{prefix}.{key}" if prefix else key))
        elif isinstance(value, dict):
            inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    head = [f"[{prefix}]"] if prefix and lines else []
    return "\n".join([*head, *lines, *subtables]) + "\n"
