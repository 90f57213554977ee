"""Time-boxed, coverage-guided fuzzing of decode and the dead-letter path (atheris/libFuzzer).

    python -m pip install atheris
    python bench/fuzz_decode.py --seconds 300 [--corpus DIR] [--json] [-- libFuzzer flags]

Each input is laid out as: byte 0 picks the decoder (bit 0: Confluent Avro, else JSON) and
whether a ``traceparent`` header follows (bit 1); byte 1 is the header's length; then the
header, then the record value. The record goes through the real runner step (consume ->
``Pipeline.process`` -> send -> flush -> store) with the in-memory fakes, the span links of a
real (exporter-less) tracer, and the shipped XGBoost model at threshold 0 so that every valid
event is also explained. A crash is any exception escaping that step, a record that does not
end as exactly one score record or exactly one dead letter, a dead letter without exactly one
known ``dlq.reason``, ``dlq.error`` text holding a long digit run, or an offset not stored.
libFuzzer stops at the first crash and writes the input as ``crash-<sha1>``; otherwise the run
ends after ``--seconds`` and prints executions, dead-letter reasons seen and crashes (0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("atheris is not installed: python -m pip install atheris")

with atheris.instrument_imports(include=["stream_infer"]):
    from stream_infer.adapters.memory import MemoryFeatureStore, MemorySink, MemorySource, Record
    from stream_infer.adapters.xgboost import XGBoostModel
    from stream_infer.config import FeatureView
    from stream_infer.decode import (
        SCHEMA_DIR,
        AvroDecoder,
        JsonDecoder,
        JsonEncoder,
        LocalSchemas,
        encode_avro_transaction,
    )
    from stream_infer.pipeline import Pipeline, Topics
    from stream_infer.registry import resolve
    from stream_infer.runner import Runner, RunnerConfig
    from stream_infer.score import ModelSet

from opentelemetry.sdk.trace import TracerProvider

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 4096
REASONS = {"undecodable", "oversized", "unknown-schema", "schema"}
LONG_DIGITS = re.compile(rb"\d(?:[ -]?\d){11,}")
TOPICS = Topics(alerts="alerts", dead_letter="dlq", scores="scores")
EVENT: dict[str, Any] = {
    "event_id": "e1", "event_time": "2026-01-01T00:00:00+02:00", "card_id": "c1",
    "merchant_id": "m1", "amount": 12.5, "currency": "EUR", "customer_id": "u",
    "terminal_id": "t", "mcc": "5411", "country": "FR", "channel": "pos", "label": 1,
    "attributes": {"distance_km": 3.5, "secs_since_prev": 60.0},
}


class Harness:
    """One record per input through a runner step; counts what happened."""

    def __init__(self) -> None:
        served = XGBoostModel.load(resolve(ROOT / "models", "demo"), nthread=1)
        model = XGBoostModel(served.booster, name=served.name, version=served.version,
                             features=served.features, threshold=0.0)
        views = {view: FeatureView(key=f"{view}:{{{view}_id}}",
                                   fields=[f.split(".", 1)[1] for f in model.features
                                           if f.startswith(f"{view}.")])
                 for view in ("card", "merchant")}
        self.scoring = ModelSet.build(model, views)
        self.store = MemoryFeatureStore({"card:c1": {"avg_amount_30d": b"1e300"}})
        self.tracer = TracerProvider().get_tracer("fuzz")
        self.decoders = {"json": JsonDecoder(LIMIT),
                         "avro": AvroDecoder(LocalSchemas(SCHEMA_DIR, 1), LIMIT)}
        self.pipelines = {name: self._pipeline(d) for name, d in self.decoders.items()}
        self.executions = 0
        self.outcomes: Counter[str] = Counter()

    def _pipeline(self, decoder: Any) -> Pipeline:
        return Pipeline(decoder=decoder, models=self.scoring, store=self.store, topics=TOPICS,
                        encoder=JsonEncoder(), tracer=self.tracer, reasons_top_k=3,
                        clock=lambda: 42)

    def __call__(self, data: bytes) -> None:
        self.executions += 1
        fmt = "avro" if data[:1] and data[0] & 1 else "json"
        headers = None
        if data[:1] and data[0] & 2:
            size = data[1] if len(data) > 1 else 0
            headers = [("traceparent", data[2:2 + size])]
            value = data[2 + size:]
        else:
            value = data[2:]
        record = Record(value or None, _offset=7, _key=data[:2] or None, _headers=headers)
        source, sink = MemorySource([record]), MemorySink()
        runner = Runner(source, sink, self.pipelines[fmt],
                        RunnerConfig(max_records=1, max_wait_s=0, max_links=2))
        assert runner.step() == 1
        self._check(sink, source)

    def _check(self, sink: MemorySink, source: MemorySource) -> None:
        dead, scores = sink.on(TOPICS.dead_letter), sink.on(TOPICS.scores)
        assert len(dead) + len(scores) == 1, f"{len(dead)} dead letters, {len(scores)} scores"
        assert source.stored == {("transactions", 0): 8}
        if scores:
            self.outcomes["scored"] += 1
            json.loads(scores[0].value or b"")
            return
        names = [k for k, _ in dead[0].headers]
        assert names.count("dlq.reason") == 1 and names.count("dlq.error") == 1, names
        headers = dict(dead[0].headers)
        reason = (headers["dlq.reason"] or b"").decode()
        assert reason in REASONS, reason
        assert not LONG_DIGITS.search(headers["dlq.error"] or b""), headers["dlq.error"]
        self.outcomes[reason] += 1


def seeds() -> list[bytes]:
    """Inputs in the harness layout: valid events in both formats, and hostile shapes."""
    doc = json.dumps(EVENT).encode()
    avro = encode_avro_transaction(EVENT)
    avro_ms = encode_avro_transaction({**EVENT, "event_time": 1_700_000_000_000})
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    return [
        b"\x00\x00" + doc,
        b"\x01\x00" + avro,
        b"\x01\x00" + avro_ms,
        b"\x02" + bytes([len(traceparent)]) + traceparent + doc,
        b"\x03" + bytes([len(traceparent)]) + traceparent + avro,
        b"\x00\x00" + json.dumps({**EVENT, "card_id": "4111 1111 1111 1111"}).encode(),
        b"\x00\x00" + json.dumps({**EVENT, "amount": 1e300}).encode(),
        b"\x00\x00" + doc.replace(b'"pos"', b"[" * 40 + b"]" * 40),
        b"\x01\x00" + b"\x00\x00\x00\x00\x02" + avro[5:],
        b"\x00\x00" + doc.replace(b'"pos"', b'"' + b"x" * LIMIT + b'"'),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="time box (default 60)")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args, libfuzzer = parser.parse_known_args()
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="fuzz-decode-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)

    harness = Harness()
    started = time.monotonic()
    deadline = started + args.seconds

    def one_input(data: bytes) -> None:
        harness(data)
        if time.monotonic() >= deadline:
            report(harness, time.monotonic() - started, as_json=args.json)
            sys.stdout.flush()
            os._exit(0)  # libFuzzer has no clean way back to Python

    flags = [a for a in libfuzzer if a != "--"]
    atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds + 60}", "-max_len=6000",
                   "-print_final_stats=0", *flags, str(corpus)], one_input)
    atheris.Fuzz()


def report(harness: Harness, seconds: float, *, as_json: bool) -> None:
    summary = {"seconds": round(seconds, 1), "executions": harness.executions,
               "executions_per_s": round(harness.executions / seconds),
               "outcomes": dict(harness.outcomes.most_common()), "crashes": 0}
    if as_json:
        print(json.dumps(summary))
        return
    print(f"\nfuzz_decode: {summary['executions']:,} executions in {seconds:.0f} s "
          f"({summary['executions_per_s']:,}/s), crashes 0")
    for outcome, count in harness.outcomes.most_common():
        print(f"  {outcome:<15} {count:>10,}")


if __name__ == "__main__":
    main()
