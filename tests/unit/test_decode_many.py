"""``JsonDecoder.many``: a batch decoded in one msgspec call has the outcome of decoding each
record on its own, whatever the batch holds, including records built to run into each other."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.decode import SPLIT, JsonDecoder, decode_each
from stream_infer.records import Transaction

LIMIT = 2048


def event(n: int, **changes: Any) -> bytes:
    fields = {"event_id": f"e{n}", "event_time": 1_767_225_600_000 + n, "card_id": f"c{n % 7}",
              "merchant_id": "m1", "amount": 10.5 + n, "currency": "EUR", "mcc": "5411",
              "country": "FR", "attributes": {"x": 1.5}}
    return json.dumps({**fields, **changes}).encode()


VALID = [event(n) for n in range(20)]
HOSTILE: list[bytes | None] = [
    None, b"", b" ", b"\n", b"{}", b"[]", b"null", b"{", b"}", b"}{",
    event(1)[:-1], event(1) + b"\n", b" " + event(1), b"\xef\xbb\xbf" + event(1),
    event(1) + b" " + event(2),                              # two objects in one record
    event(3)[:-1] + b',"extra":',                            # runs into the next record...
    b'{"x":1}',                                              # ...which closes it
    event(4)[:40], event(4)[40:],                            # one object split over two
    event(5, currency="eur"), event(6, mcc="54a1"), event(7, country="FRA"),
    event(8, card_id="4111 1111 1111 1111"), event(9, card_id="4111111111111112"),
    event(10, amount="12"), event(11, merchant_id="m" * LIMIT),
    b'{"event_id": "\xff"}', b'[' * 5000 + b']' * 5000,
]


def outcome(decoded: tuple[list[Transaction], Sequence[tuple[int, Any]]]) -> Any:
    events, failures = decoded
    return events, [(position, error.reason, str(error)) for position, error in failures]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(VALID), st.sampled_from(HOSTILE)), max_size=40),
       st.integers(0, 2 * SPLIT))
def test_a_batch_decodes_as_each_of_its_records_would(values: list[bytes | None],
                                                      padding: int) -> None:
    decoder = JsonDecoder(LIMIT)
    batch = [*VALID[:1] * padding, *values]  # long batches take the split path
    assert outcome(decoder.many(batch)) == outcome(decode_each(decoder, batch))


def test_records_that_only_parse_together_are_each_refused() -> None:
    decoder = JsonDecoder(LIMIT)
    rest = json.loads(event(2))
    attributes = json.dumps({"attributes": rest.pop("attributes")})[:-1].encode()
    for bad in ([event(1) + b" " + event(2)],
                [event(1) + b" " + event(2), b" "],
                [event(1) + b" " + attributes, b", " + json.dumps(rest)[1:].encode()],
                [event(1) + b' {"merchant_id": "m}', b'{", ' + json.dumps(rest)[1:].encode()],
                [event(3)[:-1] + b',"merchant_id":', b'"m2"}'],
                [event(4)[:40], event(4)[40:]]):
        events, failures = decoder.many([*VALID, *bad])
        assert [e.event_id for e in events] == [f"e{n}" for n in range(20)]
        assert [position for position, _ in failures] == list(range(20, 20 + len(bad)))


class Counting(JsonDecoder):
    """Counts the records decoded one at a time."""

    calls = 0

    def __call__(self, value: bytes | None) -> Transaction:
        self.calls += 1
        return super().__call__(value)


def test_a_valid_batch_is_parsed_in_one_call_and_a_bad_record_costs_only_its_part() -> None:
    valid = [event(n) for n in range(4 * SPLIT)]
    decoder = Counting(LIMIT)
    events, failures = decoder.many(valid)
    assert (len(events), failures, decoder.calls) == (len(valid), [], 0)

    bad = [*valid[:SPLIT + 3], event(0, currency="eur"), *valid[SPLIT + 3:]]
    events, failures = decoder.many(bad)
    assert [(position, error.reason) for position, error in failures] == [(SPLIT + 3, "schema")]
    assert len(events) == len(valid) and decoder.calls == SPLIT
