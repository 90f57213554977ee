"""``stream-infer model train``: a labelled table -> an XGBoost model in the registry.

Reads CSV or Parquet with one column per feature (the column name *is* the feature name, see
:mod:`stream_infer.enrich`), holds out a deterministic shuffled split, trains with fixed seed
and threads so results reproduce, and writes ``models/<name>/<version>/`` with its manifest.
AUC ROC and average precision are computed here with numpy (no scikit-learn dependency).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost

from .errors import ConfigError
from .registry import version_key, write_model
from .tables import read_table

Vector = npt.NDArray[np.float64]
NOT_FEATURES = {"event_id", "event_time", "card_id", "merchant_id", "customer_id",
                "terminal_id", "label"}


@dataclass(frozen=True)
class TrainReport:
    """What training produced and how well the model ranks the held-out rows."""

    model_dir: Path
    features: list[str]
    train_rows: int
    test_rows: int
    positives: int
    auc: float
    average_precision: float
    threshold: float

    def summary(self) -> str:
        return "\n".join([
            f"wrote {self.model_dir}",
            f"  rows      {self.train_rows:,} train / {self.test_rows:,} held out "
            f"({self.positives:,} positives in all)",
            f"  features  {len(self.features)}: {', '.join(self.features)}",
            f"  held-out  AUC {self.auc:.4f}, average precision {self.average_precision:.4f}",
            f"  threshold {self.threshold:.4f}",
        ])


def roc_auc(labels: Sequence[int] | npt.NDArray[Any], scores: Sequence[float] | Vector) -> float:
    """Area under the ROC curve (ties count one half): the Mann-Whitney statistic."""
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        raise ConfigError("AUC needs both classes in the held-out labels")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(labels: Sequence[int] | npt.NDArray[Any],
                      scores: Sequence[float] | Vector) -> float:
    """Sum over distinct thresholds of (recall step) x precision, as scikit-learn defines it."""
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    if not y.any():
        raise ConfigError("average precision needs at least one positive label")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall_step = np.diff(np.r_[0, tp]) / y.sum()
    return float((recall_step * precision).sum())


def best_f1_threshold(labels: npt.NDArray[Any], scores: Vector) -> float:
    """The score threshold maximising F1 on these rows."""
    order = np.argsort(-scores, kind="mergesort")
    y, s = labels[order].astype(bool), scores[order]
    tp = np.cumsum(y)
    f1 = 2 * tp / (np.arange(1, len(y) + 1) + y.sum())
    return float(s[int(np.argmax(f1))])


def train(
    data: Path,
    *,
    models_dir: Path,
    name: str,
    version: str | None = None,
    features: list[str] | None = None,
    label_column: str = "label",
    test_fraction: float = 0.2,
    seed: int = 7,
    n_estimators: int = 200,
    max_depth: int = 6,
    learning_rate: float = 0.1,
    threshold: float | None = None,
) -> TrainReport:
    """Train, evaluate on a held-out split, and write a new model version."""
    table = read_table(data)
    if label_column not in table:
        raise ConfigError(f"{data}: no label column {label_column!r}")
    names = features or [c for c in table if c not in NOT_FEATURES | {label_column}]
    missing = [f for f in names if f not in table]
    if missing:
        raise ConfigError(f"{data}: no column for features {missing}")
    x = np.column_stack([_numeric(table[f], f) for f in names]).astype(np.float32)
    y = _numeric(table[label_column], label_column)
    if np.isnan(y).any() or not set(np.unique(y)) <= {0.0, 1.0}:
        raise ConfigError(f"{data}: labels must be 0 or 1 in every row")
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{data}: labels are all {int(y[0])}; need both classes")
    test = np.random.default_rng(seed).random(len(y)) < test_fraction
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": max_depth,
              "eta": learning_rate, "seed": seed, "nthread": 2, "eval_metric": "aucpr"}
    booster = xgboost.train(
        params, xgboost.DMatrix(x[~test], label=y[~test], feature_names=names), n_estimators
    )
    held_out = booster.inplace_predict(x[test]).astype(np.float64)
    auc, ap = roc_auc(y[test], held_out), average_precision(y[test], held_out)
    chosen = threshold if threshold is not None else best_f1_threshold(y[test], held_out)
    model_dir = write_model(
        models_dir, name, version or _next_version(models_dir / name),
        bytes(booster.save_raw("json")), features=names, threshold=chosen,
        training={"data": Path(data).name, "data_sha256": _sha256(Path(data)),
                  "rows": len(y), "test_rows": int(test.sum()), "positives": int(y.sum()),
                  "auc": round(auc, 6), "average_precision": round(ap, 6),
                  "params": {**params, "n_estimators": n_estimators}},
    )
    return TrainReport(model_dir, names, int((~test).sum()), int(test.sum()), int(y.sum()),
                       auc, ap, chosen)


def _numeric(column: list[Any], name: str) -> Vector:
    try:
        return np.array([math.nan if v is None else float(v) for v in column], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"column {name!r} is not numeric") from None


def _average_ranks(values: Vector) -> Vector:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def _next_version(model_dir: Path) -> str:
    versions = [d.name for d in model_dir.glob("*") if d.is_dir() and d.name.isdigit()]
    return str(int(max(versions, key=version_key)) + 1) if versions else "1"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
