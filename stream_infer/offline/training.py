"""``stream-infer model train``: a labelled table -> an XGBoost model in the registry.

Reads CSV or Parquet with one column per feature (the column name *is* the feature name, see
:mod:`stream_infer.enrich`), holds out a deterministic shuffled split, trains with fixed seed
and threads so results reproduce, and writes ``models/<name>/<version>/`` with its manifest.
AUC ROC and average precision are computed here with numpy (no scikit-learn dependency).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..adapters.xgboost import fit_booster
from ..errors import ConfigError
from ..records import epoch_ms
from ..registry import version_key, write_model
from .backtest import average_precision, roc_auc
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
    split: str = ""

    def summary(self) -> str:
        return "\n".join([
            f"wrote {self.model_dir}",
            f"  rows      {self.train_rows:,} train / {self.test_rows:,} held out "
            f"({self.positives:,} positives in all)",
            f"  features  {len(self.features)}: {', '.join(self.features)}",
            f"  held-out  AUC {self.auc:.4f}, average precision {self.average_precision:.4f}",
            f"  threshold {self.threshold:.4f}",
            *([f"  split     {self.split}"] if self.split else []),
        ])


def best_f1_threshold(labels: npt.NDArray[Any], scores: Vector) -> float:
    """The score threshold maximising F1 on these rows."""
    order = np.argsort(-scores, kind="mergesort")
    y, s = labels[order].astype(bool), scores[order]
    tp = np.cumsum(y)
    f1 = 2 * tp / (np.arange(1, len(y) + 1) + y.sum())
    return float(s[int(np.argmax(f1))])


@dataclass(frozen=True)
class TimeSplit:
    """Train on ``[train_from, train_until)``, skip ``gap_ms``, test until ``test_until``.

    The gap keeps labels that were not yet known at training time (chargebacks arrive
    days later) out of the evaluation, as a production retrain would face it.
    """

    train_until_ms: int
    gap_ms: int = 0
    test_until_ms: int | None = None
    train_from_ms: int | None = None

    def masks(self, event_time_ms: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_],
                                                                   npt.NDArray[np.bool_]]:
        t = event_time_ms
        train = t < self.train_until_ms
        if self.train_from_ms is not None:
            train &= t >= self.train_from_ms
        test = t >= self.train_until_ms + self.gap_ms
        if self.test_until_ms is not None:
            test &= t < self.test_until_ms
        return train, test

    def describe(self) -> str:
        def iso(ms: int | None) -> str:
            if ms is None:
                return "..."
            return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")

        return (f"time: train [{iso(self.train_from_ms)}, {iso(self.train_until_ms)}), "
                f"gap {self.gap_ms / 3_600_000:g} h, test "
                f"[{iso(self.train_until_ms + self.gap_ms)}, {iso(self.test_until_ms)})")


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds from digits, or from an ISO 8601 date or date-time (UTC if naive)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is neither epoch milliseconds nor an ISO 8601 time"
                          ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return epoch_ms(when)


def parse_duration_ms(text: str) -> int:
    """``90s``, ``15m``, ``6h``, ``2d`` (or bare milliseconds) as milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    text = text.strip()
    for unit in sorted(units, key=len, reverse=True):
        number = text.removesuffix(unit)
        if number != text:
            break
    else:
        unit, number = "ms", text
    try:
        return round(float(number) * units[unit])
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration like 90s, 15m, 6h or 2d") from None


def _event_times(table: dict[str, list[Any]], data: Path) -> npt.NDArray[np.int64]:
    if "event_time" not in table:
        raise ConfigError(f"{data}: a time split needs an event_time column")
    try:
        return np.array([parse_time_ms(str(v)) for v in table["event_time"]], dtype=np.int64)
    except ConfigError as exc:
        raise ConfigError(f"{data}: event_time: {exc}") from None


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
    split: TimeSplit | None = None,
) -> TrainReport:
    """Train, evaluate on a held-out split, and write a new model version.

    Without ``split`` the held-out rows are a seeded random ``test_fraction``; with it, the
    rows are split by their ``event_time`` column (train period, gap, test period).
    """
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
    if split is None:
        test = np.random.default_rng(seed).random(len(y)) < test_fraction
        train_rows = ~test
    else:
        train_rows, test = split.masks(_event_times(table, data))
        if not train_rows.any() or not test.any():
            raise ConfigError(f"{data}: the time split leaves {int(train_rows.sum())} training "
                              f"and {int(test.sum())} test rows; both must be non-empty")
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": max_depth,
              "eta": learning_rate, "seed": seed, "nthread": 2, "eval_metric": "aucpr"}
    fitted = fit_booster(params, x[train_rows], y[train_rows], names, n_estimators)
    held_out = fitted.predict(x[test])
    auc, ap = roc_auc(y[test], held_out), average_precision(y[test], held_out)
    chosen = threshold if threshold is not None else best_f1_threshold(y[test], held_out)
    model_dir = write_model(
        models_dir, name, version or _next_version(models_dir / name),
        fitted.json, features=names, threshold=chosen,
        training={"data": Path(data).name, "data_sha256": _sha256(Path(data)),
                  "rows": len(y), "train_rows": int(train_rows.sum()),
                  "test_rows": int(test.sum()), "positives": int(y.sum()),
                  "split": split.describe() if split else f"random {test_fraction:.0%}",
                  "auc": round(auc, 6), "average_precision": round(ap, 6),
                  "params": {**params, "n_estimators": n_estimators}},
    )
    return TrainReport(model_dir, names, int(train_rows.sum()), int(test.sum()), int(y.sum()),
                       auc, ap, chosen, split.describe() if split else "")


def _numeric(column: list[Any], name: str) -> Vector:
    try:
        return np.array([math.nan if v is None else float(v) for v in column], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"column {name!r} is not numeric") from None


def _next_version(model_dir: Path) -> str:
    versions = [d.name for d in model_dir.glob("*") if d.is_dir() and d.name.isdigit()]
    return str(int(max(versions, key=version_key)) + 1) if versions else "1"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
