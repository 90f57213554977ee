"""``stream-infer features``: feature store tools (load, list, backfill)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import _config_arg, _settings, _usage


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    features = sub.add_parser("features", help="feature store tools")
    fsub = features.add_subparsers(required=True, metavar="ACTION")
    load = fsub.add_parser("load", help="load a CSV/Parquet feature table into Redis")
    load.add_argument("file", type=Path)
    load.add_argument("--view", required=True, help="the feature view the table fills")
    load.add_argument("--id-column", help="default: the field named in the view's key")
    load.add_argument("--redis-url", help="override the config's redis.url")
    load.add_argument("--replace", action="store_true", help="delete each key before writing")
    _config_arg(load, required=False)
    load.set_defaults(handler=_features_load)
    listing = fsub.add_parser("list", help="every feature name the configuration defines, and "
                              "where each window group's state lives")
    _config_arg(listing, required=False)
    listing.set_defaults(handler=_features_list)
    back = fsub.add_parser(
        "backfill", help="window features of a history, as the service would have served them",
        description="Compute, for every event of HISTORY (JSON lines or Parquet), the window "
                    "and calendar features of the configuration as the service would have "
                    "served them when it arrived: events arrive at their event_time, labels at "
                    "their label_time (labels first on a tie), through the service's own "
                    "window engine, in memory (never the live state). Writes a Parquet file "
                    "that `model train` reads, and the records that do not decode to "
                    "OUT.dead-letters.jsonl beside it.")
    back.add_argument("history", type=Path, metavar="HISTORY", nargs="?",
                      help="events, JSON lines or Parquet (as replay --input reads them)")
    back.add_argument("--topic", help="instead of HISTORY: every event of this topic, read "
                      "to each partition's end of log and decoded as the service decodes "
                      "it (kafka and decode settings from --config)")
    back.add_argument("--labels", type=Path, metavar="FILE",
                      help="labels (schemas/label.schema.json), JSON lines or Parquet "
                           "(default: none, so no fraud is known and every rate is 0)")
    back.add_argument("--labels-topic", metavar="TOPIC",
                      help="instead of --labels: every label of this topic")
    back.add_argument("--from", dest="from_time", metavar="TIME",
                      help="write only events at or after TIME (event_time, ISO 8601 or epoch "
                           "ms); the earlier ones still fill the windows")
    back.add_argument("--to", dest="to_time", metavar="TIME",
                      help="write only events before TIME")
    back.add_argument("--out", type=Path, required=True, metavar="FILE.parquet")
    _config_arg(back, required=False)
    back.set_defaults(handler=_features_backfill)


def _features_list(args: argparse.Namespace) -> int:
    from ..offline.backfill import defined_names, definition_of, state_prefixes

    settings = _settings(args)
    print("\n".join(defined_names(settings)))
    prefixes = state_prefixes(definition_of(settings))
    print("\nwindow state (a changed definition gets a new prefix and starts fresh)")
    print("\n".join(f"  {name:<12} {prefix}" for name, prefix in prefixes)
          or "  none: no [windows.*] groups configured")
    return 0


def _features_backfill(args: argparse.Namespace) -> int:
    from ..offline.backfill import History, backfill
    from ..records import parse_time_ms

    if (args.history is None) == (args.topic is None):
        raise _usage("features backfill: give HISTORY or --topic, one of them")
    if args.labels is not None and args.labels_topic is not None:
        raise _usage("features backfill: give --labels or --labels-topic, not both")
    events = History(topic=args.topic) if args.topic else History(args.history)
    labels = (History(topic=args.labels_topic) if args.labels_topic
              else History(args.labels) if args.labels else None)
    since, until = (None if t is None else parse_time_ms(t)
                    for t in (args.from_time, args.to_time))
    report = backfill(events, args.out, _settings(args), labels, since_ms=since,
                      until_ms=until)
    print("\n".join(report.lines()))
    return 0


def _features_load(args: argparse.Namespace) -> int:
    from ..adapters.redis import connect
    from ..offline.features import load_features

    settings = _settings(args)
    if args.view not in settings.features:
        have = list(settings.features)
        raise _usage(f"no feature view {args.view!r} in the config (have: {have})")
    redis = settings.redis
    if args.redis_url:
        redis = type(redis).model_validate({**redis.model_dump(), "url": args.redis_url})
    report = load_features(connect(redis), args.file, args.view, settings.features[args.view],
                           id_column=args.id_column, replace=args.replace)
    rate = report.rows / report.seconds if report.seconds else float("inf")
    print(f"loaded {report.rows} rows into view {args.view!r}: {report.keys} keys, "
          f"{report.fields} fields in {report.seconds:.2f}s ({rate:,.0f} rows/s)")
    return 0
