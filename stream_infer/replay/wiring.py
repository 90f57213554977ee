"""The live stages wired for a replay: the models asked for, and features from the events,
snapshot files, live Redis or the vectors the live service logged; window features computed
in memory (:mod:`.windows`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from ..adapters.memory import MemoryFeatureStore
from ..adapters.schema_registry import schema_resolver
from ..adapters.xgboost import XGBoostModel
from ..config import FeatureView, Settings
from ..decode import make_decoder
from ..enrich import FeatureStore
from ..errors import ConfigError
from ..offline.backfill import definition_of
from ..offline.features import plan_vectors
from ..offline.tables import read_table
from ..pipeline import Pipeline, Topics
from ..records import LabelRecord, ScoreRecord
from ..registry import resolve
from ..score import ModelSet
from .options import FeatureSource, ReplayOptions
from .windows import ReplayWindows


def replay_pipeline(settings: Settings, refs: Sequence[tuple[str, str]], *,
                    features: FeatureSource, snapshots: Mapping[str, Path] | None = None,
                    logged: Mapping[str, Mapping[str, float | None]] | None = None,
                    alert_topic: str | None = None,
                    labels: Sequence[LabelRecord] = ()) -> Pipeline:
    """The live stages for a replay: the models in ``refs`` (champion first) and features
    from the events themselves, a snapshot file per view, live Redis, or the vectors the
    live service logged per event (``logged``: event id -> feature name -> value).

    The window features of ``[windows.*]`` that the models read are computed in memory by
    :class:`~stream_infer.replay.windows.ReplayWindows`, with ``labels`` arriving at their
    ``label_time`` (never the live window state, whatever ``features``).

    A feature-store error fails the replay (``pause`` policy): a backtest never scores
    silently degraded rows.
    """
    dirs = [resolve(settings.model.dir, name, version) for name, version in refs]
    champion, *shadows = [XGBoostModel.from_settings(settings.model, d) for d in dirs]
    views = dict(settings.features)
    store: FeatureStore = MemoryFeatureStore()
    if features == "scores":
        views, store = _logged_store(views, logged or {})
    elif features == "snapshot":  # held in memory packed (no text parsing per lookup), and
        views = {name: view.model_copy(update={"layout": "packed", "key": f"{name}|{view.key}"})
                 for name, view in views.items()}  # keyed per view: two may share a template
    definition = definition_of(settings) if settings.windows else None
    models = ModelSet.build(champion, views, shadows, features_in_events=features == "event",
                            windows=definition.names if definition else ())
    if features == "snapshot":
        store = _snapshot_store(settings, models, snapshots or {})
    elif features == "redis":
        from ..adapters.redis import RedisFeatureStore

        store = RedisFeatureStore.from_settings(settings.redis)
    return Pipeline(
        decoder=make_decoder(settings.decode, schema_resolver(settings.decode)),
        models=models,
        store=store,
        topics=Topics(alert_topic or "", settings.kafka.dlq_topic),
        encoder=msgspec.json.Encoder().encode,
        on_store_error="pause",
        reasons_top_k=settings.model.reasons_top_k if alert_topic else 0,
        windows=(ReplayWindows(definition, labels)
                 if definition and models.enricher.window_cols else None),
    )


def _logged_store(views: Mapping[str, FeatureView],
                  logged: Mapping[str, Mapping[str, float | None]]
                  ) -> tuple[dict[str, FeatureView], MemoryFeatureStore]:
    """Views re-keyed by event id over the logged vectors: each event gets its own values."""
    by_event = {name: FeatureView(key=f"{name}@{{event_id}}", fields=view.fields)
                for name, view in views.items()}
    hashes: dict[str, dict[str, bytes]] = {}
    for event_id, vector in logged.items():
        for feature, value in vector.items():
            view, _, field = feature.partition(".")
            if view in by_event and value is not None:
                hashes.setdefault(f"{view}@{event_id}", {})[field] = repr(value).encode()
    return by_event, MemoryFeatureStore(hashes)


def _snapshot_store(settings: Settings, models: ModelSet,
                    snapshots: Mapping[str, Path]) -> MemoryFeatureStore:
    needed = {plan.name for plan in models.enricher.views}
    missing = sorted(needed - set(snapshots))
    if missing:
        raise ConfigError(f"the models read views {sorted(needed)}: give a snapshot file "
                          f"for {', '.join(missing)} (--snapshot VIEW=PATH)")
    vectors: dict[str, bytes] = {}
    for view, path in snapshots.items():
        if view not in settings.features:
            raise ConfigError(f"snapshot for {view!r}: no such feature view in the config")
        planned = plan_vectors(read_table(path), view, settings.features[view])
        vectors.update((f"{view}|{key}", vector.astype("<f4").tobytes())
                       for key, vector in planned.items())
    return MemoryFeatureStore(vectors=vectors)


def logged_vectors(settings: Settings, options: ReplayOptions
                   ) -> dict[str, dict[str, float | None]]:
    """Event id -> the feature vector the live champion scored, from the scores topic."""
    topic = options.scores_topic or settings.kafka.scores_topic
    if not topic:
        raise ConfigError("replay --features scores: give --scores-topic (or kafka.scores_topic)")
    from ..adapters.kafka import read_to_end

    decode = msgspec.json.Decoder(ScoreRecord).decode
    vectors: dict[str, dict[str, float | None]] = {}
    for batch in read_to_end(settings.kafka.common_config(), topic):
        for message in batch:
            try:
                record = decode(message.value() or b"")
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if not record.shadow:
                vectors[record.event_id] = record.features
    if not vectors:
        raise ConfigError(f"replay --features scores: no score records on {topic!r}")
    return vectors
