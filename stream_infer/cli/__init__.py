"""Command line: argument parsing and output only; the work happens in the modules it calls.

One module per command group adds its parsers (``add_parsers``) and holds its handlers;
``common`` has what they share. The handlers import what they call when they run, so
``stream-infer --help`` loads no adapter, service or offline module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import StreamInferError
from . import config, demo, dev, features, model, monitor, replay, run, simulate, topics

__all__ = ["main"]


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
    for group in (run, demo, dev, simulate, features, model, monitor, replay, topics, config):
        group.add_parsers(sub)
    return parser
