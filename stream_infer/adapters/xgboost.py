"""The XGBoost adapter: a verified model file served in process.

Scores come from the compiled forest (``adapters.forest``) when it can serve the model bit for
bit, else from ``inplace_predict``; ``backend`` chooses: ``auto`` (the forest when it can),
``compiled`` (the forest or refuse the model) or ``xgboost``. The forest also computes
``saabas`` contributions (bit for bit XGBoost's ``approx_contribs``); exact TreeSHAP always
comes from XGBoost.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xgboost

from ..config import ModelSettings
from ..enrich import Matrix
from ..errors import ModelError, ModelIntegrityError
from ..registry import load_verified
from ..score import Scores
from .forest import Forest, Unsupported, compile_forest

ReasonsMethod = Literal["saabas", "tree_shap"]
Backend = Literal["auto", "compiled", "xgboost"]
log = logging.getLogger(__name__)


class XGBoostModel:
    """An XGBoost Booster plus its manifest; implements :class:`stream_infer.score.Model`.

    Loading verifies the file against its manifest first (sha256, no pickle), then checks the
    manifest's feature order against the booster's own ``feature_names`` when it has them.
    """

    def __init__(self, booster: xgboost.Booster, *, name: str, version: str,
                 features: tuple[str, ...], threshold: float,
                 reasons: ReasonsMethod = "saabas", forest: Forest | None = None,
                 nthread: int = 1) -> None:
        self.booster = booster
        self.forest = forest
        self.nthread = nthread
        self.name = name
        self.version = version
        self.features = features
        self.threshold = threshold
        self.reasons = reasons

    @classmethod
    def from_settings(cls, settings: ModelSettings, model_dir: Path) -> XGBoostModel:
        """The verified model in ``model_dir``, served as ``settings`` say."""
        return cls.load(model_dir, nthread=settings.nthread, reasons=settings.reasons_method,
                        backend=settings.backend)

    @classmethod
    def load(cls, model_dir: Path, *, nthread: int = 0, reasons: ReasonsMethod = "saabas",
             backend: Backend = "auto") -> XGBoostModel:
        verified = load_verified(model_dir)
        manifest = verified.manifest
        booster = xgboost.Booster(params={"nthread": nthread} if nthread else None)
        try:
            booster.load_model(bytearray(verified.raw))
        except xgboost.core.XGBoostError as exc:
            raise ModelError(f"{verified.path}: XGBoost cannot load it: {exc}") from exc
        own = booster.feature_names
        if own is not None and list(own) != manifest.features:
            raise ModelIntegrityError(
                f"{verified.path}: the model's feature order {own} differs from the manifest's "
                f"{manifest.features}"
            )
        if booster.num_features() != len(manifest.features):
            raise ModelIntegrityError(
                f"{verified.path}: model expects {booster.num_features()} features, "
                f"manifest lists {len(manifest.features)}"
            )
        forest = _forest(booster, backend, f"{manifest.name}:{manifest.version}")
        return cls(booster, name=manifest.name, version=manifest.version,
                   features=tuple(manifest.features), threshold=manifest.threshold,
                   reasons=reasons, forest=forest, nthread=nthread or os.cpu_count() or 1)

    @property
    def backend(self) -> str:
        """What scores: ``compiled`` or ``xgboost``."""
        return "xgboost" if self.forest is None else "compiled"

    def contributions(self, matrix: Matrix) -> npt.NDArray[np.float32]:
        """Per-feature contributions (``pred_contribs``); with the bias they sum to the raw
        margin. ``saabas`` (``approx_contribs``) follows each row's decision paths and costs
        about as much as a prediction; ``tree_shap`` (exact TreeSHAP) is about 40 times
        slower on a 300-tree depth-6 model (see docs/BENCHMARKS.md)."""
        if matrix.shape[0] == 0:
            return np.empty((0, len(self.features) + 1), dtype=np.float32)
        if self.forest is not None and self.reasons == "saabas":
            return self.forest.contributions(matrix)
        rows = xgboost.DMatrix(matrix, missing=np.nan, nthread=1)  # a few rows: no threads
        contribs = self.booster.predict(rows,
                                        pred_contribs=True, validate_features=False,
                                        approx_contribs=self.reasons == "saabas")
        return np.asarray(contribs, dtype=np.float32)

    def predict(self, matrix: Matrix) -> Scores:
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        if self.forest is not None:
            return self.forest.predict(matrix, self.nthread)
        scores = self.booster.inplace_predict(matrix, validate_features=False)
        return np.asarray(scores, dtype=np.float32)


def _forest(booster: xgboost.Booster, backend: Backend, label: str) -> Forest | None:
    """The compiled forest the backend setting asks for; ``compiled`` refuses what it cannot
    serve, ``auto`` falls back to XGBoost and says why."""
    if backend == "xgboost":
        return None
    try:
        forest = compile_forest(booster)
    except Unsupported as exc:
        if backend == "compiled":
            raise ModelError(f"model {label}: the compiled backend cannot serve it: {exc}"
                             ) from None
        log.info("model %s scored by XGBoost: the compiled backend cannot serve it: %s",
                 label, exc)
        return None
    log.info("model %s scored by the compiled forest (%d trees, depth %d)", label,
             forest.trees, forest.depth)
    return forest


@dataclass(frozen=True, slots=True)
class Fitted:
    """A booster trained in this process: its JSON model file, and a scorer for held-out rows.

    With early stopping the booster holds only the trees up to the best iteration (what the
    service will score), and ``best_iteration`` says which one that was.
    """

    json: bytes
    booster: xgboost.Booster
    best_iteration: int | None = None

    @property
    def trees(self) -> int:
        return int(self.booster.num_boosted_rounds())

    def predict(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return self.booster.inplace_predict(rows).astype(np.float64)


Labelled = tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]


def fit_booster(params: dict[str, Any], rows: npt.NDArray[np.float32],
                labels: npt.NDArray[np.float64], features: list[str], rounds: int, *,
                valid: Labelled | None = None,
                early_stopping_rounds: int | None = None) -> Fitted:
    """``xgboost.train`` on ``rows`` (columns named ``features``) for up to ``rounds`` rounds.

    ``early_stopping_rounds`` stops when the last ``eval_metric`` on ``valid`` has not improved
    for that many rounds, and keeps the trees up to the best round.
    """
    def matrix(x: npt.NDArray[np.float32], y: npt.NDArray[np.float64]) -> xgboost.DMatrix:
        return xgboost.DMatrix(x, label=y, feature_names=features)

    evals = [(matrix(*valid), "valid")] if valid is not None else []
    try:
        booster = xgboost.train(params, matrix(rows, labels), rounds, evals=evals,
                                early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
    except xgboost.core.XGBoostError as exc:
        raise ModelError(f"XGBoost refused the training parameters: {_first_line(exc)}"
                         ) from None
    best = None
    if early_stopping_rounds is not None:
        best = int(booster.best_iteration)
        booster = booster[: best + 1]
    return Fitted(bytes(booster.save_raw("json")), booster, best)


@dataclass(frozen=True, slots=True)
class Imported:
    """A model file trained elsewhere, read by XGBoost: what registering it needs to check.

    ``raw`` is the file to serve. An ``XGBClassifier`` saved after early stopping keeps its
    later trees while its ``predict_proba`` scores with the trees up to ``best_iteration``
    only (a plain ``Booster`` scores with all of them); ``raw`` then holds those trees alone,
    in the same format, and ``trees_in_file`` says how many the file had.
    """

    raw: bytes
    features: list[str] | None
    num_features: int
    objective: str
    outputs: int
    estimator: str | None
    best_iteration: int | None
    trees: int
    trees_in_file: int


def import_booster(raw: bytes, fmt: Literal["json", "ubj"]) -> Imported:
    """Load a booster's JSON or UBJSON bytes (as ``save_model`` wrote them) and describe it."""
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(raw))
        config = json.loads(booster.save_config())
    except xgboost.core.XGBoostError as exc:
        raise ModelError(f"XGBoost cannot read it: {_first_line(exc)}") from None
    learner = config["learner"]
    params = learner["learner_model_param"]
    estimator = _estimator_type(booster.attr("scikit_learn"))
    best = booster.attr("best_iteration")
    in_file = int(booster.num_boosted_rounds())
    if estimator is not None and best is not None and int(best) + 1 < in_file:
        booster = booster[: int(best) + 1]
        raw = bytes(booster.save_raw(fmt))
    names = booster.feature_names
    return Imported(
        raw=raw, features=list(names) if names else None,
        num_features=int(booster.num_features()), objective=learner["objective"]["name"],
        outputs=max(int(params.get("num_class", 0)), int(params.get("num_target", 1)), 1),
        estimator=estimator, best_iteration=None if best is None else int(best),
        trees=int(booster.num_boosted_rounds()), trees_in_file=in_file,
    )


def _estimator_type(meta: str | None) -> str | None:
    """``classifier`` for what ``XGBClassifier.save_model`` wrote (its ``scikit_learn``
    attribute), ``regressor`` for ``XGBRegressor``; ``None`` for a plain booster."""
    try:
        found = json.loads(meta or "{}")
    except ValueError:
        return "unknown"
    kind = found.get("_estimator_type", "unknown") if isinstance(found, dict) and found else None
    return None if kind is None else str(kind)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
