"""Feature matrix -> scores -> alerts and score records.

The model is a port (:class:`Model`); ``adapters.xgboost.XGBoostModel`` serves it in process.
Everything else here is pure: thresholds, deterministic alert ids, record construction.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .config import FeatureView
from .enrich import Enricher, Matrix
from .errors import ConfigError
from .records import Alert, Reason, ScoreRecord, Transaction

Scores = npt.NDArray[np.float32]
_ALERT_NAMESPACE = uuid.UUID("6f1d4f0e-2b8a-5c47-9a53-3d0c2f9b7e11")
_NAMESPACE_BYTES = _ALERT_NAMESPACE.bytes
_VERSION_BITS = 0xF000 << 64 | 0xC000 << 48  # where uuid5 writes its version and variant
_VERSION_5 = 0x5000 << 64 | 0x8000 << 48


class Model(Protocol):
    """A scoring model with the metadata alerts carry."""

    name: str
    version: str
    features: tuple[str, ...]
    threshold: float

    def predict(self, matrix: Matrix) -> Scores:
        """Probability of fraud per row of a float32 matrix in ``features`` order."""
        ...

    def contributions(self, matrix: Matrix) -> npt.NDArray[np.float32]:
        """Per-row feature contributions to the raw margin: ``(rows, features + 1)``, bias last."""
        ...


@dataclass(frozen=True, slots=True)
class ModelSet:
    """What scores a batch: the champion, its shadow challengers, one enricher for them all.

    The enricher fills the union of the models' features, champion's first, so one store
    round trip serves every model. The champion alone raises alerts; shadows only score.
    A pipeline reads its ``ModelSet`` once per batch, so swapping it (hot reload) between
    batches never mixes versions within a batch.
    """

    champion: Model
    shadows: tuple[Model, ...]
    enricher: Enricher
    columns: tuple[npt.NDArray[np.intp], ...]

    @classmethod
    def build(cls, champion: Model, views: Mapping[str, FeatureView],
              shadows: Sequence[Model] = (), *, features_in_events: bool = False,
              windows: Sequence[str] = ()) -> ModelSet:
        """Plan the union of features; raises ConfigError if a feature has no source.

        ``features_in_events`` reads view features from the event's ``attributes`` under
        their full name (``card.avg_amount_30d``), for backtests over self-contained events;
        ``windows`` are the names the window engine computes (``customer.count_7d``).
        """
        names = set()
        for model in (champion, *shadows):
            key = (model.name, model.version)
            if key in names:
                raise ConfigError(f"model {model.name} {model.version} is listed twice")
            names.add(key)
        union = list(dict.fromkeys(f for m in (champion, *shadows) for f in m.features))
        enricher = Enricher(union, views, features_in_events=features_in_events,
                            windows=windows)
        position = {name: i for i, name in enumerate(union)}
        columns = tuple(np.array([position[f] for f in m.features], dtype=np.intp)
                        for m in shadows)
        return cls(champion, tuple(shadows), enricher, columns)

    def champion_matrix(self, matrix: Matrix) -> Matrix:
        """The champion's columns (a prefix of the union: no copy when there are no extras)."""
        width = len(self.champion.features)
        return matrix if matrix.shape[1] == width else matrix[:, :width]

    def shadow_scores(self, matrix: Matrix) -> list[Scores]:
        """Each shadow's scores on its own columns of the union matrix."""
        return [model.predict(np.ascontiguousarray(matrix[:, cols]))
                for model, cols in zip(self.shadows, self.columns, strict=True)]


def top_reasons(contributions: npt.NDArray[np.float32], values: Matrix, names: Sequence[str],
                k: int) -> list[list[Reason]]:
    """For each row, the ``k`` features that pushed the score up the most (positive only),
    largest first; equal contributions keep the features' order."""
    pushes = contributions[:, :-1]
    ranked = np.argsort(-pushes, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(pushes, ranked, axis=1).tolist()
    seen = np.take_along_axis(np.asarray(values, dtype=np.float32), ranked, axis=1)
    return [
        [Reason(feature=names[j], value=_shortest(value), contribution=push)
         for j, push, value in zip(columns, pushes_row, values_row, strict=True) if push > 0]
        for columns, pushes_row, values_row in zip(ranked.tolist(), top, seen, strict=True)
    ]


def _shortest(value: np.float32) -> float | None:
    """The float32 the model saw, written with the fewest digits (0.294, not 0.29399999)."""
    return None if math.isnan(value) else float(str(value))


def alert_id(event_id: str, model_name: str, model_version: str) -> str:
    """Deterministic alert id: the same event under the same model always gets the same id.

    It is ``str(uuid.uuid5(namespace, "event_id\\x1fmodel_name\\x1fmodel_version"))``, computed
    from the SHA-1 digest directly: ``uuid.UUID`` objects cost half an alert's build time.
    """
    name = f"{event_id}\x1f{model_name}\x1f{model_version}".encode()
    digest = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    hexed = f"{int.from_bytes(digest[:16]) & ~_VERSION_BITS | _VERSION_5:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def alerted_rows(scores: Scores, threshold: float) -> npt.NDArray[np.intp]:
    """Indexes of the rows whose score reaches the threshold."""
    return np.flatnonzero(scores >= threshold)


def make_alerts(
    events: Sequence[Transaction],
    scores: Scores,
    rows: npt.NDArray[np.intp],
    model: Model,
    *,
    scored_at: int,
    degraded: bool,
    reasons: Sequence[list[Reason]] | None = None,
) -> list[Alert]:
    """One alert per alerted row; ``reasons`` (one list per alerted row) if explained."""
    return [
        Alert(
            alert_id=alert_id(events[i].event_id, model.name, model.version),
            event_id=events[i].event_id,
            card_id=events[i].card_id,
            score=float(scores[i]),
            threshold=model.threshold,
            model_name=model.name,
            model_version=model.version,
            event_time=events[i].event_time_ms,
            scored_at=scored_at,
            degraded=degraded,
            reasons=reasons[n] if reasons is not None else [],
        )
        for n, i in enumerate(rows.tolist())
    ]


def make_score_records(
    events: Sequence[Transaction],
    scores: Scores,
    matrix: Matrix,
    model: Model,
    *,
    scored_at: int,
    degraded: bool,
    shadow: bool = False,
) -> list[ScoreRecord]:
    """Every score with the feature vector used (NaN written as null), the model's threshold
    and whether the score reached it (an alert for the champion, a would-be one for a
    shadow), compared as :func:`alerted_rows` compares."""
    names, threshold = model.features, model.threshold
    return [
        ScoreRecord(
            event_id=event.event_id,
            card_id=event.card_id,
            score=float(score),
            model_name=model.name,
            model_version=model.version,
            event_time=event.event_time_ms,
            scored_at=scored_at,
            features={n: (None if math.isnan(v) else v) for n, v in zip(names, row, strict=True)},
            label=event.label,
            degraded=degraded,
            shadow=shadow,
            threshold=threshold,
            alerted=alerted,
        )
        for event, score, row, alerted in zip(events, scores.tolist(), matrix.tolist(),
                                              (scores >= threshold).tolist(), strict=True)
    ]
