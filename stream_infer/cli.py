"""Command line: argument parsing and output only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings, load_settings
from .errors import StreamInferError

if TYPE_CHECKING:
    from .registry import Manifest
    from .runner import RunStats

log = logging.getLogger("stream_infer")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except StreamInferError as exc:
        print(f"stream-infer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-infer",
        description="Score payment events for fraud as they stream through Kafka.",
    )
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the scoring service")
    _config_arg(run)
    run.add_argument("--max-events", type=int, help="exit after consuming this many records")
    run.add_argument("--workers", type=int, default=1,
                     help="run N processes in the consumer group: two per core, at most one "
                          "per partition (default 1)")
    run.add_argument("--engine", choices=["native", "faust"], default="native",
                     help="consume with librdkafka (native) or as a Faust agent (faust extra)")
    run.set_defaults(handler=_run)

    demo = sub.add_parser("demo", help="the whole pipeline on an embedded broker and Redis")
    demo.add_argument("--events", type=int, help="stop after N events (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=5000.0, help="events/s offered (0 = max)")
    demo.add_argument("--bad-rate", type=float, default=0.002,
                      help="share of deliberately malformed records (shows the DLQ)")
    demo.add_argument("--models-dir", type=Path, help="default: ./models, else the repo's")
    demo.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                      help="tansu: the embedded broker (default); kafka: Apache Kafka 4.4, "
                           "needs Java 17+ and Maven (jars fetched once, cached)")
    wd = demo.add_argument_group("--windows: window features and delayed labels at work")
    wd.add_argument("--windows", action="store_true",
                    help="the Handbook's simulator, labels a week late, models/demo/2 on "
                         "window features the service computes from the stream")
    wd.add_argument("--days", type=int, help="history length (default: 45; --loop: 30)")
    wd.add_argument("--customers", type=int, default=500, help="(default: 500)")
    wd.add_argument("--terminals", type=int, default=1000, help="(default: 1000)")
    lp = demo.add_argument_group("--loop: the whole loop, from payments to a promotion")
    lp.add_argument("--loop", action="store_true",
                    help="as --windows, with demo v2 the champion and v3 a shadow, every score "
                         "logged; v3 promoted part way, the service swapping to it; then the "
                         "monitor report (precision, recall, challenger, PSI)")
    lp.add_argument("--promote-at", type=float, default=0.6, metavar="SHARE",
                    help="promote v3 once this share of the payments is scored (default 0.6)")
    lp.add_argument("--out-dir", type=Path, metavar="DIR",
                    help="write the scores, labels and alerts read back (JSON lines) and the "
                         "report's JSON here")
    lp.add_argument("--json", type=Path, metavar="FILE", help="write the report's JSON here")
    demo.set_defaults(handler=_demo)

    dev = sub.add_parser("dev", help="local services for development")
    dsub = dev.add_subparsers(required=True, metavar="ACTION")
    up = dsub.add_parser("up", help="start the embedded broker and Redis, write a config for "
                         "them, and wait (Ctrl-C stops both)")
    up.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                    help="tansu: the embedded broker (default); kafka: Apache Kafka 4.4, "
                         "needs Java 17+ and Maven (jars fetched once, cached)")
    up.add_argument("--config-out", type=Path, default=Path("stream-infer.dev.toml"),
                    help="where to write the config (default: ./stream-infer.dev.toml)")
    up.add_argument("--models-dir", type=Path, help="default: ./models, else the repo's")
    up.set_defaults(handler=_dev_up)

    sim = sub.add_parser("simulate", help="synthetic card transactions to Kafka and/or files")
    _config_arg(sim, required=False)
    sim.add_argument("--bootstrap-servers", help="produce to this Kafka (or use --config)")
    sim.add_argument("--topic", help="default: the config's first input topic")
    sim.add_argument("--count", type=int,
                     help="events (default 10,000; the handbook population has its own)")
    sim.add_argument("--rate", type=float, default=0.0, help="events/s (0 = as fast as possible)")
    sim.add_argument("--seed", type=int,
                     help="default: 7; for the handbook population 0, the Handbook's own data")
    sim.add_argument("--event-rate", type=float, default=1000.0,
                     help="events per second of event time (0.1 spreads 60k events over a "
                          "week, for backtests by day)")
    sim.add_argument("--cards", type=int, default=5_000)
    sim.add_argument("--merchants", type=int, default=500)
    sim.add_argument("--format", choices=["json", "avro"], default="json")
    sim.add_argument("--schema-id", type=int, default=1, help="Avro schema id to write")
    sim.add_argument("--features-out", type=Path, help="write card/merchant feature CSVs here")
    sim.add_argument("--training-out", type=Path, help="write a labelled training CSV here")
    sim.add_argument("--jsonl-out", type=Path, help="write the events as JSON lines here")
    _handbook_args(sim)
    sim.set_defaults(handler=_simulate)

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

    _model_parsers(sub)
    _monitor_parsers(sub)

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

    topics = sub.add_parser("topics", help="Kafka topic tools")
    tsub = topics.add_subparsers(required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create the configured topics if missing")
    _config_arg(create)
    create.set_defaults(handler=_topics_create)
    pub = tsub.add_parser("publish", help="a JSON-lines or Parquet history into a topic, each "
                          "record timestamped with its event_time and keyed by card_id")
    pub.add_argument("file", type=Path, help="events, as replay --input reads them")
    pub.add_argument("--topic", required=True, help="the topic to produce to (created if "
                     "missing and kafka.create_topics allows, with retention.ms=-1: kept "
                     "forever, however old the event times)")
    _config_arg(pub, required=False)
    pub.add_argument("--bootstrap-servers", help="produce to this Kafka (or use --config)")
    pub.add_argument("--skip-unreadable", action="store_true",
                     help="skip (and count) records whose event_time cannot be read, instead "
                          "of refusing the file")
    pub.add_argument("--force", action="store_true",
                     help="publish even when the existing topic's retention.ms would delete "
                          "the oldest records soon after they are written, or records are "
                          "stamped over 1 h ahead (which Kafka 4 refuses by default); warns")
    pub.set_defaults(handler=_topics_publish)

    config = sub.add_parser("config", help="configuration tools")
    csub = config.add_subparsers(required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the effective settings, secrets masked")
    _config_arg(show, required=False)
    show.set_defaults(handler=_config_show)
    return parser


def _config_arg(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--config", type=Path, required=required,
                        help="TOML settings file (STREAM_INFER_* variables override it)")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config) if args.config else load_settings()


def _run(args: argparse.Namespace) -> int:
    from .adapters.otel import Tracing
    from .service.app import build_service, serve, start_endpoints
    from .service.metrics import ServiceMetrics

    if args.engine == "faust":
        return _run_faust(args)
    if args.workers > 1:
        from .service.workers import run_workers

        if args.max_events is not None:
            raise _usage("run: --max-events applies to one worker; omit it with --workers")
        return run_workers(_settings(args), args.config, args.workers, args.log_level)
    settings, metrics = _settings(args), ServiceMetrics()
    tracing = Tracing(settings) if settings.tracing.enabled else None
    service = build_service(settings, metrics, tracing.tracer if tracing else None)
    runner = service.runner
    endpoints = start_endpoints(settings, service, metrics, tracing)
    try:
        stats = serve(runner, max_events=args.max_events)
    finally:
        if endpoints:
            endpoints.stop()
        if tracing:
            tracing.shutdown()
    return _stopped(stats)


def _stopped(stats: RunStats) -> int:
    c = stats.counts
    log.info("stopped: %d consumed, %d scored, %d alerts, %d dead-lettered",
             c.consumed, c.scored, c.alerted, c.dead_lettered)
    return 0


def _run_faust(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("faust") is None:
        raise _usage("the Faust engine needs: pip install 'stream-infer[faust]'")
    if args.workers > 1:
        raise _usage("run: --workers is the native engine's; start more Faust workers instead")
    from .adapters.otel import Tracing
    from .service.faust import run_worker
    from .service.metrics import ServiceMetrics

    settings, metrics = _settings(args), ServiceMetrics()
    tracing = Tracing(settings) if settings.tracing.enabled else None
    try:
        stats = run_worker(settings, metrics, tracing, max_events=args.max_events)
    finally:
        if tracing:
            tracing.shutdown()
    return _stopped(stats)


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    if args.days is None:
        args.days = 30 if args.loop else 45
    if args.loop:
        from .demo.loop import LoopOptions, run_loop_demo

        if min(args.days, args.customers, args.terminals) < 1 or not 0 < args.promote_at < 1:
            raise _usage("demo --loop: --days, --customers and --terminals must be >= 1, "
                         "--promote-at between 0 and 1")
        run_loop_demo(LoopOptions(
            days=args.days, customers=args.customers, terminals=args.terminals, rate=args.rate,
            promote_at=args.promote_at, out_dir=args.out_dir, json_path=args.json,
            broker_kind=args.broker, models_dir=args.models_dir), sys.stdout)
        return 0
    if args.windows:
        from .demo.windows import run_window_demo

        if min(args.days, args.customers, args.terminals) < 1:
            raise _usage("demo --windows: --days, --customers and --terminals must be >= 1")
        run_window_demo(days=args.days, customers=args.customers, terminals=args.terminals,
                        rate=args.rate, out=sys.stdout, broker_kind=args.broker,
                        models_dir=args.models_dir)
        return 0
    run_demo(events=args.events, rate=args.rate, bad_rate=args.bad_rate,
             models_dir=args.models_dir, out=sys.stdout, broker_kind=args.broker)
    return 0


def _dev_up(args: argparse.Namespace) -> int:
    from .demo.dev import dev_up

    return dev_up(broker_kind=args.broker, config_out=args.config_out, out=sys.stdout,
                  models_dir=args.models_dir)


def _simulate(args: argparse.Namespace) -> int:
    from .offline import simulate

    if args.population == "handbook":
        return _simulate_handbook(args)
    handbook_only = [flag for flag, given in (
        ("--labels-out", args.labels_out), ("--labels-topic", args.labels_topic),
        ("--label-delay", args.label_delay)) if given is not None]
    if handbook_only:
        raise _usage(f"simulate: {', '.join(handbook_only)} need --population handbook")
    args.count = 10_000 if args.count is None else args.count
    args.seed = 7 if args.seed is None else args.seed
    to_kafka = bool(args.bootstrap_servers or args.config)
    if not (to_kafka or args.features_out or args.training_out or args.jsonl_out):
        raise _usage("simulate: give --bootstrap-servers/--config, or a file output")
    pop = simulate.make_population(cards=args.cards, merchants=args.merchants, seed=args.seed)
    if args.features_out:
        for path in simulate.write_feature_csvs(pop, args.features_out):
            print(f"wrote {path}")
    if args.training_out:
        events = simulate.transactions(pop, count=args.count, seed=args.seed,
                                       rate_per_s=args.event_rate)
        simulate.write_training_csv(args.training_out, simulate.training_rows(pop, events))
        print(f"wrote {args.training_out} ({args.count} labelled rows)")
    if args.jsonl_out:
        events = simulate.transactions(pop, count=args.count, seed=args.seed,
                                       rate_per_s=args.event_rate)
        with open(args.jsonl_out, "w") as fh:
            fh.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        print(f"wrote {args.jsonl_out} ({args.count} events)")
    if to_kafka:
        _simulate_to_kafka(args, pop)
    return 0


def _simulate_to_kafka(args: argparse.Namespace, pop: object) -> None:
    from .adapters.kafka import ensure_topics, produce_stream
    from .demo.run import encode_events
    from .offline import simulate

    kafka = load_settings(args.config).kafka if args.config else Settings().kafka
    servers = args.bootstrap_servers or kafka.bootstrap_servers
    topic = args.topic or kafka.input_topics[0]
    config = {**kafka.producer_config(), "bootstrap.servers": servers}
    ensure_topics({"bootstrap.servers": servers}, [topic], create=kafka.create_topics,
                  partitions=kafka.topic_partitions, replication_factor=kafka.replication_factor)
    events = simulate.transactions(pop, count=args.count, seed=args.seed,  # type: ignore[arg-type]
                                   rate_per_s=args.event_rate)
    sent = produce_stream(config, topic, encode_events(events, args.format, args.schema_id),
                          rate_per_s=args.rate)
    print(f"produced {sent} events to {topic} at {servers}")


def _handbook_args(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--population", choices=["cards", "handbook"], default="cards",
                     help="cards: card payments with three fraud patterns (default); handbook: "
                          "the Fraud-Detection-Handbook's generator, with a labels stream")
    hb = sim.add_argument_group("--population handbook")
    hb.add_argument("--customers", type=int, default=5000, help="(default: 5000)")
    hb.add_argument("--terminals", type=int, default=10_000, help="(default: 10000)")
    hb.add_argument("--days", type=int, default=183, help="(default: 183)")
    hb.add_argument("--start-date", default="2018-04-01", metavar="YYYY-MM-DD",
                    help="the first day, UTC (default: 2018-04-01)")
    hb.add_argument("--radius", type=float, default=5.0,
                    help="a customer uses the terminals closer than this (default: 5)")
    hb.add_argument("--label-delay", metavar="D | LOW..HIGH",
                    help="each label arrives this long after its event: fixed (7d) or uniform "
                         "in a range (1d..30d) (default: 7d)")
    hb.add_argument("--labels-out", type=Path, help="write the labels as JSON lines here, in "
                    "arrival order")
    hb.add_argument("--labels-topic", help="with a broker: produce the labels here, each "
                    "timestamped with its label_time (default: labels)")
    hb.add_argument("--labels-schema-id", type=int, default=2,
                    help="Avro schema id of the labels with --format avro (default: 2)")


def _simulate_handbook(args: argparse.Namespace) -> int:
    from .offline import handbook

    cards_only = [flag for flag, given in (
        ("--count", args.count), ("--features-out", args.features_out),
        ("--training-out", args.training_out)) if given is not None]
    if cards_only:
        raise _usage(f"simulate --population handbook: {', '.join(cards_only)} apply to the "
                     "cards population; size this one with --customers, --terminals, --days")
    if min(args.customers, args.terminals, args.days) < 1:
        raise _usage("simulate: --customers, --terminals and --days must be at least 1")
    to_kafka = bool(args.bootstrap_servers or args.config)
    if not (to_kafka or args.jsonl_out or args.labels_out):
        raise _usage("simulate: give --bootstrap-servers/--config, --jsonl-out or --labels-out")
    seed = 0 if args.seed is None else args.seed
    delay = handbook.Delay.parse(args.label_delay or "7d")
    start = handbook.start_ms(args.start_date)
    pop = handbook.make_population(args.customers, args.terminals, args.radius, seed)
    tx = handbook.generate(pop, args.days, seed)
    events = list(handbook.events(tx, start=start, seed=seed))
    labels = handbook.labels(events, delay, seed)
    print(handbook.summary(tx, args.customers, args.terminals, args.days, args.start_date))
    for path, records, what in ((args.jsonl_out, events, "events"),
                                (args.labels_out, labels, "labels")):
        if path:
            print(f"wrote {path} ({handbook.write_jsonl(path, records):,} {what})")
    if to_kafka:
        kafka = load_settings(args.config).kafka if args.config else Settings().kafka
        if args.bootstrap_servers:
            kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
        topic, labels_topic = args.topic or kafka.input_topics[0], args.labels_topic or "labels"
        done = handbook.publish(kafka, events, topic, labels, labels_topic,
                                *handbook.encoders(args.format, args.schema_id,
                                                   args.labels_schema_id),
                                rate_per_s=args.rate)
        print(f"produced {done.events:,} events to {topic} and {done.labels:,} labels to "
              f"{labels_topic} at {kafka.bootstrap_servers}, timestamped with their "
              "event_time and label_time")
    return 0


def _features_list(args: argparse.Namespace) -> int:
    from .offline.backfill import defined_names, definition_of, state_prefixes

    settings = _settings(args)
    print("\n".join(defined_names(settings)))
    prefixes = state_prefixes(definition_of(settings))
    print("\nwindow state (a changed definition gets a new prefix and starts fresh)")
    print("\n".join(f"  {name:<12} {prefix}" for name, prefix in prefixes)
          or "  none: no [windows.*] groups configured")
    return 0


def _features_backfill(args: argparse.Namespace) -> int:
    from .offline.backfill import History, backfill
    from .offline.training import parse_time_ms

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
    from .adapters.redis import connect
    from .offline.features import load_features

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


TRAIN_DESCRIPTION = """\
Train an XGBoost model on a labelled CSV/Parquet table and write the next version of
--name under --models-dir. The rows are split three ways: train rows fit the trees,
validation rows fit the alert threshold (best F1) and early stopping, and test rows give
the printed metrics and nothing else. At random (default), or by event time:

  train [--train-from, --train-until)  gap  validation [.., --valid-until)
                                       gap  test [.., --test-until)

The gap is the label delay. Without --valid-until there is no validation window: the
test window starts one gap after --train-until, and the validation rows are the training
window's latest --valid-fraction.
"""


def _model_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = sub.add_parser("model", help="model tools")
    msub = model.add_subparsers(required=True, metavar="ACTION")
    train = msub.add_parser("train", help="train an XGBoost model from labelled CSV/Parquet",
                            description=TRAIN_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", type=Path, metavar="DATA",
                       help="CSV or Parquet: one column per feature, named as the service "
                            "names it, and a 0/1 label")
    rows = train.add_argument_group("columns and output")
    rows.add_argument("--features", metavar="A,B,...",
                      help="feature columns, in order (default: every column but the label, "
                           "time, card and id columns)")
    rows.add_argument("--label", default="label", metavar="COLUMN", help="(default: label)")
    rows.add_argument("--time-column", default="event_time", metavar="COLUMN",
                      help="event time, ISO 8601 or epoch ms (default: event_time)")
    rows.add_argument("--card-column", default="card_id", metavar="COLUMN",
                      help="the card, for --drop-known-compromised (default: card_id)")
    rows.add_argument("--name", default="demo", help="(default: demo)")
    rows.add_argument("--version", help="(default: the next integer version)")
    rows.add_argument("--models-dir", type=Path, default=Path("models"), metavar="DIR",
                      help="(default: models)")
    split = train.add_argument_group("split")
    split.add_argument("--seed", type=int, default=7,
                       help="seed of the random split and of XGBoost (default: 7)")
    split.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                       help="random split: the share of rows to test on (default: 0.2)")
    split.add_argument("--valid-fraction", type=float, metavar="F",
                       help="the share of rows to validate on: of all rows at random, of the "
                            "training window's latest rows in a time split without "
                            "--valid-until (default: 0.2 when the threshold is fitted or early "
                            "stopping is on, else 0)")
    split.add_argument("--train-until", metavar="TIME",
                       help="split by event time: train before TIME, ISO 8601 (UTC if naive) "
                            "or epoch ms (default: a random split)")
    split.add_argument("--train-from", metavar="TIME", help="train from TIME (default: the "
                       "first row)")
    split.add_argument("--gap", metavar="DURATION",
                       help="the label delay before each later window, e.g. 7d (default: 0s)")
    split.add_argument("--valid-until", metavar="TIME",
                       help="a validation window [--train-until + gap, TIME); the test window "
                            "starts a gap after it (default: none)")
    split.add_argument("--test-until", metavar="TIME", help="test before TIME (default: to the "
                       "last row)")
    split.add_argument("--drop-known-compromised", action="store_true",
                       help="leave out of each test day the cards whose fraud was known when "
                            "it began (a fraud is known a gap after it; frauds from "
                            "--train-from on count), as the Fraud-Detection-Handbook's test "
                            "sets do (default: off)")
    fit = train.add_argument_group("threshold and XGBoost")
    fit.add_argument("--threshold", type=float, metavar="X",
                     help="a fixed alert threshold (default: the best F1 on the validation rows)")
    fit.add_argument("--trees", type=int, default=200, metavar="N",
                     help="boosting rounds, the most with early stopping (default: 200)")
    fit.add_argument("--depth", type=int, default=6, metavar="D", help="max_depth (default: 6)")
    fit.add_argument("--nthread", type=int, default=2, metavar="N",
                     help="XGBoost threads (default: 2)")
    fit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="any XGBoost parameter, repeatable; the value is an int, else a float, "
                          "else a string. Overrides --params-file, which overrides the options "
                          "above and the defaults objective=binary:logistic, tree_method=hist, "
                          "eta=0.1, eval_metric=aucpr")
    fit.add_argument("--params-file", type=Path, metavar="FILE",
                     help="XGBoost parameters from a TOML or JSON table (default: none)")
    fit.add_argument("--early-stopping-rounds", type=int, metavar="N",
                     help="stop when the last eval_metric on the validation rows has not "
                          "improved for N rounds, and keep the best iteration's trees "
                          "(default: off)")
    train.set_defaults(handler=_model_train)

    register = msub.add_parser(
        "register", help="import an XGBoost model trained elsewhere",
        description="Import a model saved with Booster.save_model or XGBClassifier.save_model "
                    "(JSON or UBJSON; never a pickle) as the next version of --name, with a "
                    "manifest (sha256, feature order, threshold). It is checked, and loaded as "
                    "the service loads it, before it is published.")
    register.add_argument("model", type=Path, metavar="MODEL", help="model.json or model.ubj")
    register.add_argument("--name", required=True)
    register.add_argument("--version", help="(default: the next integer version)")
    register.add_argument("--models-dir", type=Path, default=Path("models"), metavar="DIR",
                          help="(default: models)")
    register.add_argument("--features", metavar="A,B,...",
                          help="the feature order (default: the booster's own feature names; "
                               "required when it has none, and must equal them when it has)")
    register.add_argument("--threshold", type=float, metavar="X",
                          help="the alert threshold (default: 0.5)")
    register.set_defaults(handler=_model_register)

    listing = msub.add_parser("list", help="every model version, its figures, and which ones "
                              "the configuration serves")
    _registry_args(listing)
    listing.set_defaults(handler=_model_list)
    show = msub.add_parser("show", help="one version's manifest, training summary and serving "
                           "status")
    show.add_argument("ref", metavar="NAME[:VERSION]",
                      help="(default version: the one `latest` resolves to: the champion "
                           "pointer's, else the highest)")
    _registry_args(show)
    show.set_defaults(handler=_model_show)
    promote = msub.add_parser(
        "promote", help="make a version the champion: a running service swaps to it",
        description="Point models/NAME/CHAMPION at VERSION, atomically. A service whose "
                    "model.version is `latest` (the default) or `champion` serves it from its "
                    "next reload (model.reload_poll_s, or SIGHUP), without a restart. The "
                    "version is first checked as the service loads it (sha256, no pickle, "
                    "XGBoost reads it, feature order); with --config, also with the "
                    "configuration's feature views and shadows. A refused version leaves the "
                    "pointer as it was (exit code 2).")
    promote.add_argument("ref", metavar="NAME:VERSION")
    _registry_args(promote)
    promote.set_defaults(handler=_model_promote)


def _monitor_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    monitor = sub.add_parser("monitor", help="realized accuracy: scores joined to labels")
    msub = monitor.add_subparsers(required=True, metavar="ACTION")
    run = msub.add_parser("run", help="join the scores and labels topics as they come and "
                          "export the figures on /metrics (a consumer group of its own)")
    _config_arg(run)
    run.add_argument("--group", help="consumer group (default: <kafka.group_id>-monitor)")
    run.add_argument("--host", default="0.0.0.0", help="metrics address (default 0.0.0.0)")
    run.add_argument("--port", type=int, default=9465, help="metrics port (default 9465)")
    run.add_argument("--ttl-days", type=int, default=35,
                     help="days of event time the join holds (default 35)")
    run.add_argument("--max-scores", type=int, default=2_000_000,
                     help="at most this many scores held; the oldest day goes first")
    run.add_argument("--refresh-s", type=float, default=15.0,
                     help="seconds between recomputations of the figures (default 15)")
    report = msub.add_parser("report", help="realized accuracy per model and day, and "
                             "champion against challengers, from the topics or files")
    _config_arg(report, required=False)
    report.add_argument("--from", dest="from_time", required=True, metavar="DATE",
                        help="events at or after DATE (ISO 8601 or epoch ms)")
    report.add_argument("--to", dest="to_time", required=True, metavar="DATE",
                        help="events before DATE")
    report.add_argument("--as-of", metavar="TIME", help="judge maturity as of TIME "
                        "(default: now)")
    report.add_argument("--scores", type=Path, action="append", metavar="FILE",
                        help="JSON-lines score records instead of the scores topic")
    report.add_argument("--labels", type=Path, action="append", metavar="FILE",
                        help="JSON-lines labels instead of the labels topic")
    report.add_argument("--models-dir", type=Path, metavar="DIR",
                        help="where the models' manifests are, for PSI against their training "
                             "profiles (default: the configuration's model.dir; none: no PSI)")
    report.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    report.add_argument("--json", type=Path, help="also write the report as JSON here")
    report.add_argument("--html", type=Path, help="also write an HTML page here")
    for parser in (run, report):
        parser.add_argument("--k", type=int, default=100,
                            help="cards per day for card precision@k (default 100)")
        parser.add_argument("--maturity-days", type=int, default=7,
                            help="days after which an unlabelled event counts as genuine")
    run.set_defaults(handler=_monitor_run)
    report.set_defaults(handler=_monitor_report)


def _monitor_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .monitor.run import MonitorOptions, run_monitor

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options = MonitorOptions(group=args.group, host=args.host, port=args.port,
                             horizon_days=args.maturity_days, k=args.k, ttl_days=args.ttl_days,
                             max_scores=args.max_scores, refresh_s=args.refresh_s)
    try:
        feed = run_monitor(_settings(args), options, stop=stop)
    except KeyboardInterrupt:
        return 0
    log.info("monitor stopped: %s", ", ".join(
        f"{kind} {outcome} {n:,}" for (kind, outcome), n in sorted(feed.counts.items())))
    return 0


def _monitor_report(args: argparse.Namespace) -> int:
    import time

    from .decode import make_label_decoder
    from .monitor import report
    from .monitor.feed import Feed
    from .monitor.join import JoinState
    from .monitor.run import read_report_input
    from .offline.training import parse_time_ms

    if args.html:
        from .offline import charts

        charts.require()  # before reading, not after it
    settings = _settings(args) if args.config else None
    options = report.ReportOptions(
        from_ms=parse_time_ms(args.from_time), to_ms=parse_time_ms(args.to_time),
        as_of_ms=parse_time_ms(args.as_of) if args.as_of else int(time.time() * 1000),
        horizon_days=args.maturity_days, k=args.k, draws=args.draws, seed=args.seed)
    state = JoinState(ttl_days=None, max_scores=None, max_labels=None)
    labels = make_label_decoder(settings.decode) if settings and not args.labels else None
    vectors = report.FeatureVectors(options.from_ms, options.to_ms)
    feed = Feed(state, labels, from_ms=options.from_ms, to_ms=options.to_ms,
                on_score=vectors.add)
    origin = read_report_input(settings, feed, scores=args.scores, labels=args.labels)
    context = {"input": origin, "records": ", ".join(
        f"{kind} {outcome} {n:,}" for (kind, outcome), n in sorted(feed.counts.items()))}
    models_dir = args.models_dir or (settings.model.dir if settings else None)
    drift = (report.drift(vectors, report.load_profiles(Path(models_dir), vectors.models()))
             if models_dir is not None else None)
    built = report.build(state, options, context, drift)
    print(report.table(built))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(built), indent=2) + "\n")
    if args.html:
        args.html.write_text(report.html_page(built, state.rows(options.from_ms,
                                                                options.to_ms), options))
    return 0


def _registry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, metavar="DIR",
                        help="(default: the configuration's model.dir)")
    _config_arg(parser, required=False)


def _model_train(args: argparse.Namespace) -> int:
    from .offline.training import (
        TimeSplit,
        parse_duration_ms,
        parse_param,
        parse_time_ms,
        read_params_file,
        train,
    )

    def when(text: str | None) -> int | None:
        return None if text is None else parse_time_ms(text)

    split = None
    if args.train_until:
        split = TimeSplit(train_until_ms=parse_time_ms(args.train_until),
                          gap_ms=parse_duration_ms(args.gap or "0s"),
                          test_until_ms=when(args.test_until), train_from_ms=when(args.train_from),
                          valid_until_ms=when(args.valid_until))
    else:
        given = [flag for flag, value in (
            ("--train-from", args.train_from), ("--gap", args.gap),
            ("--valid-until", args.valid_until), ("--test-until", args.test_until),
            ("--drop-known-compromised", args.drop_known_compromised)) if value]
        if given:
            raise _usage(f"model train: {', '.join(given)} need --train-until")
    params = read_params_file(args.params_file) if args.params_file else {}
    params |= dict(parse_param(item) for item in args.param)
    report = train(
        args.data, models_dir=args.models_dir, name=args.name, version=args.version,
        features=args.features.split(",") if args.features else None, label_column=args.label,
        time_column=args.time_column, card_column=args.card_column,
        test_fraction=args.test_fraction, valid_fraction=args.valid_fraction, seed=args.seed,
        n_estimators=args.trees, max_depth=args.depth, nthread=args.nthread, params=params,
        early_stopping_rounds=args.early_stopping_rounds, threshold=args.threshold,
        split=split, drop_known_compromised=args.drop_known_compromised)
    print(report.summary())
    return 0


def _model_register(args: argparse.Namespace) -> int:
    from .offline.training import register

    report = register(args.model, models_dir=args.models_dir, name=args.name,
                      version=args.version,
                      features=args.features.split(",") if args.features else None,
                      threshold=args.threshold)
    print(report.summary())
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from .registry import names, versions

    settings, root = _registry(args)
    served, unresolved = _served(settings, root)
    rows = [["model", "version", "features", "threshold", "files", "training", "serving"]]
    refused, pointers = [], []
    for name in names(root):
        pointer = _pointer(root, name)
        pointers.append(f"{name} -> {pointer}" if pointer else f"{name}: none (latest = the "
                        "highest version)")
        for version in versions(root, name):
            manifest, problem = _inspect(root / name / version)
            roles = [*served.get((name, version), []), *(["pointer"] * (pointer == version))]
            rows.append([name, version, str(len(manifest.features)) if manifest else "?",
                         f"{manifest.threshold:.4f}" if manifest else "?",
                         "REFUSED" if problem else "ok",
                         _figures(manifest.training) if manifest else "-", ", ".join(roles)])
            if problem:
                refused.append(f"{name} {version}: {problem}")
    print(f"models in {root}")
    print("\n".join(_table(rows, right={2, 3})) if len(rows) > 1 else "  (no model versions)")
    print(f"champion pointers  {'; '.join(pointers) or '-'}")
    print(f"serving            {_configured(args, settings, root)}")
    for line in [*unresolved, *refused]:
        print(f"refused            {line}")
    return 0


def _model_show(args: argparse.Namespace) -> int:
    from .registry import MANIFEST, resolve

    settings, root = _registry(args)
    name, version = _ref(args.ref)
    model_dir = resolve(root, name, version or "latest")
    manifest, problem = _inspect(model_dir)
    if manifest is None:
        raise _usage(f"{model_dir / MANIFEST}: {problem}")
    served, _ = _served(settings, root)
    roles = [f"{role} of the configuration" for role in served.get((name, model_dir.name), [])]
    pointer = _pointer(root, name)
    roles.append("the champion pointer names it" if pointer == model_dir.name else
                 f"the champion pointer names {pointer}" if pointer else "no champion pointer")
    source = manifest.training.get("threshold")
    how = f" ({source['source']})" if isinstance(source, dict) and "source" in source else ""
    print(f"{manifest.name} {manifest.version}  ({model_dir})")
    for key, value in [
        ("serving", "; ".join(roles)),
        ("files", f"REFUSED: {problem}" if problem else
         f"ok: {manifest.model_file} ({manifest.format}), sha256 {manifest.sha256}"),
        ("created", manifest.created or "-"), ("threshold", f"{manifest.threshold:.4f}{how}"),
        ("features", f"{len(manifest.features)}, in order: {', '.join(manifest.features)}"),
        ("training", _figures(manifest.training)),
    ]:
        print(f"  {key:<10}  {value}")
    print(f"training, as {MANIFEST} records it:")
    print(json.dumps(manifest.training, indent=2))
    return 0


def _model_promote(args: argparse.Namespace) -> int:
    from .adapters.xgboost import XGBoostModel
    from .errors import ModelError
    from .registry import CHAMPION, FOLLOWS_CHAMPION, promote, read_manifest, resolve

    settings, root = _registry(args)
    name, version = _ref(args.ref)
    if version is None:
        raise _usage(f"model promote {args.ref}: give NAME:VERSION")
    refs = settings.model.refs()
    follows = [i for i, (n, v) in enumerate(refs) if n == name and v in FOLLOWS_CHAMPION]

    def check(model_dir: Path) -> None:
        if args.config is None or not follows:
            XGBoostModel.load(model_dir, nthread=1, backend="xgboost")
            return
        from .service.app import load_models

        load_models(settings, [model_dir if i in follows else resolve(root, n, v)
                               for i, (n, v) in enumerate(refs)])

    try:
        before = promote(root, name, version, check)
    except StreamInferError as exc:
        raise ModelError(f"{name}:{version} not promoted, the champion pointer is unchanged: "
                         f"{exc}") from None
    manifest = read_manifest(root / name / version)
    print(f"promoted {name} {version}: {root / name / CHAMPION} names {version} (before: "
          f"{before or 'no pointer, latest was the highest version'})")
    print(f"  checked    sha256, not a pickle, XGBoost loads it, its feature order is the "
          f"manifest's ({len(manifest.features)} features)"
          f"{', with the configuration' if args.config and follows else ''}")
    print(f"  threshold  {manifest.threshold:.4f}")
    when = (f"within model.reload_poll_s ({settings.model.reload_poll_s:g} s) or at once on "
            f"SIGHUP" if settings.model.reload_poll_s else "on SIGHUP")
    if args.config is None:
        print(f"  serving    services on {name}:latest or {name}:champion swap to it at "
              f"their next reload (model.reload_poll_s, or SIGHUP)")
    elif follows:
        role = "champion" if 0 in follows else "shadow"
        print(f"  serving    a service with {args.config} serves it as {role} from its next "
              f"reload: {when}")
    else:
        print(f"  serving    note: {args.config} does not follow {name}'s pointer "
              f"({_configured(args, settings, root)})")
    return 0


def _registry(args: argparse.Namespace) -> tuple[Settings, Path]:
    """The settings (``--config``, else the defaults and environment) and the models
    directory (``--models-dir``, else the settings')."""
    settings = _settings(args)
    return settings, Path(args.models_dir or settings.model.dir)


def _ref(text: str) -> tuple[str, str | None]:
    """``NAME[:VERSION]`` -> ``(NAME, VERSION or None)``."""
    name, _, version = text.partition(":")
    if not name or ":" in version:
        raise _usage(f"{text!r}: expected NAME or NAME:VERSION")
    return name, version or None


def _served(settings: Settings, root: Path) -> tuple[dict[tuple[str, str], list[str]],
                                                      list[str]]:
    """The roles each (name, version) has for a service with ``settings`` now, and the
    references it cannot resolve."""
    from .registry import resolve

    served: dict[tuple[str, str], list[str]] = {}
    unresolved = []
    for i, (name, version) in enumerate(settings.model.refs()):
        role = "champion" if i == 0 else "shadow"
        try:
            served.setdefault((name, resolve(root, name, version).name), []).append(role)
        except StreamInferError as exc:
            unresolved.append(f"{role} {name}:{version}: {exc}")
    return served, unresolved


def _configured(args: argparse.Namespace, settings: Settings, root: Path) -> str:
    """What the configuration serves from ``root``, in one line."""
    from .registry import resolve

    parts = []
    for i, (name, version) in enumerate(settings.model.refs()):
        try:
            now = resolve(root, name, version).name
        except StreamInferError:
            now = "nothing"
        parts.append(f"{'champion' if i == 0 else 'shadow'} {name}:{version} -> {now}")
    return f"{'; '.join(parts)}  ({args.config or 'default settings'})"


def _pointer(root: Path, name: str) -> str | None:
    """The version ``name``'s champion pointer names, or why it cannot be read."""
    from .registry import champion

    try:
        return champion(root, name)
    except StreamInferError as exc:
        return f"unreadable ({exc})"


def _inspect(model_dir: Path) -> tuple[Manifest | None, str | None]:
    """The manifest (None if unreadable) and why the version is refused (None if it passes
    :func:`~stream_infer.registry.load_verified`)."""
    from .registry import load_verified, read_manifest

    try:
        return load_verified(model_dir).manifest, None
    except StreamInferError as exc:
        try:
            return read_manifest(model_dir), str(exc)
        except StreamInferError:
            return None, str(exc)


def _figures(training: dict[str, object]) -> str:
    """A training summary's key figures: the test rows' AUC and average precision."""
    registered = training.get("registered_from")
    if isinstance(registered, dict):
        return f"registered from {registered.get('file', '?')}"
    figures = [f"{label} {value:.4f}" for label, value in
               (("AUC", training.get("auc")), ("AP", training.get("average_precision")))
               if isinstance(value, float)]
    rows, positives = training.get("test_rows"), training.get("test_positives")
    if isinstance(rows, int):
        figures.append(f"{rows:,} rows" + (f", {positives:,} positives"
                                           if isinstance(positives, int) else ""))
    return f"test {', '.join(figures)}" if figures else "-"


def _table(rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    """Rows as aligned columns (``right``: the right-aligned ones)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def _replay(args: argparse.Namespace) -> int:
    from .offline import backtest, charts
    from .offline.training import parse_time_ms
    from .replay.options import ReplayOptions
    from .replay.run import run_replay

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


def _topics_create(args: argparse.Namespace) -> int:
    from .adapters.kafka import ensure_topics

    kafka = _settings(args).kafka
    labels = [kafka.labels_topic] if kafka.labels_topic else []
    created = ensure_topics(kafka.common_config(),
                            [*kafka.input_topics, *labels, *kafka.output_topics()],
                            create=True, partitions=kafka.topic_partitions,
                            replication_factor=kafka.replication_factor)
    print(f"created {created}" if created else "all topics exist")
    return 0


def _topics_publish(args: argparse.Namespace) -> int:
    from .offline.publish import publish

    if not (args.config or args.bootstrap_servers):
        raise _usage("topics publish: give --bootstrap-servers or --config")
    kafka = load_settings(args.config).kafka if args.config else Settings().kafka
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    report = publish(args.file, args.topic, kafka, skip_unreadable=args.skip_unreadable,
                     force=args.force)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("\n".join(report.lines()))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).redacted(), indent=2))
    return 0


def _usage(message: str) -> StreamInferError:
    from .errors import ConfigError

    return ConfigError(message)
