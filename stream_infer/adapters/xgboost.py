"""The XGBoost adapter: a verified model file served in process.

Scores come from the compiled forest (``adapters.forest``) when it can serve the model bit for
bit, else from ``inplace_predict``; ``backend`` chooses: ``auto`` (the forest when it can),
``compiled`` (the forest or refuse the model) or ``xgboost``. The forest also computes
``saabas`` contributions (bit for bit XGBoost's ``approx_contribs``); exact TreeSHAP always
comes from XGBoost.
"""

from __future__ import annotations

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
    """A booster trained in this process: its JSON model file, and a scorer for held-out rows."""

    json: bytes
    booster: xgboost.Booster

    def predict(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return self.booster.inplace_predict(rows).astype(np.float64)


def fit_booster(params: dict[str, Any], rows: npt.NDArray[np.float32],
                labels: npt.NDArray[np.float64], features: list[str], rounds: int) -> Fitted:
    """``xgboost.train`` on ``rows`` (columns named ``features``) for ``rounds`` rounds."""
    booster = xgboost.train(params, xgboost.DMatrix(rows, label=labels, feature_names=features),
                            rounds)
    return Fitted(bytes(booster.save_raw("json")), booster)
