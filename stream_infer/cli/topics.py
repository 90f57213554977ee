"""``stream-infer topics``: Kafka topic tools (create, publish)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Settings, load_settings
from .common import _config_arg, _settings, _usage


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _topics_create(args: argparse.Namespace) -> int:
    from ..adapters.kafka import ensure_topics

    kafka = _settings(args).kafka
    labels = [kafka.labels_topic] if kafka.labels_topic else []
    created = ensure_topics(kafka.common_config(),
                            [*kafka.input_topics, *labels, *kafka.output_topics()],
                            create=True, partitions=kafka.topic_partitions,
                            replication_factor=kafka.replication_factor)
    print(f"created {created}" if created else "all topics exist")
    return 0


def _topics_publish(args: argparse.Namespace) -> int:
    from ..offline.publish import publish

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
