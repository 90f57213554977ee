"""The stored form of the features served to an event (its memo): exact, and compact."""

from __future__ import annotations

import numpy as np
import pytest

from stream_infer.features.live import pack_memo, unpack_memo

ROW = np.array([3.0, 57.12345, np.nan, 0.1, -1e-30, 1e30, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_memo_gives_back_the_served_row_bit_for_bit(dtype: type[np.floating]) -> None:
    served = ROW.astype(dtype).astype(np.float64)  # what the service served
    back = unpack_memo(pack_memo(served, np.dtype(dtype)), len(ROW))
    assert back.dtype == np.float64
    assert back.tobytes() == served.tobytes()


def test_a_float32_memo_is_a_third_of_the_repr_text_it_replaces() -> None:
    served = np.random.default_rng(1).uniform(0, 300, 12).astype(np.float32).astype(np.float64)
    packed = pack_memo(served, np.dtype(np.float32))
    assert packed.isascii() and "|" not in packed and "\n" not in packed and "#" not in packed
    assert len(packed) == 64  # 48 bytes in base64
    assert len(packed) * 3 < len("|".join(map(repr, served.tolist())))
