"""A stream of score records and labels with every awkward arrival, and the truth it encodes.

Two model versions score every event (``champ:1`` served, ``chal:1`` as a shadow, better);
labels come late (hours to days), some twice, some corrected (a newer label overturns an
older one), some with an older correction arriving after the newer one (ignored), and a few
for events never scored. :func:`truth` gives each scored event's final label and first
label time, worked out directly from the label list, not through the join.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import msgspec

from stream_infer.features.labels import Label
from stream_infer.records import ScoreRecord

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
AS_OF = int(dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp() * 1000)
THRESHOLD = 0.6


@dataclass(frozen=True)
class Stream:
    scores: list[ScoreRecord]
    labels: list[Label]
    fraud: dict[str, bool]
    """The event's real outcome (what labels converge to, when they come)."""


def stream(events: int = 900, days: int = 18, cards: int = 60, seed: int = 7,
           as_of_ms: int = AS_OF) -> Stream:
    """Events on ``days`` UTC days from 20 days before the day of ``as_of_ms``."""
    rng = random.Random(seed)
    first_day = as_of_ms // DAY_MS - 20
    scores: list[ScoreRecord] = []
    labels: list[Label] = []
    fraud: dict[str, bool] = {}
    for i in range(events):
        event_id = f"ev-{i:05d}"
        event_time = (first_day + rng.randrange(days)) * DAY_MS + rng.randrange(DAY_MS)
        card = f"card-{rng.randrange(cards):03d}"
        is_fraud = rng.random() < 0.12
        fraud[event_id] = is_fraud
        champ = min(max(rng.gauss(0.7 if is_fraud else 0.35, 0.2), 0.0), 1.0)
        chal = min(max(rng.gauss(0.8 if is_fraud else 0.3, 0.15), 0.0), 1.0)
        for name, score, shadow in (("champ", champ, False), ("chal", chal, True)):
            scores.append(ScoreRecord(
                event_id=event_id, card_id=card, score=round(score, 3), model_name=name,
                model_version="1", event_time=event_time, scored_at=event_time + 20,
                features={}, shadow=shadow, threshold=THRESHOLD,
                alerted=round(score, 3) >= THRESHOLD))
        labels += _labels(rng, event_id, event_time, is_fraud)
    labels += [Label(f"never-scored-{i}", 1, as_of_ms - i * HOUR_MS) for i in range(5)]
    return Stream(scores, labels, fraud)


def _labels(rng: random.Random, event_id: str, event_time: int,
            is_fraud: bool) -> list[Label]:
    roll = rng.random()
    if roll < 0.25:
        return []
    first = event_time + rng.randrange(1, 10 * 24) * HOUR_MS
    label = int(is_fraud)
    found = [Label(event_id, label, first)]
    if roll < 0.40:
        found.append(Label(event_id, label, first))  # the same label twice
    elif roll < 0.50:  # first thought the other way, corrected later
        found = [Label(event_id, 1 - label, first),
                 Label(event_id, label, first + rng.randrange(1, 72) * HOUR_MS)]
    elif roll < 0.55:  # the correction arrives first, the older label after it
        found = [Label(event_id, label, first + 5 * HOUR_MS), Label(event_id, 1 - label, first)]
    elif roll < 0.58:  # two opposite labels stamped the same: fraud wins
        found = [Label(event_id, 0, first), Label(event_id, 1, first)]
    return found


def truth(s: Stream) -> dict[str, tuple[int, int, int]]:
    """Event id -> (final label, first label time, final label time), labelled events only."""
    out: dict[str, tuple[int, int, int]] = {}
    for event_id in {label.event_id for label in s.labels}:
        mine = [label for label in s.labels if label.event_id == event_id]
        best = max(mine, key=lambda label: (label.label_time, label.label))
        out[event_id] = (best.label, min(label.label_time for label in mine), best.label_time)
    return out


def shuffled(s: Stream, seed: int) -> list[ScoreRecord | Label]:
    """Scores and labels interleaved at random (labels before their scores included)."""
    records: list[ScoreRecord | Label] = [*s.scores, *s.labels]
    random.Random(seed).shuffle(records)
    return records


def encoded(records: list[ScoreRecord | Label]) -> list[tuple[str, bytes]]:
    """The records as (kind, wire JSON bytes), labels in their wire form."""
    return [("scores", msgspec.json.encode(r)) if isinstance(r, ScoreRecord) else
            ("labels", msgspec.json.encode({"event_id": r.event_id, "label": r.label,
                                            "label_time": r.label_time}))
            for r in records]
