"""An entity's log as the live path stores it: one blob per entity, a batch's blobs encoded
and decoded together.

A blob is a header (``<QI``: the log's version, its row count), the rows, then the ids as
:func:`~stream_infer.features.state.stored_ids` stores them (UTF-8, each followed by byte
``0xff``, which UTF-8 never contains, so any id comes back as it was). A decoded log keeps
its ids in that form until one is asked for: most batches never read an old id.

The rows are float64, except that when every value of a batch's last ``narrow`` columns
(the features served, float32 when the engine serves float32) is a float32 exactly, bit for
bit, those columns are stored as float32: the top bit of the row count says so. A blob
whose rows and ids reach ``compress_from`` bytes (1 KiB) stores them LZ4-compressed (a
block with its size), which the row count's next bit says: a long log (a busy terminal's
rows, their times close together and most labels and served features alike) shrinks about
fourfold, and Redis pays per byte it receives and sends. The header stays as it was, so
the write script's version check reads it either way. Blobs of every kind decode, so
state written before narrow rows or compression existed is read as it was; a blob with a
bit this release does not know (a later release's) is refused, not misread.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import accumulate

import lz4.block
import numpy as np
import numpy.typing as npt

from ..errors import FeatureStoreError
from .state import EntityLog, joined_rows

_HEADER = struct.Struct("<QI")
_HEADS = np.dtype([("version", "<u8"), ("count", "<u4")])
"""The headers of a batch's blobs, read at once."""
_NARROW = 1 << 31
"""In a stored row count: the last ``narrow`` columns are float32."""
_LZ4 = 1 << 30
"""In a stored row count: the rows and ids after the header are one LZ4 block."""
_RESERVED = 0b11 << 28
"""In a stored row count: bits a later release may set; this one refuses such a blob."""
_COUNT = (1 << 28) - 1
"""In a stored row count: the bits that count its rows."""
COMPRESS_FROM = 1024
"""The bytes of rows and ids from which a blob stores them compressed."""


def encode_log(log: EntityLog, version: int, narrow: int = 0,
               compress_from: int | None = COMPRESS_FROM) -> bytes:
    """One log as stored, with its version."""
    return encode_logs([log], [version], narrow, compress_from)[0]


def encode_logs(logs: Sequence[EntityLog], versions: Sequence[int], narrow: int = 0,
                compress_from: int | None = COMPRESS_FROM) -> list[bytes]:
    """Each log as stored, with its version: the rows of every log encoded at once, then
    cut per log; the last ``narrow`` columns as float32 if that keeps every value; the rows
    and ids of a blob that reach ``compress_from`` bytes compressed (None: never)."""
    if not logs:
        return []
    counts = [len(log.rows) for log in logs]
    rows = joined_rows(logs, logs[0].rows.shape[1])
    records, narrowed = _records(rows, narrow)
    size = records.shape[1]
    row_bytes = records.reshape(-1).data
    row_at = [0, *accumulate(count * size for count in counts)]
    ids = [log.stored() for log in logs]
    heads = np.empty(len(logs), _HEADS)
    heads["version"], heads["count"] = versions, counts
    if narrowed:
        heads["count"] |= _NARROW
    head = heads.tobytes()
    cut = _HEADER.size
    blobs = [b"".join((head[k * cut:(k + 1) * cut], row_bytes[row_at[k]:row_at[k + 1]], ids[k]))
             for k in range(len(logs))]
    if compress_from is None:
        return blobs
    for k, blob in enumerate(blobs):
        if len(blob) - cut >= compress_from:
            blobs[k] = _compressed(blob)
    return blobs


def _compressed(blob: bytes) -> bytes:
    """A blob with its rows and ids as one LZ4 block (the header says so)."""
    version, count = _HEADER.unpack_from(blob)
    body: bytes = lz4.block.compress(memoryview(blob)[_HEADER.size:], store_size=True)
    return _HEADER.pack(version, count | _LZ4) + body


def _records(rows: npt.NDArray[np.float64],
             narrow: int) -> tuple[npt.NDArray[np.uint8], bool]:
    """``rows`` as stored, one row of bytes each, and whether their last ``narrow`` columns
    are float32: they are if float32 holds every one of their values bit for bit (a NaN
    with a payload float32 cannot hold, or a value it would round, says no), else every
    column is float64. The columns are written through views of the bytes, not fields of
    a structured array, which numpy copies element by element."""
    wide = rows.shape[1] - narrow
    if narrow:
        kept = rows[:, wide:]
        with np.errstate(over="ignore"):
            small = kept.astype(np.float32)
        if np.array_equal(small.astype(np.float64).view(np.int64), kept.view(np.int64)):
            records = np.empty((len(rows), 8 * wide + 4 * narrow), np.uint8)
            records[:, :8 * wide].view("<f8")[:] = rows[:, :wide]
            records[:, 8 * wide:].view("<f4")[:] = small
            return records, True
    as_bytes: npt.NDArray[np.uint8] = np.ascontiguousarray(rows, "<f8").view(np.uint8)
    return as_bytes, False


def decode_log(blob: bytes, width: int, narrow: int = 0) -> tuple[EntityLog, int]:
    """A stored log and its version."""
    return decode_logs([blob], width, narrow)[0]


def decode_logs(blobs: Sequence[bytes], width: int,
                narrow: int = 0) -> list[tuple[EntityLog, int]]:
    """Stored logs and their versions: the headers read at once, each compressed blob's rows
    and ids inflated, then those of each kind (float64 rows, narrow rows) decoded at once;
    the rows writable (views of one float64 array per kind)."""
    if not blobs:
        return []
    heads = np.frombuffer(b"".join([blob[:_HEADER.size] for blob in blobs]), _HEADS)
    flags = heads["count"].astype(np.int64)
    if np.any(flags & _RESERVED):
        raise FeatureStoreError(
            "a window log in Redis was written by a later release of stream-infer, in a "
            "form this one cannot read: stop this release's workers before the later "
            "release's start (README: Operations, upgrading with window features)")
    datas, starts = list(blobs), np.full(len(blobs), _HEADER.size, np.int64)
    for i in np.flatnonzero(flags & _LZ4).tolist():
        datas[i], starts[i] = lz4.block.decompress(memoryview(blobs[i])[_HEADER.size:]), 0
    versions: list[int] = heads["version"].tolist()
    narrowed = (flags & _NARROW) != 0
    if not narrowed.any() or narrowed.all():
        return _decode(datas, starts, flags & _COUNT, versions, width,
                       narrow if narrowed[0] else 0)
    out: list[tuple[EntityLog, int] | None] = [None] * len(blobs)
    for kind in (False, True):
        at = np.flatnonzero(narrowed == kind)
        decoded = _decode([datas[i] for i in at.tolist()], starts[at], flags[at] & _COUNT,
                          [versions[i] for i in at.tolist()], width, narrow if kind else 0)
        for i, log in zip(at.tolist(), decoded, strict=True):
            out[i] = log
    return [log for log in out if log is not None]


def _decode(datas: Sequence[bytes], starts: npt.NDArray[np.int64],
            counts: npt.NDArray[np.int64], versions: Sequence[int], width: int,
            narrow: int) -> list[tuple[EntityLog, int]]:
    """The rows and ids of blobs of one kind (each given as bytes and the offset of its
    first row): their rows (the last ``narrow`` columns float32) at once, through views of
    the bytes, the ids kept as stored."""
    wide = width - narrow
    size = 8 * wide + 4 * narrow
    ends = starts + size * counts
    begin, end = starts.tolist(), ends.tolist()
    stored = np.frombuffer(b"".join([memoryview(data)[b:e] for data, b, e in
                                     zip(datas, begin, end, strict=True)]),
                           np.uint8).reshape(-1, size)
    rows = np.empty((len(stored), width))
    rows[:, :wide] = stored[:, :8 * wide].view("<f8")
    if narrow:
        rows[:, wide:] = stored[:, 8 * wide:].view("<f4")
    bounds = np.concatenate(([0], np.cumsum(counts))).tolist()
    return [(EntityLog(rows[first:last], stored=data[e:], at=first), version)
            for first, last, data, e, version in zip(
                bounds, bounds[1:], datas, end, versions, strict=False)]
