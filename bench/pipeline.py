"""In-process pipeline throughput versus bare ``inplace_predict`` on the same rows.

No broker and no Redis: the in-memory fakes stand in for both, so this isolates the cost of
decode + enrich + score + encode around the model. The end-to-end benchmark over a real broker
and Redis is issue 7's ``bench/e2e.py``.

    python bench/pipeline.py --events 100000 --batch 1000 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import msgspec
import numpy as np

from stream_infer.adapters.memory import MemoryFeatureStore, Record
from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.config import FeatureView
from stream_infer.decode import JsonDecoder
from stream_infer.offline import simulate
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.registry import resolve
from stream_infer.score import ModelSet

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    pop = simulate.make_population(seed=7)
    events = list(simulate.transactions(pop, count=args.events, seed=3))
    records = [Record(json.dumps(e).encode(), _offset=i) for i, e in enumerate(events)]
    hashes = {f"card:{r['card_id']}": {k: repr(v).encode() for k, v in r.items() if k != "card_id"}
              for r in simulate.card_features(pop)}
    hashes |= {f"merchant:{r['merchant_id']}":
               {k: repr(v).encode() for k, v in r.items() if k != "merchant_id"}
               for r in simulate.merchant_features(pop)}
    model = XGBoostModel.load(resolve(ROOT / "models", "demo"), nthread=1)
    views = {"card": FeatureView(key="card:{card_id}", fields=list(simulate.CARD_FIELDS)),
             "merchant": FeatureView(key="merchant:{merchant_id}",
                                     fields=list(simulate.MERCHANT_FIELDS))}
    scoring = ModelSet.build(model, views)
    enricher = scoring.enricher
    pipeline = Pipeline(decoder=JsonDecoder(), models=scoring,
                        store=MemoryFeatureStore(hashes),
                        topics=Topics("alerts", "dlq"), encoder=msgspec.json.Encoder().encode)
    batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]

    matrices = []
    for batch in batches:
        decoded = [pipeline.features.decoder(r.value()) for r in batch]
        lookups, index = enricher.lookups(decoded)
        matrices.append(enricher.matrix(decoded, pipeline.store.fetch(lookups), index).matrix)

    predict_s = best(args.repeat, lambda: [model.predict(m) for m in matrices])
    pipeline_s = best(args.repeat, lambda: [pipeline.process(b) for b in batches])
    result = {
        "events": args.events, "batch": args.batch, "model_trees": _trees(model),
        "features": len(model.features), "nthread": 1,
        "pipeline_events_per_s": round(args.events / pipeline_s),
        "predict_only_rows_per_s": round(args.events / predict_s),
        "ceiling_ratio": round(predict_s / pipeline_s, 3),
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"python {platform.python_version()}".strip(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}  {value}")


def best(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def _trees(model: XGBoostModel) -> int:
    return int(model.booster.num_boosted_rounds())


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
