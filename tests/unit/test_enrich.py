import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_infer.adapters.memory import MemoryFeatureStore
from stream_infer.config import FeatureView
from stream_infer.enrich import Enricher
from stream_infer.errors import ConfigError
from stream_infer.records import Transaction

VIEWS = {
    "card": FeatureView(key="card:{card_id}", fields=["avg", "count", "unused"]),
    "merchant": FeatureView(key="merchant:{merchant_id}", fields=["risk"]),
    "terminal": FeatureView(key="t:{terminal_id}", fields=["age"]),
}
FEATURES = ["amount", "attributes.distance_km", "card.count", "merchant.risk", "card.avg",
            "terminal.age"]


def tx(n: int, card: str = "c1", merchant: str = "m1", **extra: object) -> Transaction:
    fields = {"event_id": f"e{n}", "event_time": 1, "card_id": card, "merchant_id": merchant,
              "amount": 10.0 + n, "currency": "EUR", **extra}
    return Transaction(**fields)  # type: ignore[arg-type]


def store() -> MemoryFeatureStore:
    return MemoryFeatureStore(hashes={
        "card:c1": {"avg": b"12.5", "count": b"3"},
        "card:c2": {"avg": b"0.1"},
        "merchant:m1": {"risk": b"0.75"},
        "t:T1": {"age": b"not-a-number"},
    })


def enrich(events: list[Transaction], fs: MemoryFeatureStore) -> tuple[np.ndarray, int]:
    enricher = Enricher(FEATURES, VIEWS)
    lookups, index = enricher.lookups(events)
    result = enricher.matrix(events, fs.fetch(lookups), index)
    return result.matrix, result.misses


def test_columns_follow_the_model_feature_order() -> None:
    matrix, _ = enrich([tx(0, attributes={"distance_km": 4.0})], store())
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[0, :5], np.float32([10.0, 4.0, 3.0, 0.75, 12.5]))


def test_missing_keys_fields_and_attributes_become_nan_and_are_counted() -> None:
    events = [tx(0, card="c2", merchant="nope", terminal_id="T1")]
    matrix, misses = enrich(events, store())
    row = matrix[0]
    assert row[0] == 10.0 and row[4] == np.float32(0.1)
    assert all(math.isnan(row[i]) for i in (1, 2, 3, 5))
    assert misses == 4  # distance attr, card.count, merchant.risk, unparsable terminal.age


def test_one_round_trip_per_batch_with_shared_keys_fetched_once() -> None:
    fs = store()
    enricher = Enricher(FEATURES, VIEWS)
    events = [tx(i, card="c1" if i % 2 else "c2") for i in range(10)]
    lookups, _ = enricher.lookups(events)
    assert sorted(k for k, _ in lookups) == ["card:c1", "card:c2", "merchant:m1"]
    enrich(events, fs)
    assert fs.round_trips == 1


def test_an_event_without_the_key_field_is_not_looked_up() -> None:
    """Every other key distinct (the batch needs no remapping), one event without a
    terminal: that event is not a lookup, reads NaN, and the others keep their own rows."""
    fs = MemoryFeatureStore(hashes={"t:T1": {"age": b"4"}, "t:T2": {"age": b"9"}})
    enricher = Enricher(["terminal.age"], VIEWS)
    events = [tx(0, terminal_id="T2"), tx(1), tx(2, terminal_id="T1")]
    lookups, index = enricher.lookups(events)
    assert lookups == [("t:T2", ("age",)), ("t:T1", ("age",))]
    result = enricher.matrix(events, fs.fetch(lookups), index)
    np.testing.assert_array_equal(result.matrix[:, 0], np.float32([9.0, np.nan, 4.0]))
    assert result.misses == 1


def test_only_the_fields_the_model_uses_are_fetched() -> None:
    lookups, _ = Enricher(FEATURES, VIEWS).lookups([tx(0)])
    assert dict(lookups)["card:c1"] == ("count", "avg")


def test_unavailable_store_gives_nan_view_columns_and_degraded() -> None:
    enricher = Enricher(FEATURES, VIEWS)
    events = [tx(0, attributes={"distance_km": 1.0})]
    _, index = enricher.lookups(events)
    result = enricher.matrix(events, None, index)
    assert result.degraded
    assert result.matrix[0, 0] == 10.0 and result.matrix[0, 1] == 1.0
    assert np.isnan(result.matrix[0, 2:]).all()


@pytest.mark.parametrize(("feature", "message"), [
    ("currency", "not a numeric transaction field"),
    ("card.nope", "has no field 'nope'"),
    ("device.id", "no feature view named 'device'"),
])
def test_features_the_config_cannot_serve_are_refused(feature: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Enricher([feature], VIEWS)


def packed_twin(views: dict[str, FeatureView]) -> dict[str, FeatureView]:
    return {name: FeatureView(key=v.key, fields=v.fields, layout="packed")
            for name, v in views.items()}


@pytest.mark.parametrize("seed", range(5))
def test_the_packed_layout_gives_the_same_matrix_as_the_hash_layout(seed: int) -> None:
    from stream_infer.offline.features import pack

    rng = np.random.default_rng(seed)
    hashes: dict[str, dict[str, bytes]] = {}
    for view in VIEWS.values():
        prefix = view.key.split("{")[0]
        for i in range(6):
            if rng.random() < 0.2:
                continue  # a key the store does not have
            hashes[f"{prefix}{i}"] = {f: repr(float(np.float32(rng.normal() * 100))).encode()
                                      for f in view.fields if rng.random() < 0.8}
    vectors = {key: pack({f: v.decode() for f, v in fields.items()},
                         VIEWS[next(n for n, v in VIEWS.items()
                                    if key.startswith(v.key.split("{")[0]))].fields)
               for key, fields in hashes.items()}
    fs = MemoryFeatureStore(hashes=hashes, vectors=vectors)
    events = [tx(n, card=str(rng.integers(0, 7)), merchant=str(rng.integers(0, 7)),
                 terminal_id=str(rng.integers(0, 7)) if rng.random() < 0.8 else None)
              for n in range(40)]

    by_hash, by_vector = Enricher(FEATURES, VIEWS), Enricher(FEATURES, packed_twin(VIEWS))
    lookups, index = by_vector.lookups(events)
    assert all(fields is None for _, fields in lookups)
    hashed = by_hash.matrix(events, fs.fetch(by_hash.lookups(events)[0]),
                            by_hash.lookups(events)[1])
    packed = by_vector.matrix(events, fs.fetch(lookups), index)
    np.testing.assert_array_equal(packed.matrix, hashed.matrix)
    assert packed.misses == hashed.misses


def test_a_packed_value_of_the_wrong_size_reads_as_missing() -> None:
    views = packed_twin({"card": VIEWS["card"]})
    fs = MemoryFeatureStore(vectors={"card:c1": np.float32([1, 2, 3]).tobytes(),
                                     "card:c2": np.float32([1, 2]).tobytes()})
    enricher = Enricher(["card.avg", "card.unused"], views)
    events = [tx(0, card="c1"), tx(1, card="c2")]
    lookups, index = enricher.lookups(events)
    result = enricher.matrix(events, fs.fetch(lookups), index)
    np.testing.assert_array_equal(result.matrix[0], np.float32([1, 3]))
    assert np.isnan(result.matrix[1]).all() and result.misses == 2


def test_stored_infinities_are_clamped_like_event_values() -> None:
    """XGBoost's DMatrix (reason codes on the XGBoost backend) refuses infinity; the largest
    float32 takes the same side of every split."""
    views = packed_twin({"card": VIEWS["card"]})
    fs = MemoryFeatureStore(vectors={"card:c1": np.float32([np.inf, -np.inf, np.nan]).tobytes(),
                                     "card:c2": np.float32([1, 2, 3]).tobytes()})
    enricher = Enricher(["card.avg", "card.count", "card.unused"], views)
    events = [tx(0, card="c1"), tx(1, card="c2"), tx(2, card="c3")]
    lookups, index = enricher.lookups(events)
    result = enricher.matrix(events, fs.fetch(lookups), index)
    big = np.finfo(np.float32).max
    np.testing.assert_array_equal(result.matrix[:2], np.float32([[big, -big, np.nan],
                                                                 [1, 2, 3]]))
    assert np.isnan(result.matrix[2]).all() and result.misses == 4


@pytest.mark.parametrize("template", ["card:{card_id}", "{card_id}", "c:{card_id}:v2",
                                      "t:{terminal_id}", "m:{merchant_id}/{card_id}",
                                      "at:{event_time}"])
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.none() | st.text(max_size=4),
                          st.integers(0, 10**12)), max_size=20))
def test_batch_keys_equal_each_events_key(template: str,
                                          fields: list[tuple[str, str | None, int]]) -> None:
    events = [tx(n, card=card, terminal_id=terminal, event_time=at)
              for n, (card, terminal, at) in enumerate(fields)]
    (plan,) = Enricher(["v.x"], {"v": FeatureView(key=template, fields=["x"])}).views
    assert plan.keys(events) == [plan.key(e) for e in events]
