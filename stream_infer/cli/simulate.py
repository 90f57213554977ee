"""``stream-infer simulate``: synthetic card transactions, or the Fraud-Detection-Handbook's
population with its labels, to Kafka and/or files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import Settings, load_settings
from .common import _config_arg, _usage


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _simulate(args: argparse.Namespace) -> int:
    from ..offline import simulate

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
    from ..adapters.kafka import ensure_topics, produce_stream
    from ..demo.run import encode_events
    from ..offline import simulate

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
    from ..offline import handbook

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
