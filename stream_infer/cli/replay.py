"""``stream-infer replay``: backtest, history through the pipeline and models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import _config_arg, _settings, _usage


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser("replay", help="backtest: history through the pipeline and models")
    _config_arg(rep, required=False)
    source = rep.add_mutually_exclusive_group(required=True)
    source.add_argument("--topic", help="replay this topic (never joins a group or commits)")
    source.add_argument("--input", type=Path, help="replay a JSON-lines or Parquet event file")
    rep.add_argument("--from", dest="from_time", metavar="TIME",
                     help="records at or after TIME (ISO 8601 or epoch ms): the record "
                          "timestamp on a topic, event_time in a file")
    rep.add_argument("--to", dest="to_time", metavar="TIME", help="records before TIME")
    rep.add_argument("--offsets", metavar="P:FIRST-LAST,...",
                     help="explicit topic offsets instead of times, both ends included "
                          "(e.g. 0:0-9999,1:500-700)")
    rep.add_argument("--model", action="append", metavar="NAME[:VERSION]",
                     help="models to score with, champion first (default: the config's "
                          "champion and shadows)")
    rep.add_argument("--features", choices=["event", "snapshot", "redis", "scores"],
                     default="event",
                     help="event: view features carried in attributes under their full name; "
                          "snapshot: --snapshot files; redis: live store (not point-in-time); "
                          "scores: the vectors the live service logged to its scores topic")
    rep.add_argument("--scores-topic", help="with --features scores (default: kafka.scores_topic)")
    rep.add_argument("--snapshot", action="append", default=[], metavar="VIEW=PATH",
                     help="a CSV/Parquet feature table for a view (with --features snapshot)")
    rep.add_argument("--out", type=Path, required=True, help="results Parquet file")
    rep.add_argument("--report", type=Path, help="also write an HTML report here")
    rep.add_argument("--json", type=Path, help="also write the report as JSON here")
    rep.add_argument("--k", type=int, default=100, help="cards per day for card precision@k")
    rep.add_argument("--known-compromised", type=Path, metavar="FILE",
                     help="CSV/Parquet of cards already known compromised (card_id, optional "
                          "known_from time): left out of card precision@k's rankings from "
                          "then on, as the Fraud-Detection-Handbook's protocol does")
    rep.add_argument("--output-topic", help="also produce the champion's alerts here "
                     "(never the live alert, scores or dead-letter topic)")
    rep.add_argument("--jobs", type=int, metavar="N",
                     help="processes decoding a JSON-lines --input with --features event and no "
                          "--output-topic (default: one per core for files of 32 MiB or more; "
                          "1: in the scoring process); other inputs decode in one process; "
                          "refused above 1 with [windows.*] in the config")
    rep.add_argument("--labels", type=Path, metavar="FILE",
                     help="labels (schemas/label.schema.json), JSON lines or Parquet, for the "
                          "window features ([windows.*], computed in memory as `features "
                          "backfill` computes them): each applies once the replay reaches its "
                          "label_time (default: none, so every rate is 0)")
    rep.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    from ..offline import backtest, charts
    from ..records import parse_time_ms
    from ..replay.options import ReplayOptions
    from ..replay.run import run_replay

    options = ReplayOptions(
        topic=args.topic, input=args.input, out=args.out, features=args.features,
        models=[(m.partition(":")[0], m.partition(":")[2] or "latest") for m in args.model or []],
        snapshots=dict(_view_path(item) for item in args.snapshot),
        from_ms=parse_time_ms(args.from_time) if args.from_time else None,
        to_ms=parse_time_ms(args.to_time) if args.to_time else None,
        output_topic=args.output_topic, scores_topic=args.scores_topic,
        offsets=_offsets(args.offsets) if args.offsets else None, k=args.k, jobs=args.jobs,
        known_compromised=args.known_compromised, labels=args.labels)
    if args.report:
        charts.require()  # before the replay, not after it
    run = run_replay(_settings(args), options)
    c = run.counts
    rate = c.consumed / c.seconds if c.seconds else 0.0
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(c.dlq_reasons.items()))
    print(f"replayed {c.consumed:,} records from {run.origin} in {c.seconds:.2f}s "
          f"({rate:,.0f} records/s)")
    print(f"  scored {c.scored:,}, dead-lettered {c.dead_lettered:,}"
          f"{f' ({reasons})' if reasons else ''}, outside the time range {c.out_of_range:,}")
    for line in run.accounting():
        print(f"  {line}")
    print(f"  features: {run.context['features']}")
    for line in run.windows():
        print(f"  {line}")
    print(f"results {args.out}  sha256 {run.digest}")
    print(f"dead letters {run.context['dead_letters_file']}  ({c.dead_lettered:,} records, "
          f"with reason and error)\n")
    print(backtest.table(run.reports, warnings=run.context["warnings"], drift=run.drift))
    if args.json:
        report = backtest.as_json(run.reports, run.context, drift=run.drift)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.report:
        args.report.write_text(run.html())
    return 0


def _offsets(text: str) -> dict[int, tuple[int, int]]:
    """``0:0-99,1:5-9`` -> ``{0: (0, 100), 1: (5, 10)}`` (end exclusive)."""
    ranges = {}
    for part in text.split(","):
        partition, _, span = part.strip().partition(":")
        first, _, last = span.partition("-")
        try:
            ranges[int(partition)] = (int(first), int(last) + 1)
        except ValueError:
            raise _usage(f"--offsets {part!r}: expected PARTITION:FIRST-LAST") from None
        if ranges[int(partition)][1] <= int(first):
            raise _usage(f"--offsets {part!r}: LAST must not be before FIRST")
    return ranges


def _view_path(item: str) -> tuple[str, Path]:
    view, sep, path = item.partition("=")
    if not sep or not view or not path:
        raise _usage(f"--snapshot {item!r}: expected VIEW=PATH")
    return view, Path(path)
