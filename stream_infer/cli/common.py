"""What the command groups share: the ``--config`` option, the settings it names, usage
errors and the log."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import Settings, load_settings
from ..errors import StreamInferError

log = logging.getLogger("stream_infer")


def _config_arg(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--config", type=Path, required=required,
                        help="TOML settings file (STREAM_INFER_* variables override it)")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config) if args.config else load_settings()


def _usage(message: str) -> StreamInferError:
    from ..errors import ConfigError

    return ConfigError(message)
