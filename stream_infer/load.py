"""``stream-infer features load``: a CSV/Parquet table -> Redis hashes in a feature view's layout.

:func:`plan_writes` is pure (rows -> ``(key, mapping)``); :func:`load_features` pipelines the
writes in chunks (``HSET`` with a mapping, no MULTI), so it works on Redis and Redis Cluster.
Numbers are written as ``repr(float)``, which reads back bit-exactly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FeatureView
from .errors import ConfigError
from .training import read_table

Table = dict[str, list[Any]]


@dataclass(frozen=True)
class LoadReport:
    rows: int
    keys: int
    fields: int
    seconds: float


def plan_writes(table: Table, view_name: str, view: FeatureView,
                id_column: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """The key and field mapping for each row; empty cells are not written (they read as NaN)."""
    (key_field, *more) = re.findall(r"{(\w+)}", view.key)
    if more:
        raise ConfigError(f"view {view_name!r}: loading needs a key template with one field")
    id_column = id_column or key_field
    missing = [c for c in [id_column, *view.fields] if c not in table]
    if missing:
        raise ConfigError(f"view {view_name!r}: the table has no columns {missing}")
    ids = table[id_column]
    columns = [(f, table[f]) for f in view.fields]
    for i, entity in enumerate(ids):
        if entity is None or entity == "":
            raise ConfigError(f"view {view_name!r}: row {i + 1} has no {id_column}")
        mapping = {f: _cell(col[i], f) for f, col in columns if col[i] not in (None, "")}
        yield view.key.format_map({key_field: entity}), mapping


def load_features(client: Any, path: Path, view_name: str, view: FeatureView, *,
                  id_column: str | None = None, chunk: int = 2000,
                  replace: bool = False) -> LoadReport:
    """Write every row of ``path`` into Redis, ``chunk`` rows per pipelined round trip."""
    started = time.perf_counter()
    rows = fields = 0
    pipe = client.pipeline(transaction=False)
    for key, mapping in plan_writes(read_table(path), view_name, view, id_column):
        if replace:
            pipe.delete(key)
        if mapping:
            pipe.hset(key, mapping=mapping)
        rows += 1
        fields += len(mapping)
        if rows % chunk == 0:
            pipe.execute()
    pipe.execute()
    return LoadReport(rows, rows, fields, time.perf_counter() - started)


def _cell(value: Any, field: str) -> str:
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        raise ConfigError(f"field {field!r}: {str(value)[:20]!r} is not a number") from None
