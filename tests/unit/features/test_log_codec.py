"""An entity's log as the live path stores it (``features.codec``): every id and value back
exactly, whatever the ids hold, alone or encoded and decoded with a batch's other logs,
compressed or not; the served features stored as float32 only when that keeps every value,
long logs compressed with the version still where the write script reads it, and blobs of
every kind read back side by side. A log whose ids are still as stored answers like one
given them."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_infer.errors import FeatureStoreError
from stream_infer.features.codec import (
    COMPRESS_FROM,
    decode_log,
    decode_logs,
    encode_log,
    encode_logs,
)
from stream_infer.features.state import EntityLog, stored_ids

IDS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=128)
FLOAT32S = st.floats(allow_nan=True, width=32)
COMPRESS = st.sampled_from([0, None, COMPRESS_FROM])
"""Every blob compressed, none, or the service's."""


@given(ids=st.lists(IDS, max_size=20), version=st.integers(0, 2**64 - 1),
       width=st.integers(1, 9), compress=COMPRESS, data=st.data())
def test_a_log_comes_back_as_it_was_stored(ids: list[str], version: int, width: int,
                                            compress: int | None,
                                            data: st.DataObject) -> None:
    values = data.draw(st.lists(st.floats(allow_nan=True), min_size=len(ids) * width,
                                max_size=len(ids) * width))
    rows = np.array(values, np.float64).reshape(len(ids), width)
    narrow = data.draw(st.integers(0, width - 1))
    blob = encode_log(EntityLog(rows, np.array(ids, object)), version, narrow, compress)
    log, back = decode_log(blob, width, narrow)
    assert back == version
    assert log.ids.tolist() == ids
    assert_same_bits(log.rows, rows)


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Equal bit for bit: a served memo comes back exactly, a NaN with its payload too."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


def test_ids_with_separators_and_any_script_survive() -> None:
    ids = ["a\x1fb", "|", "", "日本", "e\xff", "\U0001f600", "x\x00y"]
    rows = np.arange(len(ids) * 2, dtype=np.float64).reshape(len(ids), 2)
    log, _ = decode_log(encode_log(EntityLog(rows, np.array(ids, object)), 7), 2)
    assert log.ids.tolist() == ids


@given(ids=st.lists(st.text("ax\xff日", max_size=3), max_size=12),
       wanted=st.text("ax\xff日", max_size=3))
def test_an_id_is_found_at_its_newest_row_not_inside_another_id(ids: list[str],
                                                                 wanted: str) -> None:
    """``x`` is not found in ``ax`` nor ``xa``; the same answer as stored or decoded."""
    rows = np.zeros((len(ids), 2))
    want = max((i for i, other in enumerate(ids) if other == wanted), default=-1)
    assert EntityLog(rows, stored=stored_ids(np.array(ids, object))).last_index(wanted) == want
    assert EntityLog(rows, np.array(ids, object)).last_index(wanted) == want


def _logs(data: st.DataObject, sizes: list[int], width: int, narrow: int) -> list[EntityLog]:
    """Logs of ``sizes`` rows: any float64 in the first columns, float32 values in the last
    ``narrow`` (the served features)."""
    logs = []
    for size in sizes:
        wide = data.draw(st.lists(st.floats(allow_nan=True), min_size=size * (width - narrow),
                                  max_size=size * (width - narrow)))
        served = data.draw(st.lists(FLOAT32S, min_size=size * narrow, max_size=size * narrow))
        rows = np.hstack([np.array(wide, np.float64).reshape(size, width - narrow),
                          np.array(served, np.float64).reshape(size, narrow)])
        logs.append(EntityLog(rows, np.array([f"e{size}-{i}" for i in range(size)], object)))
    return logs


@given(sizes=st.lists(st.integers(0, 6), max_size=6), width=st.integers(2, 6),
       compress=COMPRESS, data=st.data())
def test_a_batch_of_logs_comes_back_each_as_it_was_stored(sizes: list[int], width: int,
                                                          compress: int | None,
                                                          data: st.DataObject) -> None:
    narrow = data.draw(st.integers(1, width - 1))
    stored = _logs(data, sizes, width, narrow)
    versions = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(sizes),
                                  max_size=len(sizes)))
    blobs = encode_logs(stored, versions, narrow, compress)
    assert blobs == [encode_log(log, version, narrow, compress) for log, version in
                     zip(stored, versions, strict=True)]
    back = decode_logs(blobs, width, narrow)
    assert [version for _, version in back] == versions
    for (log, _), original in zip(back, stored, strict=True):
        assert log.ids.tolist() == original.ids.tolist()
        assert_same_bits(log.rows, original.rows)


def test_served_features_that_are_float32_are_stored_in_four_bytes() -> None:
    rows = np.array([[1.0, 0.1, np.float32(0.1)], [2.0, 1e300, np.nan]])
    log = EntityLog(rows, np.array(["a", "b"], object))
    assert len(encode_log(log, 1, 1)) == len(encode_log(log, 1, 0)) - 2 * 4


def test_a_value_float32_would_change_keeps_its_batch_in_float64() -> None:
    exact = EntityLog(np.array([[1.0, 0.5]]), np.array(["a"], object))
    inexact = EntityLog(np.array([[2.0, 0.1]]), np.array(["b"], object))
    blobs = encode_logs([exact, inexact], [1, 1], 1)
    assert blobs == encode_logs([exact, inexact], [1, 1], 0)
    assert decode_logs(blobs, 2, 1)[1][0].rows.tolist() == [[2.0, 0.1]]


def test_a_nan_float32_would_change_keeps_its_batch_in_float64() -> None:
    """A NaN whose payload float32 cannot hold (not the engine's NaN) is a value float32
    would change: the memo must come back bit for bit."""
    odd = np.array([0x7FF8000000000001], np.int64).view(np.float64)[0]
    log = EntityLog(np.array([[1.0, 0.5], [2.0, odd]]), np.array(["a", "b"], object))
    blob = encode_log(log, 1, 1)
    assert blob == encode_log(log, 1, 0)
    assert_same_bits(decode_log(blob, 2, 1)[0].rows, log.rows)


def test_blobs_of_both_kinds_decode_side_by_side_in_order() -> None:
    """State written before the narrow rows (float64 throughout) is read as it was."""
    old = EntityLog(np.array([[1.0, 0.1], [2.0, 0.2]]), np.array(["a", "b"], object))
    new = EntityLog(np.array([[3.0, 0.5]]), np.array(["c"], object))
    blobs = [encode_log(new, 4, 1), encode_log(old, 3, 0), encode_log(new, 5, 1)]
    back = decode_logs(blobs, 2, 1)
    assert [version for _, version in back] == [4, 3, 5]
    assert [log.ids.tolist() for log, _ in back] == [["c"], ["a", "b"], ["c"]]
    assert back[1][0].rows.tolist() == [[1.0, 0.1], [2.0, 0.2]]


def busy_terminal(rows: int) -> EntityLog:
    """A terminal's log as the live path keeps it: times a few ms apart, no label yet,
    served features (count and rate over three windows) as float32."""
    times = 1_700_000_000_000 + np.cumsum(np.full(rows, 3.0))
    served = np.tile([4.0, 0.0, 31.0, 0.0, 122.0, np.float32(0.25)], (rows, 1))
    table = np.column_stack([times, np.zeros(rows), np.full(rows, -np.inf), served])
    return EntityLog(table, np.array([f"evt-{i:08d}" for i in range(rows)], object))


def test_a_long_log_is_stored_compressed_with_its_version_where_the_write_checks_it() -> None:
    log = busy_terminal(200)
    blob, plain = encode_log(log, 42, 6), encode_log(log, 42, 6, None)
    assert len(plain) > COMPRESS_FROM and len(blob) < len(plain) / 3
    assert blob[:8] == plain[:8] == struct.pack("<Q", 42)  # the script's GETRANGE 0 7
    back, version = decode_log(blob, 9, 6)
    assert version == 42 and back.ids.tolist() == log.ids.tolist()
    assert_same_bits(back.rows, log.rows)


def test_a_short_log_is_stored_as_it_is() -> None:
    log = busy_terminal(3)
    assert encode_log(log, 1, 6) == encode_log(log, 1, 6, None)


def test_blobs_compressed_or_not_decode_side_by_side_in_order() -> None:
    """State written before compression existed is read as it was, beside new blobs."""
    long, short = busy_terminal(100), busy_terminal(2)
    blobs = [encode_log(long, 1, 6), encode_log(long, 2, 6, None), encode_log(short, 3, 6),
             encode_log(long, 4, 0), encode_log(short, 5, 0, 0)]
    back = decode_logs(blobs, 9, 6)
    assert [version for _, version in back] == [1, 2, 3, 4, 5]
    for (log, _), want in zip(back, [long, long, short, long, short], strict=True):
        assert log.ids.tolist() == want.ids.tolist()
        assert_same_bits(log.rows, want.rows)


def test_a_log_a_later_release_wrote_in_another_form_is_refused_not_misread() -> None:
    blob = bytearray(encode_log(busy_terminal(2), 7, 6))
    struct.pack_into("<I", blob, 8, 2 | 1 << 29)  # a flag this release does not know
    with pytest.raises(FeatureStoreError, match="later release"):
        decode_logs([encode_log(busy_terminal(1), 1, 6), bytes(blob)], 9, 6)


def test_decoded_rows_can_take_a_label() -> None:
    first = EntityLog(np.zeros((2, 3)), np.array(["a", "b"], object))
    second = EntityLog(np.ones((1, 3)), np.array(["c"], object))
    (one, _), (two, _) = decode_logs(encode_logs([first, second], [1, 2], 1), 3, 1)
    one.rows[1, 1] = 5.0
    assert one.rows[:, 1].tolist() == [0.0, 5.0] and two.rows.tolist() == [[1.0, 1.0, 1.0]]


@given(ids=st.lists(IDS, max_size=12, unique=True), data=st.data())
def test_a_log_with_its_ids_as_stored_answers_like_one_given_them(
        ids: list[str], data: st.DataObject) -> None:
    """The live path decodes ids only when asked: a slice, a tail, a lookup, the size."""
    times = np.sort(np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(ids),
                                                max_size=len(ids))), np.float64))
    rows = times.reshape(-1, 1)
    given_ids = EntityLog(rows, np.array(ids, object))
    start = data.draw(st.integers(0, len(ids)))
    stop = data.draw(st.integers(start, len(ids)))
    probe = data.draw(st.sampled_from(ids) if ids else IDS)
    for other in (EntityLog(rows, stored=stored_ids(np.array(ids, object))), given_ids):
        assert other.ids_between(start, stop) == ids[start:stop]
        assert other.count_before(start, stop, probe) == sum(i < probe for i in ids[start:stop])
        assert other.last_index(probe) == (ids.index(probe) if probe in ids else -1)
        tail = other.tail(start, copy=False)
        assert tail.ids.tolist() == ids[start:] and tail.stored() == stored_ids(
            np.array(ids[start:], object))
        assert other.nbytes() == rows.nbytes + sum(len(i.encode()) for i in ids)


@given(old=st.lists(IDS, max_size=8, unique=True), data=st.data())
def test_ids_inserted_as_stored_are_the_merged_ids_stored(old: list[str],
                                                          data: st.DataObject) -> None:
    new = data.draw(st.lists(IDS, max_size=5))
    positions = sorted(data.draw(st.lists(st.integers(0, len(old)), min_size=len(new),
                                          max_size=len(new))))
    merged = list(old)
    for shift, (at, event_id) in enumerate(zip(positions, new, strict=True)):
        merged.insert(at + shift, event_id)
    log = EntityLog(np.zeros((len(old), 1)), stored=stored_ids(np.array(old, object)))
    pieces = [stored_ids(np.array([event_id], object)) for event_id in new]
    assert log.stored_with(positions, pieces) == stored_ids(np.array(merged, object))
