"""Features carried in the events' ``attributes``: the matrix replay and live scoring read."""

import math

import numpy as np
import pytest

from stream_infer.enrich import F32_MAX, Enricher
from stream_infer.records import Transaction


def tx(n: int, attributes: dict[str, float]) -> Transaction:
    return Transaction(event_id=f"e{n}", event_time=n, card_id="c", merchant_id="m",
                       amount=1.0 + n, currency="EUR", attributes=attributes)


def matrix(features: list[str], events: list[Transaction], *, in_events: bool = False
           ) -> tuple[np.ndarray, int]:
    enricher = Enricher(features, {}, features_in_events=in_events)
    _, index = enricher.lookups(events)
    result = enricher.matrix(events, [], index)
    return result.matrix, result.misses


def expected(names: list[str], events: list[Transaction]) -> np.ndarray:
    """By hand: each value clamped into float32's range, then float32; missing is NaN."""
    return np.array([[np.float32(min(max(e.attributes.get(n, math.nan), -F32_MAX), F32_MAX))
                      if n in e.attributes else np.nan for n in names] for e in events],
                    dtype=np.float32)


@pytest.mark.parametrize("width", [1, 2, 16])
def test_every_event_carrying_every_name_gives_its_values_in_feature_order(width: int) -> None:
    rng = np.random.default_rng(width)
    names = [f"card.f{i}" for i in range(width)]
    events = [tx(n, {name: float(v) for name, v in zip(names[::-1], rng.normal(size=width),
                                                        strict=True)} | {"other": 1.0})
              for n in range(50)]

    got, misses = matrix(["amount", *names], events, in_events=True)

    assert misses == 0
    assert np.array_equal(got[:, 0], np.arange(1, 51, dtype=np.float32))
    assert np.array_equal(got[:, 1:], expected(names, events))


@pytest.mark.parametrize("width", [1, 3])
def test_a_missing_name_is_nan_and_counted_and_spares_the_other_events(width: int) -> None:
    names = [f"x{i}" for i in range(width)]
    full = {name: 0.5 + i for i, name in enumerate(names)}
    events = [tx(0, full), tx(1, {}), tx(2, full), tx(3, dict(list(full.items())[1:]))]

    got, misses = matrix([f"attributes.{n}" for n in names], events)

    assert np.array_equal(got, expected(names, events), equal_nan=True)
    assert misses == int(np.isnan(got).sum()) == width + 1
    assert not np.isnan(got[[0, 2]]).any()


def test_values_beyond_float32_are_clamped_not_infinite() -> None:
    events = [tx(0, {"a": 1e300, "b": -1e300}), tx(1, {"a": 2.0, "b": 3.0})]
    got, _ = matrix(["attributes.a", "attributes.b"], events)
    assert got.tolist() == [[F32_MAX, -F32_MAX], [2.0, 3.0]]
    assert np.isfinite(got).all()
