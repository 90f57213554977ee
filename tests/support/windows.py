"""Window-feature test material: a small definition, a Handbook history with its labels as
JSON lines, and a model over window features trained on noise."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stream_infer.config import WindowGroup
from stream_infer.features import Definition, define
from stream_infer.offline import handbook as hb
from stream_infer.offline.training import train

WEEK_WINDOWS: dict[str, dict[str, Any]] = {
    "customer": {"key": "customer_id", "lengths": ["1d", "7d"],
                 "aggregates": ["count", "mean:amount"]},
    "terminal": {"key": "terminal_id", "lengths": ["1d", "7d"], "delay": "7d",
                 "aggregates": ["count", "rate:label"]},
}
"""Customer counts and mean amounts, terminal counts and fraud rates a week late, over a day
and a week."""


def definition(windows: Mapping[str, Mapping[str, Any]]) -> Definition:
    """The definition of ``[windows.*]`` sections given as dicts."""
    return define({name: WindowGroup(**group) for name, group in windows.items()})


def handbook_history(seed: int = 4) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """20 days of the Handbook simulator (60 customers, 120 terminals) from 2024-01-01, in
    time order, and their labels a week late."""
    pop = hb.make_population(60, 120, 5.0, seed=seed)
    events = list(hb.events(hb.generate(pop, 20, seed=seed), start=hb.start_ms("2024-01-01"),
                            seed=seed))
    return events, hb.labels(events, hb.Delay.parse("7d"), seed=seed)


def json_lines(records: Sequence[Mapping[str, Any]]) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in records]


def train_on_noise(models: Path, features: Sequence[str], *, first_time: int = 0) -> None:
    """Model ``win`` version 1 under ``models``, over ``features``, trained on noise: tests
    that use it read the features it was served, not its judgement."""
    rng = random.Random(1)
    data = models.parent / "train.csv"
    with data.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*features, "label", "event_time", "card_id"])
        for i in range(400):
            writer.writerow([rng.random() for _ in features] + [i % 2, first_time + i, f"c{i}"])
    train(data, models_dir=models, name="win", version="1", features=list(features),
          n_estimators=3, threshold=0.5)
