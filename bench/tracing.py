"""Does a dead telemetry backend slow scoring? Runner throughput, tracing off vs on with a
stopped OTLP/HTTP endpoint, in the same run, on the same records (in-memory source/sink).

    python bench/tracing.py --events 100000 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry import trace

from stream_infer.adapters.memory import MemoryFeatureStore, MemorySink, MemorySource, Record
from stream_infer.adapters.otel import Tracing
from stream_infer.adapters.xgboost import XGBoostModel
from stream_infer.config import load_settings
from stream_infer.decode import JsonDecoder
from stream_infer.demo.embedded import free_port
from stream_infer.offline import simulate
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.registry import resolve
from stream_infer.runner import Runner, RunnerConfig
from stream_infer.score import ModelSet

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the exporter logs every failed retry
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(
        features={"card": {"key": "card:{card_id}", "fields": list(simulate.CARD_FIELDS)},
                  "merchant": {"key": "merchant:{merchant_id}",
                               "fields": list(simulate.MERCHANT_FIELDS)}},
        tracing={"kafka_topic": None, "otlp": True, "otlp_timeout_s": 1.0},
    )
    pop = simulate.make_population(seed=7)
    events = list(simulate.transactions(pop, count=args.events, seed=3))
    records = [Record(json.dumps(e).encode(), _offset=i,
                      _headers=[("traceparent", f"00-{i + 1:032x}-{i + 1:016x}-01".encode())])
               for i, e in enumerate(events)]
    store = MemoryFeatureStore({
        **{f"card:{r['card_id']}": {k: repr(v).encode() for k, v in r.items() if k != "card_id"}
           for r in simulate.card_features(pop)},
        **{f"merchant:{r['merchant_id']}":
           {k: repr(v).encode() for k, v in r.items() if k != "merchant_id"}
           for r in simulate.merchant_features(pop)}})
    model = XGBoostModel.load(resolve(ROOT / "models", "demo"), nthread=1)

    def run(tracer: Any) -> float:
        pipeline = Pipeline(decoder=JsonDecoder(),
                            models=ModelSet.build(model, settings.features), store=store,
                            topics=Topics("alerts", "dlq"), encoder=msgspec.json.Encoder().encode,
                            tracer=tracer)
        runner = Runner(MemorySource(records), MemorySink(), pipeline,
                        RunnerConfig(max_records=args.batch, max_wait_s=0))
        started = time.perf_counter()
        runner.run(max_events=args.events)
        return args.events / (time.perf_counter() - started)

    run(trace.NoOpTracer())  # warm-up
    off = run(trace.NoOpTracer())
    unexported = Tracing(settings.model_copy(update={"tracing": settings.tracing.model_copy(
        update={"otlp": False})}))
    traced = run(unexported.tracer)
    tracing = Tracing(settings)
    dead = run(tracing.tracer)
    off_again = run(trace.NoOpTracer())
    traced_again = run(unexported.tracer)
    tracing.shutdown()
    baseline, traced_mean = (off + off_again) / 2, (traced + traced_again) / 2
    result = {"events": args.events, "batch": args.batch,
              "tracing_off_events_per_s": round(baseline),
              "tracing_no_exporter_events_per_s": round(traced_mean),
              "tracing_dead_otlp_events_per_s": round(dead),
              "dead_otlp_vs_no_exporter": round(dead / traced_mean, 3),
              "tracing_cost_ratio": round(traced_mean / baseline, 3)}
    print(json.dumps(result) if args.json else "\n".join(f"{k:>32}  {v}" for k, v in
                                                         result.items()))


if __name__ == "__main__":
    main()
