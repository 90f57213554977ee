"""Replay (backtest) throughput against bare ``inplace_predict`` on the same rows.

Writes N reference events (``bench/reference.py``) that carry their card features in
``attributes`` to a JSON-lines file, replays it through the reference model with
``--features event`` exactly as ``stream-infer replay`` does (decode, enrich, score, results
file), and measures, in the same run, ``inplace_predict`` alone on the same float32 rows,
the serving model's ``predict`` on them, and the live decoder alone on the same lines (the
floor: replay decodes every record with it, on one core).

``replay_events_per_s`` counts the replay loop (read, decode, enrich, score, gather);
``end_to_end_events_per_s`` the whole ``run_replay`` (models loaded, results file written,
reports computed, decoding processes started). ``--jobs`` is ``replay --jobs`` (default:
auto, one decoding process per core for this file; 1: decode in the scoring process).

    python bench/replay.py --events 200000 --json
    python bench/replay.py --events 200000 --jobs 1 --json

The heavy imports are inside ``main``: the decoding processes are spawned, and a spawned
child imports this script again (as ``__mp_main__``) before it can decode.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path


def main() -> None:
    import numpy as np
    import reference

    from stream_infer.adapters.xgboost import XGBoostModel
    from stream_infer.config import Settings
    from stream_infer.decode import make_decoder
    from stream_infer.replay.parallel import parallel_jobs
    from stream_infer.replay.run import ReplayOptions, run_replay

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--nthread", type=int, default=1)
    parser.add_argument("--features", choices=["event", "snapshot"], default="event",
                        help="card features in each event's attributes, or a snapshot CSV")
    parser.add_argument("--jobs", type=int, default=None,
                        help="decoding processes (default: auto, as replay --jobs)")
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
            if args.features == "event":
                event["attributes"] = {f"card.{f}": float(v)
                                       for f, v in zip(reference.FIELDS, vector, strict=True)}
            rows[i, 0], rows[i, 1:] = event["amount"], vector
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
    with open(tmp / "cards.csv", "w") as fh:  # repr: the float32 values round-trip exactly
        fh.write(",".join(["card_id", *reference.FIELDS]) + "\n")
        for n, vector in enumerate(cards):
            fh.write(",".join([reference.card_id(n), *map(repr, map(float, vector))]) + "\n")

    settings = Settings(features=reference.views("hash"),
                        model={"dir": model_dir.parents[1], "name": "reference",
                               "nthread": args.nthread})
    options = ReplayOptions(out=tmp / "results.parquet", input=tmp / "events.jsonl",
                            features=args.features, snapshots={"card": tmp / "cards.csv"},
                            jobs=args.jobs)
    started = time.perf_counter()
    run = run_replay(settings, options)
    end_to_end_s = time.perf_counter() - started
    model = XGBoostModel.load(model_dir, nthread=args.nthread)
    decode = make_decoder(settings.decode)
    lines = (tmp / "events.jsonl").read_bytes().splitlines()
    predict_s = _timed(lambda: [model.booster.inplace_predict(rows[s:s + 5000])
                                for s in range(0, len(rows), 5000)])
    model_s = _timed(lambda: [model.predict(rows[s:s + 5000])
                              for s in range(0, len(rows), 5000)])
    decode_s = _timed(lambda: deque(map(decode, lines), maxlen=0))
    served = run.columns["score:reference:1"]
    result = {
        "events": args.events, "nthread": args.nthread, "features": args.features,
        "jobs": parallel_jobs(settings, options),
        "replay_events_per_s": round(run.counts.consumed / run.counts.seconds),
        "end_to_end_events_per_s": round(run.counts.consumed / end_to_end_s),
        "predict_only_rows_per_s": round(len(rows) / predict_s),
        "model_backend": getattr(model, "backend", "xgboost"),
        "model_rows_per_s": round(len(rows) / model_s),
        "decode_only_events_per_s": round(len(lines) / decode_s),
        "ceiling_ratio": round(predict_s / run.counts.seconds, 3),
        "decode_ratio": round(decode_s / run.counts.seconds, 3),
        "scores_identical": bool(np.array_equal(served, model.booster.inplace_predict(rows))),
        "digest": run.digest,
        "machine": f"{platform.machine()} python {platform.python_version()}",
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k:>24}  {v}"
                                                           for k, v in result.items()))


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
