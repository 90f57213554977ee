"""A :class:`Pipeline` over the in-memory fakes, and records to feed it (no sockets)."""

from __future__ import annotations

import json

import msgspec
import numpy as np

from stream_infer.adapters.memory import FunctionModel, MemoryFeatureStore, Record
from stream_infer.config import FeatureView
from stream_infer.decode import JsonDecoder
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.score import ModelSet

VIEWS = {"card": FeatureView(key="card:{card_id}", fields=["risk"])}
FEATURES = ("amount", "card.risk")
TOPICS = Topics(alerts="alerts", dead_letter="dlq", scores="scores")


def event(n: int, amount: float = 10.0, card: str = "c1") -> bytes:
    """Event ``e<n>`` as JSON bytes."""
    return json.dumps({"event_id": f"e{n}", "event_time": 1_700_000_000_000 + n,
                       "card_id": card, "merchant_id": "m", "amount": amount,
                       "currency": "EUR"}).encode()


def records(values: list[bytes], partition: int = 0) -> list[Record]:
    """``values`` as the records of ``partition``, from offset 0."""
    return [Record(v, _partition=partition, _offset=i, _key=b"k", _timestamp=1000 + i)
            for i, v in enumerate(values)]


def make_pipeline(fs: MemoryFeatureStore | None = None, policy: str = "fail-open",
                  reasons_top_k: int = 0) -> Pipeline:
    """Scores ``card.risk`` when the store knows the card (c1: 0.2, c9: 0.95), else 0.9 for an
    amount over 100 and 0 otherwise, so that fail-open is visible; alerts at 0.5."""
    def fn(m: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(m[:, 1]), (m[:, 0] > 100) * 0.9, m[:, 1])

    return Pipeline(
        decoder=JsonDecoder(max_payload_bytes=4096),
        models=ModelSet.build(FunctionModel(fn, FEATURES, threshold=0.5), VIEWS),
        store=fs or MemoryFeatureStore({"card:c1": {"risk": b"0.2"}, "card:c9": {"risk": b"0.95"}}),
        topics=TOPICS,
        encoder=msgspec.json.Encoder().encode,
        on_store_error=policy,  # type: ignore[arg-type]
        clock=lambda: 42,
        reasons_top_k=reasons_top_k,
    )
