"""Synthetic card transactions with labelled fraud, deterministic for a seed.

In the spirit of the simulator of *Reproducible Machine Learning for Credit Card Fraud
Detection* (Le Borgne et al.): cards with a home location and a spending profile, merchants
with a location and category, and three fraud patterns:

1. compromised cards: after a compromise moment, a share of the card's payments are large,
   far from home, rapid, at merchants the card never uses;
2. compromised merchants: a share of payments at a breached terminal are fraudulent;
3. card testing: bursts of tiny online payments seconds apart.

It also emits the per-entity feature tables a batch feature job would have written to Redis
(``card:{card_id}``, ``merchant:{merchant_id}``) and labelled training rows. Pure: no I/O but
the CSV writers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CARD_FIELDS = ("avg_amount_30d", "std_amount_30d", "txn_count_30d", "chargebacks_180d",
               "days_since_issue", "distinct_merchants_30d")
MERCHANT_FIELDS = ("fraud_rate_90d", "avg_amount_30d", "txn_count_30d", "risk_score")
DEMO_FEATURES = [
    "amount",
    "attributes.distance_km",
    "attributes.secs_since_prev",
    "attributes.hour_of_day",
    "attributes.amount_to_avg_ratio",
    "card.avg_amount_30d",
    "card.std_amount_30d",
    "card.txn_count_30d",
    "card.chargebacks_180d",
    "card.days_since_issue",
    "merchant.fraud_rate_90d",
    "merchant.avg_amount_30d",
    "merchant.risk_score",
]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: reproducible by default
MAX_GAP_S = 7 * 24 * 3600.0
MCCS = ("5411", "5812", "5541", "5999", "4121", "5732", "5311", "7011", "4814", "5968")
COUNTRIES = ("FR", "DE", "BE", "NL", "ES", "IT")
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Population:
    """Cards and merchants with their hidden traits (compromise) and visible features."""

    seed: int
    card_home: Floats          # (cards, 2) km on a 100 x 100 grid
    card_mean: Floats          # typical amount
    card_rate: Floats          # payments per day
    card_issue_days: Floats
    card_chargebacks: Ints
    card_usual: Ints           # (cards, 8) merchants the card uses
    card_compromised_at: Floats  # fraction of the stream after which the card is compromised; inf
    merchant_loc: Floats
    merchant_mean: Floats
    merchant_mcc: Ints
    merchant_country: Ints
    merchant_online: npt.NDArray[np.bool_]
    merchant_breached: npt.NDArray[np.bool_]

    @property
    def cards(self) -> int:
        return len(self.card_mean)

    @property
    def merchants(self) -> int:
        return len(self.merchant_mean)


def card_id(i: int) -> str:
    return f"card-{i:06d}"


def merchant_id(i: int) -> str:
    return f"merch-{i:05d}"


def make_population(*, cards: int = 5000, merchants: int = 500, seed: int = 7) -> Population:
    """A reproducible population of cards and merchants."""
    rng = np.random.default_rng(seed)
    compromised = rng.random(cards) < 0.02
    return Population(
        seed=seed,
        card_home=rng.uniform(0, 100, (cards, 2)),
        card_mean=rng.uniform(8, 120, cards),
        card_rate=rng.uniform(0.3, 4.0, cards),
        card_issue_days=rng.uniform(20, 3000, cards).round(),
        card_chargebacks=rng.poisson(np.where(compromised, 0.8, 0.05)),
        card_usual=rng.integers(0, merchants, (cards, 8)),
        card_compromised_at=np.where(compromised, rng.uniform(0.1, 0.8, cards), np.inf),
        merchant_loc=rng.uniform(0, 100, (merchants, 2)),
        merchant_mean=rng.uniform(10, 150, merchants),
        merchant_mcc=rng.integers(0, len(MCCS), merchants),
        merchant_country=rng.choice(len(COUNTRIES), merchants, p=[.6, .1, .1, .1, .05, .05]),
        merchant_online=rng.random(merchants) < 0.25,
        merchant_breached=rng.random(merchants) < 0.02,
    )


def card_features(pop: Population) -> list[dict[str, str | float]]:
    """What a batch feature job knows about each card (no future information)."""
    rng = np.random.default_rng(pop.seed + 1)
    avg = pop.card_mean * rng.uniform(0.85, 1.15, pop.cards)
    return [
        {"card_id": card_id(i), "avg_amount_30d": round(float(avg[i]), 2),
         "std_amount_30d": round(float(avg[i] * 0.45), 2),
         "txn_count_30d": float(round(pop.card_rate[i] * 30)),
         "chargebacks_180d": float(pop.card_chargebacks[i]),
         "days_since_issue": float(pop.card_issue_days[i]),
         "distinct_merchants_30d": float(min(8, round(pop.card_rate[i] * 6)))}
        for i in range(pop.cards)
    ]


def merchant_features(pop: Population) -> list[dict[str, str | float]]:
    """What a batch feature job knows about each merchant."""
    rng = np.random.default_rng(pop.seed + 2)
    fraud_rate = np.where(pop.merchant_breached, rng.uniform(0.05, 0.3, pop.merchants),
                          rng.uniform(0.0, 0.01, pop.merchants))
    risk = np.clip(fraud_rate * 3 + rng.normal(0.1, 0.05, pop.merchants), 0, 1)
    return [
        {"merchant_id": merchant_id(i), "fraud_rate_90d": round(float(fraud_rate[i]), 5),
         "avg_amount_30d": round(float(pop.merchant_mean[i]), 2),
         "txn_count_30d": float(rng.integers(50, 5000)),
         "risk_score": round(float(risk[i]), 4)}
        for i in range(pop.merchants)
    ]


def transactions(pop: Population, *, count: int, seed: int = 7, start_ms: int | None = None,
                 rate_per_s: float = 1000.0) -> Iterator[dict[str, Any]]:
    """``count`` payments, about ``rate_per_s`` per second of event time from ``start_ms``.

    The stream is compressed in time (a demo wants thousands per second), so each card's
    ``secs_since_prev`` follows the card's own daily rate, as an upstream system would see it.
    """
    rng = np.random.default_rng([pop.seed, seed])
    start = START_MS if start_ms is None else start_ms
    times = start + np.cumsum(rng.exponential(1000.0 / rate_per_s, count)).astype(np.int64)
    cards = rng.choice(pop.cards, count, p=pop.card_rate / pop.card_rate.sum())
    merchants = pop.card_usual[cards, rng.integers(0, 8, count)]
    amounts = np.exp(rng.normal(np.log(pop.card_mean[cards]), 0.5))
    fraud = np.zeros(count, dtype=bool)
    gaps = np.minimum(rng.exponential(86_400.0 / pop.card_rate[cards]), MAX_GAP_S)

    progress = np.arange(count) / max(count, 1)
    stolen = (progress >= pop.card_compromised_at[cards]) & (rng.random(count) < 0.5)
    merchants = np.where(stolen, rng.integers(0, pop.merchants, count), merchants)
    amounts = np.where(stolen, amounts * rng.uniform(2, 6, count), amounts)
    gaps = np.where(stolen, rng.uniform(5, 600, count), gaps)
    fraud |= stolen

    breached = pop.merchant_breached[merchants] & (rng.random(count) < 0.3)
    amounts = np.where(breached, amounts * rng.uniform(1.2, 2.5, count), amounts)
    fraud |= breached

    testing = rng.random(count) < 0.003
    amounts = np.where(testing, rng.uniform(0.5, 2.0, count), amounts)
    gaps = np.where(testing, rng.uniform(1, 30, count), gaps)
    fraud |= testing

    home = pop.card_home[cards]
    far = np.where(stolen[:, None], rng.uniform(300, 2000, (count, 1)), 0.0)
    distance = np.hypot(*(pop.merchant_loc[merchants] - home).T) + far[:, 0]
    online = pop.merchant_online[merchants] | testing
    avg = pop.card_mean[cards]
    for n in range(count):
        yield _event(pop, seed, n, int(times[n]), int(cards[n]), int(merchants[n]),
                     round(float(amounts[n]), 2) or 0.01, bool(online[n]), int(fraud[n]),
                     float(distance[n]), float(gaps[n]), float(avg[n]))


def _event(pop: Population, seed: int, n: int, ts: int, card: int, merchant: int,
           amount: float, online: bool, label: int, distance: float, gap: float,
           avg: float) -> dict[str, Any]:
    hour = (ts // 3_600_000) % 24
    return {
        "event_id": f"ev-{seed}-{n}",
        "event_time": ts,
        "card_id": card_id(card),
        "merchant_id": merchant_id(merchant),
        "amount": amount,
        "currency": "EUR",
        "customer_id": f"cust-{card:06d}",
        "terminal_id": f"term-{merchant:05d}-{n % 3}",
        "mcc": MCCS[pop.merchant_mcc[merchant]],
        "country": COUNTRIES[pop.merchant_country[merchant]],
        "channel": "online" if online else "pos",
        "label": label,
        "attributes": {
            "distance_km": round(distance, 3),
            "secs_since_prev": round(gap, 3),
            "hour_of_day": float(hour),
            "amount_to_avg_ratio": round(amount / avg, 4),
        },
    }


def training_rows(pop: Population, events: Iterable[dict[str, Any]],
                  features: list[str] = DEMO_FEATURES) -> Iterator[dict[str, Any]]:
    """Events joined with the feature tables: one column per feature name, plus the label."""
    tables = {"card": {r["card_id"]: r for r in card_features(pop)},
              "merchant": {r["merchant_id"]: r for r in merchant_features(pop)}}
    for event in events:
        row: dict[str, Any] = {"event_id": event["event_id"], "event_time": event["event_time"]}
        for name in features:
            head, _, field = name.partition(".")
            if not field:
                row[name] = event[name]
            elif head == "attributes":
                row[name] = event["attributes"].get(field, math.nan)
            else:
                row[name] = tables[head].get(event[f"{head}_id"], {}).get(field, math.nan)
        row["label"] = event["label"]
        yield row


def write_training_csv(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as CSV (NaN as an empty cell); return how many."""
    return _write_csv(Path(path), rows)


def write_feature_csvs(pop: Population, directory: Path) -> list[Path]:
    """``card_features.csv`` and ``merchant_features.csv``, ready for ``features load``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "card_features.csv", directory / "merchant_features.csv"]
    _write_csv(paths[0], card_features(pop))
    _write_csv(paths[1], merchant_features(pop))
    return paths


def _write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with open(path, "w", newline="") as fh:
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(fh, fieldnames=list(row))
                writer.writeheader()
            writer.writerow({k: _cell(v) for k, v in row.items()})
            count += 1
    return count


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
