"""``stream-infer config``: configuration tools."""

from __future__ import annotations

import argparse
import json

from .common import _config_arg, _settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="configuration tools")
    csub = config.add_subparsers(required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the effective settings, secrets masked")
    _config_arg(show, required=False)
    show.set_defaults(handler=_config_show)


def _config_show(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).redacted(), indent=2))
    return 0
