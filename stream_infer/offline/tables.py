"""Tables in files: CSV or Parquet -> columns by name (feature loads, training, replay);
event files for replay: JSON-lines lines, or Parquet rows as JSON.

CSV values stay text (the reader decides what a number is); Parquet keeps its types.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError

Table = dict[str, list[Any]]
"""Columns by name, all the same length; an empty cell is ``None``."""

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})


def read_table(path: Path) -> Table:
    """The columns of a CSV (values stay text) or Parquet file (``.parquet``, ``.pq``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    return _read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES else _read_csv(path)


def _read_csv(path: Path) -> Table:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header, rows = _csv_rows(path, csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: malformed CSV: {exc}") from None
    columns = zip(*rows, strict=True) if rows else ([] for _ in header)
    return {name: [cell or None for cell in column]
            for name, column in zip(header, columns, strict=True)}


def _csv_rows(path: Path, reader: Any) -> tuple[list[str], list[list[str]]]:
    header: list[str] = next(reader, [])
    if not header:
        raise ConfigError(f"{path}: empty CSV, expected a header row")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(f"{path}: repeated column names {', '.join(repeated)}")
    rows = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise ConfigError(f"{path} line {reader.line_num}: {len(row)} cells, "
                              f"the header has {len(header)}")
        rows.append(row)
    return header, rows


def _read_parquet(path: Path) -> Table:
    pq = _parquet(path)
    import pyarrow

    try:
        table: Table = pq.read_table(path).to_pydict()
    except (pyarrow.ArrowException, OSError) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from None
    return table


def _parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{path}: reading Parquet needs pyarrow: pip install 'stream-infer[parquet]'"
        ) from None
    return pq


def read_lines(path: Path, size: int = 1 << 17) -> Iterator[list[bytes]]:
    """The lines of a file without their endings (``\\n`` or ``\\r\\n``), ``size`` bytes of
    the file at a time. An empty line is a line; a final line needs no ending."""
    with open(path, "rb") as fh:
        rest = b""
        while data := fh.read(size):
            lines, rest = split_lines(rest + data)
            yield lines
        if rest:
            yield [rest.rstrip(b"\r")]


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``data`` without their endings (``\\n`` or ``\\r\\n``), and
    what follows the last ``\\n``."""
    lines = data.split(b"\n")
    rest = lines.pop()
    return ([line.rstrip(b"\r") for line in lines] if b"\r" in data else lines), rest


def parquet_json_rows(path: Path, batch: int = 10_000) -> Iterator[list[bytes]]:
    """Each row of a Parquet file as a JSON object without its null cells, ``batch`` rows
    at a time."""
    pq = _parquet(path)
    encode = msgspec.json.Encoder().encode
    for part in pq.ParquetFile(path).iter_batches(batch_size=batch):
        names = part.schema.names
        rows = zip(*(column.to_pylist() for column in part.columns), strict=True)
        yield [encode({k: v for k, v in zip(names, row, strict=True) if v is not None})
               for row in rows]
