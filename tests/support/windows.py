"""Window-feature test material: a small definition, a Handbook history with its labels as
JSON lines, a model over window features trained on noise, and a service run over three
weeks of events and their labels (its config, the weeks sent, the features it served and
those the in-memory engine computes for the same weeks)."""

from __future__ import annotations

import csv
import json
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import redis

from stream_infer.adapters.kafka import ensure_topics
from stream_infer.adapters.redis_windows import RedisWindowStore
from stream_infer.config import WindowGroup
from stream_infer.features import Definition, WindowEngine, define
from stream_infer.features.definition import STATE_FORMAT
from stream_infer.features.labels import Label
from stream_infer.features.live import StoreCall
from stream_infer.offline import handbook as hb
from stream_infer.offline.training import train
from stream_infer.records import Transaction

from .brokers import Broker
from .configs import service_config, write_config
from .topics import produce, read_all, wait_for_records
from .wait import wait_until

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


DAY = 86_400_000
T0 = 1_760_000_000_000
SERVICE_WINDOWS: dict[str, dict[str, Any]] = {
    name: {**group, "allowed_lateness": "30d"} for name, group in WEEK_WINDOWS.items()}
""":data:`WEEK_WINDOWS` with a lateness of 30 days: the partitions of a running service may
be days apart within a week (a partition's events more than the lateness behind the newest
seen would get no window features)."""

Served = dict[str, list[dict[str, float | None]]]
"""Each event's served feature vectors (one per time it was scored)."""
Expected = dict[str, dict[str, float | None]]
"""Each event's window features as the in-memory engine computes them (NaN as None)."""


def weeks(seed: int = 5) -> list[list[Transaction]]:
    """Three weeks from :data:`T0` of 120 events each, in time order: 12 customers, 5
    terminals, amounts of 1 to 300."""
    rng = random.Random(seed)
    out = []
    for week in range(3):
        times = sorted(rng.randrange(T0 + week * 7 * DAY, T0 + (week + 1) * 7 * DAY)
                       for _ in range(120))
        out.append([Transaction(event_id=f"w{week}-{i}", event_time=t, card_id=f"card{i % 20}",
                                merchant_id="m1", amount=round(rng.uniform(1, 300), 2),
                                currency="EUR", customer_id=f"cust{rng.randrange(12)}",
                                terminal_id=f"term{rng.randrange(5)}")
                    for i, t in enumerate(times)])
    return out


def labels_of(events: list[Transaction], when: int) -> list[Label]:
    """A label for each event, known at ``when``: fraud above 200."""
    return [Label(e.event_id, int(e.amount > 200), when) for e in events]


def config_for(tmp_path: Path, broker: Broker, redis_url: str) -> tuple[Path, str]:
    """A service config over :data:`SERVICE_WINDOWS` (a model trained on noise) and its run
    id; the service makes its input topic (4 partitions), the labels topic is made now with
    one (labels in order). Its Redis must be emptied (the ``redis_client`` fixture): window
    state is shared by every run of one definition."""
    run_id = uuid.uuid4().hex[:8]
    train_on_noise(tmp_path / "models", [*definition(SERVICE_WINDOWS).names, "amount"],
                   first_time=T0)
    sections = service_config(
        run_id, broker.bootstrap_servers, redis_url,
        kafka={"topic_partitions": 4, "labels_topic": f"labels-{run_id}"},
        model={"dir": str(tmp_path / "models"), "name": "win"}, windows=SERVICE_WINDOWS)
    sections["features"] = {}
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [f"labels-{run_id}"],
                  create=True, partitions=1, replication_factor=1)
    return write_config(tmp_path / "config.toml", sections), run_id


def send_events(broker: Broker, run_id: str, events: list[Transaction]) -> None:
    """``events`` to ``tx-<run_id>``, keyed by customer."""
    encode = msgspec.json.encode
    produce(broker.bootstrap_servers, f"tx-{run_id}",
            [(e.customer_id.encode() if e.customer_id else None, encode(e)) for e in events])


BAD_LABEL = b'{"event_id": "x", "label": 7, "label_time": 1}'
"""A label the schema refuses (a label is 0 or 1)."""


def send_labels(broker: Broker, run_id: str, labels: list[Label], bad: int) -> None:
    """The labels, then :data:`BAD_LABEL`; returns once ``dlq-<run_id>`` holds ``bad`` dead
    letters: the last one says every label before it was applied (one partition: in
    order)."""
    records = [(None, json.dumps({"event_id": label.event_id, "label": label.label,
                                  "label_time": label.label_time}).encode())
               for label in labels]
    produce(broker.bootstrap_servers, f"labels-{run_id}", [*records, (None, BAD_LABEL)])
    wait_for_records(broker.bootstrap_servers, f"dlq-{run_id}", at_least=bad, timeout_s=60)


def served(broker: Broker, run_id: str) -> Served:
    """Each event's feature vectors on ``scores-<run_id>``."""
    out: Served = {}
    for record in read_all(broker.bootstrap_servers, f"scores-{run_id}"):
        score = json.loads(record.value or b"{}")
        out.setdefault(score["event_id"], []).append(score["features"])
    return out


def expected(all_weeks: list[list[Transaction]]) -> Expected:
    """The window features of every event of ``all_weeks`` from a :class:`WindowEngine` fed
    the weeks in turn, each week's labels (:func:`labels_of`, known at its end) after it."""
    engine = WindowEngine(definition(SERVICE_WINDOWS))
    out: Expected = {}
    for n, week in enumerate(all_weeks):
        rows = engine.apply(week)
        for event, row in zip(week, rows, strict=True):
            out[event.event_id] = {name: None if np.isnan(v) else float(v)
                                   for name, v in zip(engine.names, row.tolist(), strict=True)}
        engine.apply([], labels_of(week, T0 + (n + 1) * 7 * DAY))
    return out


def check(got: Served, want: Expected) -> None:
    """Every expected event was served, and each of its vectors holds the expected window
    features exactly."""
    assert set(got) == set(want), (f"missing {sorted(set(want) - set(got))[:5]}, "
                                   f"unexpected {sorted(set(got) - set(want))[:5]}")
    for event_id, vectors in got.items():
        for vector in vectors:
            windows = {k: vector[k] for k in want[event_id]}
            assert windows == want[event_id], f"{event_id}: {windows} != {want[event_id]}"


def wait_scored(broker: Broker, run_id: str, events: int) -> None:
    """Wait until ``events`` distinct events were scored (a re-served one counts once)."""
    wait_until(lambda: len(served(broker, run_id)) >= events, 90,
               f"{events} events scored", poll_s=0.5, ignoring=(AssertionError, KeyError))


def week(broker: Broker, run_id: str, all_weeks: list[list[Transaction]], n: int) -> None:
    """Week ``n``: its events, scored, then its labels (and a bad one), applied."""
    send_events(broker, run_id, all_weeks[n])
    wait_scored(broker, run_id, sum(len(w) for w in all_weeks[:n + 1]))
    send_labels(broker, run_id, labels_of(all_weeks[n], T0 + (n + 1) * 7 * DAY), bad=n + 1)


def dump(client: redis.Redis) -> dict[str, Any]:
    """Every key of the window state and its value, canonically: an entity's log without
    its version (which counts its writes: a re-processed batch writes again)."""
    state: dict[str, Any] = {}
    for key in sorted(client.keys(f"win{STATE_FORMAT}:*")):
        kind = client.type(key)
        if kind == b"zset":
            state[key.decode()] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            state[key.decode()] = sorted(client.hgetall(key).items())
        elif kind == b"list":
            state[key.decode()] = client.lrange(key, 0, -1)
        elif key.endswith(b"}"):
            state[key.decode()] = client.get(key)[8:]  # type: ignore[index]
        else:
            state[key.decode()] = client.get(key)
    return state


class Racing(RedisWindowStore):
    """The Redis store that, before its first write, runs ``between`` (another worker's
    whole batch): the write then lands on state the batch did not read."""

    def __init__(self, client: redis.Redis, between: Callable[[], Any] | None) -> None:
        super().__init__(client)
        self.between: Callable[[], Any] | None = between

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        if self.between is not None:
            between, self.between = self.between, None
            between()
        return super().write(calls)
