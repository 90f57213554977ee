"""What ``stream-infer dev up`` writes and prints, without starting anything: the config
loads as the demo's settings, and every command it suggests parses with the real CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from stream_infer.cli import _parser
from stream_infer.config import load_settings
from stream_infer.demo.dev import next_steps, write_config
from stream_infer.demo.run import demo_sections, demo_settings

ADDRESSES = ("127.0.0.1:40001", "redis://127.0.0.1:40002/0", Path("/opt/models"))


def test_the_written_config_loads_as_the_demo_settings(tmp_path: Path) -> None:
    path = write_config(tmp_path / "dev.toml", demo_sections(*ADDRESSES))
    assert load_settings(path) == demo_settings(*ADDRESSES)
    assert [p.name for p in tmp_path.iterdir()] == ["dev.toml"]  # no partial file left


def test_a_rewritten_config_replaces_the_old_one_whole(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    path.write_text("stale = true\n" * 1000)
    write_config(path, demo_sections(*ADDRESSES))
    assert "stale" not in path.read_text()


def test_every_suggested_command_parses(tmp_path: Path) -> None:
    config = tmp_path / "dir with space" / "dev.toml"
    commands = [shlex.split(line) for line in next_steps(config).splitlines()
                if line.strip().startswith("stream-infer ")]
    assert [argv[1] for argv in commands] == ["simulate", "features", "features", "run", "replay"]
    for argv in commands:
        args = _parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
        assert args.config.resolve() == config.resolve()


def test_a_config_under_the_working_directory_is_shown_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "run --config stream-infer.dev.toml --max-events" in next_steps(
        tmp_path / "stream-infer.dev.toml")
