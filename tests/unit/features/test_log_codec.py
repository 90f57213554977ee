"""An entity's log as the live path stores it (``live.encode_log``): every id and value
back exactly, whatever the ids hold."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stream_infer.features.live import decode_log, encode_log
from stream_infer.features.state import EntityLog

IDS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=128)


@given(ids=st.lists(IDS, max_size=20), version=st.integers(0, 2**64 - 1),
       width=st.integers(1, 9), data=st.data())
def test_a_log_comes_back_as_it_was_stored(ids: list[str], version: int, width: int,
                                            data: st.DataObject) -> None:
    values = data.draw(st.lists(st.floats(allow_nan=True), min_size=len(ids) * width,
                                max_size=len(ids) * width))
    rows = np.array(values, np.float64).reshape(len(ids), width)
    log, back = decode_log(encode_log(EntityLog(rows, np.array(ids, object)), version), width)
    assert back == version
    assert log.ids.tolist() == ids
    np.testing.assert_array_equal(log.rows, rows)


def test_ids_with_separators_and_any_script_survive() -> None:
    ids = ["a\x1fb", "|", "", "日本", "e\xff", "\U0001f600", "x\x00y"]
    rows = np.arange(len(ids) * 2, dtype=np.float64).reshape(len(ids), 2)
    log, _ = decode_log(encode_log(EntityLog(rows, np.array(ids, object)), 7), 2)
    assert log.ids.tolist() == ids
