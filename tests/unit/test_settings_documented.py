"""Every setting is in README.md's configuration tables, and every setting named there
exists: the reference cannot drift from ``stream_infer.config.Settings``."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from stream_infer.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
NAME = re.compile(r"`([a-z_<>.]+)`")


def settings_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """The dotted path of every leaf setting; a ``dict`` of sections is ``<section>.<name>``
    placeholders (``features.<view>``, ``windows.<group>``)."""
    for name, field in model.model_fields.items():
        path, kind = prefix + name, field.annotation
        if typing.get_origin(kind) is dict:
            section = typing.get_args(kind)[1]
            if isinstance(section, type) and issubclass(section, BaseModel):
                yield from settings_paths(section, f"{path}.<>.")
                continue
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from settings_paths(kind, path + ".")
        else:
            yield path


def documented(text: str) -> set[str]:
    """The settings named in the first column of the configuration tables (rows whose first
    name starts with a section of :class:`Settings`): `a.b`, `a.c`; `a.b`, `.c` and
    `a.b`, `c` (siblings of the name before); placeholders ``<view>`` read as ``<>``."""
    sections = set(Settings.model_fields)
    out: set[str] = set()
    for line in text.splitlines():
        names = NAME.findall(line.split("|")[1]) if line.startswith("| `") else []
        if not names or names[0].split(".")[0] not in sections:
            continue
        last = ""
        for name in names:
            name = re.sub(r"<[a-z]+>", "<>", name)
            if last and "." not in name.lstrip("."):
                name = last.rsplit(".", 1)[0] + "." + name.lstrip(".")
            out.add(name)
            last = name
    return out


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    paths = set(settings_paths(Settings))
    named = documented(README.read_text())
    assert sorted(paths - named) == [], "settings missing from README's configuration tables"
    assert sorted(named - paths) == [], "README names settings that do not exist"


def test_the_checker_reads_the_shorthand_and_placeholders() -> None:
    table = ("| `windows.<group>.delay`, `.allowed_lateness` | x |\n"
             "| `kafka.security.sasl_mechanism`, `sasl_username` | unset |\n"
             "| `redis.url` | y |\n| not a row `kafka.x` |\n| `stream_infer_psi` | metric |\n")
    assert documented(table) == {
        "windows.<>.delay", "windows.<>.allowed_lateness", "kafka.security.sasl_mechanism",
        "kafka.security.sasl_username", "redis.url"}
    assert "tracing.otlp_timeout_s" in set(settings_paths(Settings))
    assert "features.<>.layout" in set(settings_paths(Settings))
