import msgspec
import numpy as np

from stream_infer.offline import simulate
from stream_infer.records import Transaction

POP = simulate.make_population(cards=400, merchants=60, seed=5)


def events(count: int = 20_000, seed: int = 1) -> list[dict]:
    return list(simulate.transactions(POP, count=count, seed=seed))


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    assert events(500) == events(500)
    assert events(500) != events(500, seed=2)


def test_every_event_is_a_valid_transaction_with_a_unique_id() -> None:
    batch = events(5000)
    for event in batch:
        msgspec.convert(event, Transaction)
        assert not event["card_id"].isdigit()
    assert len({e["event_id"] for e in batch}) == len(batch)
    times = [e["event_time"] for e in batch]
    assert times == sorted(times) and times[0] >= simulate.START_MS


def test_fraud_is_rare_but_present_and_shows_in_the_signals() -> None:
    batch = events()
    labels = np.array([e["label"] for e in batch], dtype=bool)
    assert 0.003 < labels.mean() < 0.05
    ratio = np.array([e["attributes"]["amount_to_avg_ratio"] for e in batch])
    gaps = np.array([e["attributes"]["secs_since_prev"] for e in batch])
    assert np.median(gaps[labels]) < np.median(gaps[~labels]) / 10
    assert abs(np.log(ratio[labels])).mean() > abs(np.log(ratio[~labels])).mean()


def test_feature_tables_cover_every_entity_with_the_declared_fields() -> None:
    cards, merchants = simulate.card_features(POP), simulate.merchant_features(POP)
    assert len(cards) == 400 and len(merchants) == 60
    assert set(cards[0]) == {"card_id", *simulate.CARD_FIELDS}
    assert set(merchants[0]) == {"merchant_id", *simulate.MERCHANT_FIELDS}


def test_training_rows_have_one_column_per_feature_and_the_label() -> None:
    batch = events(50)
    rows = list(simulate.training_rows(POP, batch))
    assert list(rows[0]) == ["event_id", "event_time", *simulate.DEMO_FEATURES, "label"]
    card = {r["card_id"]: r for r in simulate.card_features(POP)}[batch[0]["card_id"]]
    assert rows[0]["card.avg_amount_30d"] == card["avg_amount_30d"]
    assert rows[0]["amount"] == batch[0]["amount"]
