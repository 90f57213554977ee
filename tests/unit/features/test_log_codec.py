"""An entity's log as the live path stores it (``live.encode_log``): every id and value
back exactly, whatever the ids hold, alone or encoded and decoded with a batch's other logs
(``encode_logs``, ``decode_logs``)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stream_infer.features.live import decode_log, decode_logs, encode_log, encode_logs
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


@given(logs=st.lists(st.lists(IDS, max_size=6), max_size=6), width=st.integers(1, 5),
       data=st.data())
def test_a_batch_of_logs_comes_back_each_as_it_was_stored(logs: list[list[str]], width: int,
                                                          data: st.DataObject) -> None:
    stored = [EntityLog(np.array(data.draw(st.lists(
        st.floats(allow_nan=True), min_size=len(ids) * width, max_size=len(ids) * width)),
        np.float64).reshape(len(ids), width), np.array(ids, object)) for ids in logs]
    versions = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(logs),
                                  max_size=len(logs)))
    blobs = encode_logs(stored, versions)
    assert blobs == [encode_log(log, version) for log, version in
                     zip(stored, versions, strict=True)]
    back = decode_logs(blobs, width)
    assert [version for _, version in back] == versions
    for (log, _), original in zip(back, stored, strict=True):
        assert log.ids.tolist() == original.ids.tolist()
        np.testing.assert_array_equal(log.rows, original.rows)


def test_decoded_rows_can_take_a_label() -> None:
    first = EntityLog(np.zeros((2, 3)), np.array(["a", "b"], object))
    second = EntityLog(np.ones((1, 3)), np.array(["c"], object))
    (one, _), (two, _) = decode_logs(encode_logs([first, second], [1, 2]), 3)
    one.rows[1, 1] = 5.0
    assert one.rows[:, 1].tolist() == [0.0, 5.0] and two.rows.tolist() == [[1.0, 1.0, 1.0]]
