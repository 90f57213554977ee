"""The commands the Redis adapters pack themselves are byte for byte what redis-py would
send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Encoder, PythonRespSerializer

from stream_infer.adapters.redis import pack_mget
from stream_infer.adapters.redis_windows import pack_command

REDIS_PY = PythonRespSerializer(1 << 30, Encoder("utf-8", "strict", False).encode)


def redis_py_mget(keys: list[str]) -> bytes:
    return b"".join(REDIS_PY.pack("MGET", *keys))


@given(st.lists(st.text(min_size=1), min_size=1, max_size=40))
def test_any_keys_pack_as_redis_py_packs_them(keys: list[str]) -> None:
    assert pack_mget(keys) == redis_py_mget(keys)


@given(st.lists(st.text(st.characters(codec="ascii"), min_size=7, max_size=7),
                min_size=1, max_size=40))
def test_keys_of_one_length_pack_as_redis_py_packs_them(keys: list[str]) -> None:
    assert pack_mget(keys) == redis_py_mget(keys)


def test_one_length_with_multibyte_characters_counts_bytes() -> None:
    keys = ["card:é1", "card:e12"]  # 7 and 8 characters, 8 bytes each
    assert pack_mget(keys[:1]) == b"*2\r\n$4\r\nMGET\r\n$8\r\ncard:\xc3\xa91\r\n"
    assert pack_mget(["card:é", "card:x"]) == redis_py_mget(["card:é", "card:x"])


ARGS = st.lists(st.one_of(st.text(), st.binary(), st.integers(0, 2**63)), max_size=20)


@given(ARGS, st.lists(st.binary(max_size=5000), max_size=20))
def test_a_script_call_with_its_blobs_packs_as_redis_py_packs_it(
        args: list[str | bytes | int], blobs: list[bytes]) -> None:
    call = ["EVALSHA", "0" * 40, 0, *args]
    assert pack_command(call, blobs) == b"".join(REDIS_PY.pack(*call, *blobs))
