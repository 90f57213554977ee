"""``stream-infer features load``: a CSV or Parquet table -> one Redis value per entity.

:func:`plan_writes` is pure (columns from :func:`~stream_infer.tables.read_table` ->
``(key, mapping)`` per row); :func:`load_features` is the Redis edge: it pipelines ``HSET``
in chunks without MULTI, so it works on Redis and on Redis Cluster (whose pipelines split
the commands by slot).

Values are written as ``repr(float(value))``, the shortest text that reads back as the same
float64, so a feature reads back bit-exactly (and becomes the same float32 as in training).
Empty cells, nulls and NaN are not written: they read back as missing. A view with
``layout = "packed"`` gets one ``SET`` per entity instead: its fields in order as
little-endian float32 (NaN where a cell is empty), the same float32 the model sees.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import FeatureView
from ..errors import ConfigError, redact
from .tables import Table, read_table


@dataclass(frozen=True, slots=True)
class LoadReport:
    """Rows read, distinct keys and field values written, and the wall time of a load."""

    rows: int
    keys: int
    fields: int
    seconds: float


def plan_writes(table: Table, view_name: str, view: FeatureView,
                id_column: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """``(key, {field: text})`` for each row, in order, with only the view's fields.

    The key is the view's template filled from the columns named like its fields (``card_id``
    for ``card:{card_id}``); ``id_column`` names another column for a one-field template.
    Every cell is checked before this returns, so a bad table writes nothing.
    """
    ids = _checked_ids(table, view_name, view, id_column)
    texts = [(f, _numbers(table[f], f, view_name)) for f in view.fields]
    return _rows(view.key, ids, texts)


def plan_vectors(table: Table, view_name: str, view: FeatureView, id_column: str | None = None
                 ) -> dict[str, npt.NDArray[np.float32]]:
    """Each key's packed-layout vector (the view's fields as float32, NaN where empty),
    checked like :func:`plan_writes`, without the round trip through text; a key on several
    rows takes each field from the last row that has it, as loading hashes does."""
    ids = _checked_ids(table, view_name, view, id_column)
    with np.errstate(over="ignore"):  # beyond float32: infinity, as pack() writes it
        values = np.array([_floats(table[f], f, view_name) for f in view.fields],
                          dtype="<f4").T.reshape(-1, len(view.fields))
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    for key, row in zip(_keys(view.key, ids), values, strict=True):
        earlier = vectors.get(key)
        vectors[key] = row if earlier is None else np.where(np.isnan(row), earlier, row)
    return vectors


def _checked_ids(table: Table, view_name: str, view: FeatureView, id_column: str | None
                 ) -> dict[str, list[str]]:
    key_columns = _key_columns(view_name, view, id_column)
    missing = [c for c in dict.fromkeys([*key_columns.values(), *view.fields]) if c not in table]
    if missing:
        raise ConfigError(f"feature view {view_name!r}: the table has no column "
                          f"{', '.join(missing)} (it has: {', '.join(table) or 'none'})")
    return {name: _ids(table[column], column, view_name) for name, column in key_columns.items()}


def load_features(client: Any, path: Path, view_name: str, view: FeatureView, *,
                  id_column: str | None = None, chunk: int = 2000,
                  replace: bool = False) -> LoadReport:
    """Write every row of ``path`` into Redis, ``chunk`` rows per pipelined round trip.

    ``client`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster``. Without ``replace``
    the fields are merged into existing hashes; with it, each key is deleted (in the same
    pipeline) before its first row is written, so it ends up holding exactly what the file
    says. A failed round trip raises FeatureStoreError; earlier chunks stay written.
    """
    from ..adapters.redis import write_pipelined  # the planning half imports no redis

    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, not {chunk}")
    started = time.perf_counter()
    writes = plan_writes(read_table(path), view_name, view, id_column)
    if view.layout == "packed":
        def enqueue(pipe: Any, key: str, mapping: dict[str, str], first: bool) -> None:
            pipe.set(key, pack(mapping, view.fields))  # a later row for the key replaces it
    else:
        def enqueue(pipe: Any, key: str, mapping: dict[str, str], first: bool) -> None:
            if replace and first:
                pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=mapping)
    rows, keys, fields = write_pipelined(client, writes, chunk, f"loading view {view_name!r}",
                                         enqueue)
    return LoadReport(rows, keys, fields, time.perf_counter() - started)


def pack(mapping: dict[str, str], fields: list[str]) -> bytes:
    """A packed-layout value: ``fields`` in order as little-endian float32, NaN if absent."""
    with np.errstate(over="ignore"):  # beyond float32: infinity (enrich clamps it)
        return np.array([float(mapping[f]) if f in mapping else np.nan for f in fields],
                        dtype="<f4").tobytes()


def _rows(template: str, ids: dict[str, list[str]],
          texts: list[tuple[str, list[str | None]]]) -> Iterator[tuple[str, dict[str, str]]]:
    for i, key in enumerate(_keys(template, ids)):
        yield key, {f: text for f, column in texts if (text := column[i]) is not None}


def _keys(template: str, ids: dict[str, list[str]]) -> Iterator[str]:
    names = list(ids)
    for values in zip(*ids.values(), strict=True):
        yield template.format_map(dict(zip(names, values, strict=True)))


def _key_columns(view_name: str, view: FeatureView, id_column: str | None) -> dict[str, str]:
    names = list(dict.fromkeys(re.findall(r"{(\w+)}", view.key)))
    if id_column is None:
        return {name: name for name in names}
    if len(names) != 1:
        raise ConfigError(f"feature view {view_name!r}: the key {view.key!r} names "
                          f"{len(names)} fields, so --id-column cannot say which one it fills")
    return {names[0]: id_column}


def _ids(column: list[Any], name: str, view_name: str) -> list[str]:
    ids = [str(v) for v in column if v is not None and v != ""]
    if len(ids) != len(column):
        row = next(i for i, v in enumerate(column) if v is None or v == "") + 1
        raise ConfigError(f"feature view {view_name!r}: row {row} has no {name}")
    return ids


def _numbers(column: list[Any], field: str, view_name: str) -> list[str | None]:
    texts = []
    for row, value in enumerate(column, start=1):
        try:
            texts.append(_number_text(value))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(redact(f"feature view {view_name!r}: field {field!r} row {row}: "
                                     f"{str(value)[:30]!r} is not a number")) from None
    return texts


def _floats(column: list[Any], field: str, view_name: str) -> list[float]:
    """The cells as floats, NaN where empty; refused like :func:`_numbers`."""
    out = []
    for row, value in enumerate(column, start=1):
        try:
            out.append(math.nan if value is None or value == "" else float(value))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(redact(f"feature view {view_name!r}: field {field!r} row {row}: "
                                     f"{str(value)[:30]!r} is not a number")) from None
    return out


def _number_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    number = float(value)
    return None if number != number else repr(number)
