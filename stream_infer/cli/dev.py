"""``stream-infer dev``: local services for development."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _dev_up(args: argparse.Namespace) -> int:
    from ..demo.dev import dev_up

    return dev_up(broker_kind=args.broker, config_out=args.config_out, out=sys.stdout,
                  models_dir=args.models_dir)
