"""Every fast path scores bit-for-bit like offline ``Booster.inplace_predict`` on the same rows."""

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import xgboost

from stream_infer.adapters.memory import MemoryFeatureStore, Record
from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.config import FeatureView
from stream_infer.decode import JsonDecoder
from stream_infer.offline.features import pack
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.registry import write_model
from stream_infer.score import ModelSet

FIELDS = [f"f{i}" for i in range(6)]
FEATURES = ["amount", *(f"card.{f}" for f in FIELDS)]
CARDS = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, xgboost.Booster]:
    rng = np.random.default_rng(4)
    cards = rng.normal(size=(CARDS, len(FIELDS))).astype(np.float32)
    cards[rng.random(cards.shape) < 0.05] = np.nan  # some cells never written
    x = np.column_stack([rng.lognormal(3, 1, 3000), cards[rng.integers(0, CARDS, 3000)]])
    y = (x[:, 1] + x[:, 2] * x[:, 3] > 0.5).astype(int)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 1},
                            xgboost.DMatrix(x.astype(np.float32), label=y,
                                            feature_names=FEATURES), 60)
    root = tmp_path_factory.mktemp("models")
    write_model(root, "fast", "1", bytes(booster.save_raw("json")), features=FEATURES,
                threshold=0.5)
    return root / "fast" / "1", cards, booster


def events(count: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(9)
    return [{"event_id": f"e{n}", "event_time": n, "card_id": f"c{rng.integers(0, CARDS + 20)}",
             "merchant_id": "m", "amount": float(np.round(rng.lognormal(3, 1), 2)),
             "currency": "EUR"} for n in range(count)]


@pytest.mark.parametrize(("layout", "nthread", "batch"),
                         [("hash", 1, 500), ("packed", 1, 500), ("packed", 2, 500),
                          ("packed", 1, 1), ("hash", 2, 64)])
def test_pipeline_scores_equal_offline_inplace_predict(
        setup: tuple[Path, np.ndarray, xgboost.Booster], layout: str, nthread: int,
        batch: int) -> None:
    model_dir, cards, booster = setup
    hashes = {f"card:c{i}": {f: repr(float(v)).encode() for f, v in zip(FIELDS, row, strict=True)
                             if not np.isnan(v)} for i, row in enumerate(cards)}
    vectors = {f"card:c{i}": pack({f: v.decode() for f, v in hashes[f"card:c{i}"].items()},
                                  FIELDS) for i in range(CARDS)}
    store = MemoryFeatureStore(hashes=hashes if layout == "hash" else {},
                               vectors=vectors if layout == "packed" else {})
    views = {"card": FeatureView(key="card:{card_id}", fields=FIELDS,
                                 layout=layout)}  # type: ignore[arg-type]
    model = XGBoostModel.load(model_dir, nthread=nthread)
    pipeline = Pipeline(decoder=JsonDecoder(), models=ModelSet.build(model, views), store=store,
                        topics=Topics("alerts", "dlq", "scores"),
                        encoder=msgspec.json.Encoder().encode)
    evs = events(1200)
    records = [Record(json.dumps(e).encode(), _offset=i) for i, e in enumerate(evs)]
    served = {}
    for start in range(0, len(records), batch):
        for output in pipeline.process(records[start:start + batch]).outputs:
            if output.topic == "scores":
                score = json.loads(output.value)
                served[score["event_id"]] = np.float32(score["score"])

    rows = np.full((len(evs), len(FEATURES)), np.nan, dtype=np.float32)
    for i, e in enumerate(evs):
        rows[i, 0] = e["amount"]
        card = int(str(e["card_id"])[1:])
        if card < CARDS:
            rows[i, 1:] = cards[card]
    offline = booster.inplace_predict(rows)
    assert np.array_equal(np.array([served[e["event_id"]] for e in evs]), offline)
