"""Inputs: simulated events, malformed records, and replay histories."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from stream_infer.offline import simulate

PAN = "4111 1111 1111 1111"  # passes the Luhn check


def good_events(pop: simulate.Population, count: int, seed: int) -> list[dict[str, Any]]:
    return list(simulate.transactions(pop, count=count, seed=seed))


def keyed(events: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs as the service expects them: keyed by card, JSON values."""
    return [(e["card_id"].encode(), json.dumps(e).encode()) for e in events]


def bad_records() -> list[tuple[str, bytes]]:
    """(the dead-letter reason due, the value) for one record of each kind the decoder
    refuses (with ``decode.max_payload_bytes = 2048``)."""
    ok = {"event_id": "bad", "event_time": 1, "card_id": "c", "merchant_id": "m",
          "amount": 1.0, "currency": "EUR"}
    return [
        ("undecodable", b'{"event_id": "trunc'),
        ("schema", json.dumps({**ok, "amount": -5}).encode()),
        ("schema", json.dumps({**ok, "currency": "euro"}).encode()),
        ("schema", json.dumps({**ok, "card_id": PAN}).encode()),
        ("undecodable", b'{"amount": NaN}'),
        ("oversized", json.dumps({**ok, "channel": "x" * 4096}).encode()),
    ]


HISTORY_FIELDS = [f"card.f{i}" for i in range(6)]
HISTORY_FEATURES = ["amount", *HISTORY_FIELDS]
"""The features of a :func:`history` (carried by the events as attributes)."""


def history(count: int, seed: int = 3) -> list[bytes]:
    """Valid events, some without a feature, and every kind of record the decoder refuses."""
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(count):
        event: dict[str, Any] = {
            "event_id": f"e{n}", "event_time": 1_767_225_600_000 + 1000 * n,
            "card_id": f"c{n % 40}", "merchant_id": "m", "currency": "EUR",
            "amount": float(np.round(rng.lognormal(3, 1), 2)),
            "attributes": {f: float(v) for f, v in zip(
                HISTORY_FIELDS, rng.normal(size=len(HISTORY_FIELDS)), strict=True)}}
        if n % 11 == 0:
            del event["attributes"][HISTORY_FIELDS[n % len(HISTORY_FIELDS)]]  # NaN
        if n % 5 == 0:
            event["label"] = int(n % 10 == 0)
        if n % 13 == 0:
            event["event_time"] = dt.datetime.fromtimestamp(1_767_225_600 + n, dt.UTC).isoformat()
        lines.append(json.dumps(event).encode())
    lines[4] = b""  # a tombstone
    lines[9] = b"{not json"
    lines[15] = lines[15].replace(b'"amount": ', b'"amount": -')
    lines[22] = lines[22].replace(b'"c22"', json.dumps(PAN).encode())
    lines[30] = lines[30][:-1] + b', "pad": "' + b"x" * 2000 + b'"}'
    lines[31] = b"[1, 2]"
    return lines


def write_lines(path: Path, lines: list[bytes]) -> Path:
    """The lines joined by LF and CRLF in turn, the last one without an ending."""
    ends = [b"\r\n" if i % 3 == 0 else b"\n" for i in range(len(lines) - 1)] + [b""]
    path.write_bytes(b"".join(line + end for line, end in zip(lines, ends, strict=True)))
    return path
