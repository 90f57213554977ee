"""The pure half of ``features load``: files -> columns -> ``(key, mapping)`` per row."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from stream_infer.config import FeatureView
from stream_infer.errors import ConfigError
from stream_infer.offline.features import plan_writes
from stream_infer.offline.tables import Table, read_table

VIEW = FeatureView(key="card:{card_id}", fields=["avg", "count"])


def plan(table: Table, view: FeatureView = VIEW,
         id_column: str | None = None) -> list[tuple[str, dict[str, str]]]:
    return list(plan_writes(table, "card", view, id_column))


def test_rows_become_keys_from_the_template_with_only_the_view_fields() -> None:
    table: Table = {"card_id": ["c1", "c2"], "avg": ["1.5", "2"], "count": [3, 4], "other": [9, 9]}
    assert plan(table) == [
        ("card:c1", {"avg": "1.5", "count": "3.0"}),
        ("card:c2", {"avg": "2.0", "count": "4.0"}),
    ]


def test_empty_cells_nulls_and_nan_are_not_written() -> None:
    table: Table = {"card_id": ["a", "b", "c"], "avg": ["", None, math.nan],
                    "count": [1, "nan", None]}
    assert plan(table) == [("card:a", {"count": "1.0"}), ("card:b", {}), ("card:c", {})]


@pytest.mark.parametrize("value", [0.1 + 0.2, 1e-310, 123456789.123456789, -0.0, 3.4e38, 1e300])
def test_written_text_reads_back_as_the_same_float64_bits(value: float) -> None:
    ((_, mapping),) = plan({"card_id": ["c"], "avg": [value], "count": [str(value)]})
    for text in mapping.values():
        assert struct.pack("<d", float(text)) == struct.pack("<d", value)


def test_a_multi_field_template_takes_each_field_from_its_column() -> None:
    view = FeatureView(key="pair:{card_id}:{merchant_id}", fields=["n"])
    table: Table = {"card_id": ["c1"], "merchant_id": ["m9"], "n": ["5"]}
    assert plan(table, view) == [("pair:c1:m9", {"n": "5.0"})]


def test_another_id_column_can_be_named() -> None:
    table: Table = {"token": ["t", 7], "avg": [1, 2], "count": [2, 3]}
    assert [key for key, _ in plan(table, id_column="token")] == ["card:t", "card:7"]


@pytest.mark.parametrize(("table", "message"), [
    ({"card_id": ["c"], "avg": [1]}, r"no column count \(it has: card_id, avg\)"),
    ({"id": ["c"], "x": [1]}, r"no column card_id, avg, count"),
    ({"card_id": ["c", ""], "avg": [1, 1], "count": [1, 1]}, "row 2 has no card_id"),
    ({"card_id": ["c", "d"], "avg": ["1", "high"], "count": [1, 1]},
     r"field 'avg' row 2: 'high' is not a number"),
    ({"card_id": ["c"], "avg": ["4111 1111 1111 1111"], "count": [1]}, r"\[redacted\]"),
])
def test_bad_tables_are_clear_errors(table: Table, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(table)


def test_a_bad_cell_anywhere_fails_before_the_first_row_is_planned() -> None:
    table: Table = {"card_id": ["c1", "c2"], "avg": ["1", "x"], "count": [1, 1]}
    with pytest.raises(ConfigError):
        plan_writes(table, "card", VIEW)


def test_id_column_is_refused_when_the_template_has_two_fields() -> None:
    view = FeatureView(key="pair:{card_id}:{merchant_id}", fields=["n"])
    with pytest.raises(ConfigError, match="names 2 fields"):
        plan({"card_id": ["c"], "merchant_id": ["m"], "n": [1]}, view, id_column="card_id")


def test_csv_columns_keep_text_and_empty_cells_become_none(tmp_path: Path) -> None:
    path = tmp_path / "cards.csv"
    path.write_bytes(b"\xef\xbb\xbfcard_id,avg,count\r\nc1,0.30000000000000004,\r\n\r\nc2,,7\r\n")
    assert read_table(path) == {"card_id": ["c1", "c2"], "avg": ["0.30000000000000004", None],
                                "count": [None, "7"]}


def test_a_csv_with_only_a_header_has_empty_columns(tmp_path: Path) -> None:
    path = tmp_path / "cards.csv"
    path.write_text("card_id,avg\n")
    assert read_table(path) == {"card_id": [], "avg": []}
    assert list(plan_writes(read_table(path), "card",
                            FeatureView(key="card:{card_id}", fields=["avg"]))) == []


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty CSV"),
    ("card_id,avg,avg\nc,1,2\n", "repeated column names avg"),
    ("card_id,avg\nc1,1\nc2,1,9\n", "line 3: 3 cells, the header has 2"),
])
def test_malformed_csv_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cards.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_table(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_table(tmp_path / "nope.csv")


def test_parquet_columns_keep_their_types_and_nulls(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "cards.parquet"
    pq.write_table(pa.table({"card_id": ["c1", "c2"], "avg": [0.1 + 0.2, None],
                             "count": pa.array([3, 4], pa.int32())}), path)
    table = read_table(path)
    assert table == {"card_id": ["c1", "c2"], "avg": [0.1 + 0.2, None], "count": [3, 4]}
    assert plan(table) == [("card:c1", {"avg": "0.30000000000000004", "count": "3.0"}),
                           ("card:c2", {"count": "4.0"})]


def test_a_corrupt_parquet_file_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "cards.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        read_table(path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cards.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r"pip install 'stream-infer\[parquet\]'"):
        read_table(path)


def test_the_pure_half_imports_neither_redis_nor_pyarrow() -> None:
    code = ("import sys, stream_infer.offline.features\n"
            "print([m for m in ('redis', 'pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_vectors_planned_directly_equal_the_packed_values_loading_writes() -> None:
    from stream_infer.offline.features import pack, plan_vectors

    view = FeatureView(key="card:{card_id}", fields=["a", "b", "c"], layout="packed")
    table = {"card_id": ["c1", "c2", "c1", "c3"],
             "a": ["0.1", None, "", "1e39"], "b": ["2", "3.5", "-7", None],
             "c": [None, "nan", "0.30000000000000004", "-0"]}
    merged: dict[str, dict[str, str]] = {}
    for key, mapping in plan_writes(table, "card", view):
        merged.setdefault(key, {}).update(mapping)  # a later row overrides the fields it has
    expected = {key: pack(mapping, view.fields) for key, mapping in merged.items()}
    got = {key: vector.astype("<f4").tobytes()
           for key, vector in plan_vectors(table, "card", view).items()}
    assert got == expected and list(got) == ["card:c1", "card:c2", "card:c3"]
    with pytest.raises(ConfigError, match="field 'b' row 2: 'x' is not a number"):
        plan_vectors({**table, "b": ["2", "x", "1", "1"]}, "card", view)
