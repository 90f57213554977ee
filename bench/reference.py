"""The reference workload of issue 7, shared by the benchmarks.

50,000 cards x 16 card features in Redis (view ``card``, hash or packed layout), a 300-tree
depth-6 XGBoost model over 17 features (``amount`` + the 16), JSON transactions on a topic
of 4 partitions, about 2% of them alerting. Everything is derived from fixed seeds, and the
trained model is cached under ``bench/.cache`` (delete it to retrain).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost

from stream_infer.config import FeatureView
from stream_infer.offline.features import pack
from stream_infer.registry import MANIFEST, write_model

CARDS = 50_000
FIELDS = [f"f{i:02d}" for i in range(16)]
FEATURES = ["amount", *(f"card.{f}" for f in FIELDS)]
TREES, DEPTH = 300, 6
PARTITIONS = 4
CACHE = Path(__file__).resolve().parent / ".cache"


def card_id(i: int) -> str:
    return f"c{i:06d}"


def card_features(seed: int = 1) -> npt.NDArray[np.float32]:
    """(CARDS, 16) float32: the values in Redis and in training alike."""
    return np.random.default_rng(seed).normal(size=(CARDS, len(FIELDS))).astype(np.float32)


def views(layout: str) -> dict[str, FeatureView]:
    key = "card:{card_id}" if layout == "hash" else "cardv:{card_id}"
    return {"card": FeatureView(key=key, fields=FIELDS, layout=layout)}  # type: ignore[arg-type]


def _fraud_logit(amount: npt.NDArray[Any], x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return (-5.2 + 0.9 * x[:, 0] + 0.7 * x[:, 1] * x[:, 2] + 0.5 * np.abs(x[:, 3])
            + 0.4 * np.log(amount) - 0.3 * x[:, 4] * (x[:, 5] > 0))


def events(count: int, *, seed: int = 2, start_ms: int = 1_767_225_600_000
           ) -> Iterator[dict[str, Any]]:
    """``count`` transactions on random cards (uniform), lognormal amounts."""
    rng = np.random.default_rng(seed)
    cards = rng.integers(0, CARDS, count)
    amounts = np.round(np.exp(rng.normal(3.5, 1.0, count)), 2) + 0.01
    for n in range(count):
        yield {"event_id": f"r{seed}-{n}", "event_time": start_ms + n,
               "card_id": card_id(int(cards[n])), "merchant_id": f"m{n % 997}",
               "amount": float(amounts[n]), "currency": "EUR"}


def encoded_events(count: int, seed: int = 2) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in events(count, seed=seed)]


def model_dir() -> Path:
    """``bench/.cache/models/reference/1``, trained once (about 30 s on 2 cores)."""
    root = CACHE / "models"
    path = root / "reference" / "1"
    if (path / MANIFEST).is_file():
        return path
    rng = np.random.default_rng(3)
    x = card_features()
    rows = 200_000
    cards = rng.integers(0, CARDS, rows)
    amount = np.round(np.exp(rng.normal(3.5, 1.0, rows)), 2) + 0.01
    features = np.column_stack([amount, x[cards]]).astype(np.float32)
    y = rng.random(rows) < 1 / (1 + np.exp(-_fraud_logit(amount, x[cards])))
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.1, "nthread": 2,
         "tree_method": "hist", "seed": 3},
        xgboost.DMatrix(features, label=y, feature_names=FEATURES), TREES)
    scores = booster.inplace_predict(features)
    threshold = float(np.quantile(scores, 0.98))
    return write_model(root, "reference", "1", bytes(booster.save_raw("json")),
                       features=FEATURES, threshold=threshold,
                       training={"rows": rows, "positives": int(y.sum()), "synthetic": True})


def load_cards(client: Any, layout: str, chunk: int = 5000) -> None:
    """Write every card's features into Redis in the given layout."""
    x = card_features()
    pipe = client.pipeline(transaction=False)
    for i in range(CARDS):
        if layout == "hash":
            pipe.hset(f"card:{card_id(i)}", mapping={f: repr(float(v))
                                                      for f, v in zip(FIELDS, x[i], strict=True)})
        else:
            pipe.set(f"cardv:{card_id(i)}",
                     pack({f: repr(float(v)) for f, v in zip(FIELDS, x[i], strict=True)}, FIELDS))
        if i % chunk == chunk - 1:
            pipe.execute()
    pipe.execute()


def feature_rows(encoded: list[bytes]) -> npt.NDArray[np.float32]:
    """The exact float32 rows the service scores for these events (for the ceiling)."""
    x = card_features()
    out = np.empty((len(encoded), len(FEATURES)), dtype=np.float32)
    for i, raw in enumerate(encoded):
        event = json.loads(raw)
        out[i, 0] = event["amount"]
        out[i, 1:] = x[int(event["card_id"][1:])]
    return out
