"""Replay (backtest) throughput against bare ``inplace_predict`` on the same rows.

Writes N reference events (``bench/reference.py``) that carry their card features in
``attributes`` to a JSON-lines file, replays it through the reference model with
``--features event`` exactly as ``stream-infer replay`` does (decode, enrich, score, results
file), and measures, in the same run, ``inplace_predict`` alone on the same float32 rows.

    python bench/replay.py --events 200000 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import reference

from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.config import Settings
from stream_infer.replay import ReplayOptions, run_replay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--nthread", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model_dir = reference.model_dir()
    cards = reference.card_features()
    events = list(reference.events(args.events, seed=7))
    rows = np.empty((len(events), len(reference.FEATURES)), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    with open(tmp / "events.jsonl", "w") as fh:
        for i, event in enumerate(events):
            vector = cards[int(str(event["card_id"])[1:])]
            event["attributes"] = {f"card.{f}": float(v)
                                   for f, v in zip(reference.FIELDS, vector, strict=True)}
            rows[i, 0], rows[i, 1:] = event["amount"], vector
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")

    settings = Settings(features=reference.views("hash"),
                        model={"dir": model_dir.parents[1], "name": "reference",
                               "nthread": args.nthread})
    run = run_replay(settings, ReplayOptions(out=tmp / "results.parquet", input=tmp /
                                             "events.jsonl", features="event"))
    model = XGBoostModel.load(model_dir, nthread=args.nthread)
    started = time.perf_counter()
    for start in range(0, len(rows), 5000):
        model.predict(rows[start:start + 5000])
    predict_s = time.perf_counter() - started
    served = run.columns["score:reference:1"]
    result = {
        "events": args.events, "nthread": args.nthread,
        "replay_events_per_s": round(run.counts.consumed / run.counts.seconds),
        "predict_only_rows_per_s": round(len(rows) / predict_s),
        "ceiling_ratio": round(predict_s / run.counts.seconds, 3),
        "scores_identical": bool(np.array_equal(served, model.predict(rows))),
        "digest": run.digest,
        "machine": f"{platform.machine()} python {platform.python_version()}",
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k:>24}  {v}"
                                                           for k, v in result.items()))


if __name__ == "__main__":
    main()
