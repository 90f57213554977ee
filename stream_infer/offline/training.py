"""``stream-infer model train`` and ``model register``: new versions in the model registry.

Training reads CSV or Parquet with one column per feature (the column name *is* the feature
name, see :mod:`stream_infer.enrich`) and splits the rows three ways: *train* rows fit the
trees, *validation* rows fit the alert threshold (best F1) and early stopping, and *test* rows
give the reported metrics and nothing else, so no published figure saw the rows that chose
the threshold. The split is seeded-random, or by event time: a training window, the label
delay, a validation window, the delay again, a test window. Seeds and threads are fixed so
results reproduce; AUC ROC and average precision are numpy only.

Registration imports a booster trained elsewhere (XGBoost JSON or UBJSON, ``Booster`` or
``XGBClassifier``), checks it against the manifest it will get, proves that the service loads
it, and only then publishes the version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..adapters.xgboost import XGBoostModel, fit_booster, import_booster
from ..drift import fit_profile
from ..errors import ConfigError, ModelError, ModelIntegrityError
from ..records import epoch_ms, parse_time_ms
from ..registry import MANIFEST, ModelFormat, feature_order, next_version, sniff_format, write_model
from .backtest import average_precision, roc_auc
from .tables import read_table

Vector = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Scalar = int | float | str
DAY_MS = 86_400_000
NOT_FEATURES = {"event_id", "event_time", "card_id", "merchant_id", "customer_id",
                "terminal_id", "label"}
DEFAULT_VALID_FRACTION = 0.2
DEFAULT_PARAMS: dict[str, Scalar] = {"objective": "binary:logistic", "tree_method": "hist",
                                     "eval_metric": "aucpr"}
"""What ``model train`` gives XGBoost besides ``max_depth``, ``eta``, ``seed``, ``nthread``."""
ALIASES = {"learning_rate": "eta", "random_state": "seed", "n_jobs": "nthread",
           "min_split_loss": "gamma", "reg_lambda": "lambda", "reg_alpha": "alpha"}
"""XGBoost's other names for a parameter: ``--param learning_rate=0.3`` replaces ``eta``."""
PROBABILITY_OBJECTIVES = ("binary:logistic", "reg:logistic")
THRESHOLD_GIVEN = "given (--threshold)"
THRESHOLD_FITTED = "best F1 on the validation rows"


@dataclass(frozen=True)
class Part:
    """How many rows, and fraudulent ones, one part of the split holds."""

    rows: int
    positives: int

    @classmethod
    def of(cls, labels: Vector, mask: Mask) -> Part:
        return cls(int(mask.sum()), int(labels[mask].sum()))


@dataclass(frozen=True)
class TrainReport:
    """What training produced and how well the model ranks the test rows."""

    model_dir: Path
    features: list[str]
    split: str
    train: Part
    valid: Part
    test: Part
    auc: float | None
    average_precision: float | None
    threshold: float
    threshold_source: str
    trees: int
    best_iteration: int | None = None
    dropped: tuple[int, int] | None = None
    """Test rows and cards left out by ``drop_known_compromised``."""

    def summary(self) -> str:
        dropped = ("" if self.dropped is None else f"; left out {self.dropped[0]:,} rows of "
                   f"{self.dropped[1]:,} cards whose fraud was already known")
        stopped = ("" if self.best_iteration is None
                   else f" (early stopping: the best iteration was {self.best_iteration})")
        width = max(len(f"{part.rows:,}") for part in (self.train, self.valid, self.test))

        def rows(part: Part) -> str:
            return f"{part.rows:>{width},} rows, {part.positives:,} positives"

        return "\n".join([
            f"wrote {self.model_dir}",
            f"  features    {len(self.features)}: {', '.join(self.features)}",
            f"  split       {self.split}",
            f"  train       {rows(self.train)}",
            f"  validation  {rows(self.valid)}",
            f"  test        {rows(self.test)}{dropped}",
            f"  trees       {self.trees}{stopped}",
            f"  test rows   AUC {_num(self.auc)}, average precision "
            f"{_num(self.average_precision)}",
            f"  threshold   {self.threshold:.4f}: {self.threshold_source}",
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
    """Windows of event time: train ``[train_from, train_until)``, ``gap_ms``, validation until
    ``valid_until`` (when set), ``gap_ms`` again, test until ``test_until``.

    The gap is the label delay (chargebacks arrive days later): the labels of a window are
    known only a gap after it ends, so the next window starts then, as a production retrain
    would face it. Without ``valid_until`` the test window starts one gap after training.
    """

    train_until_ms: int
    gap_ms: int = 0
    test_until_ms: int | None = None
    train_from_ms: int | None = None
    valid_until_ms: int | None = None

    @property
    def test_from_ms(self) -> int:
        last = self.train_until_ms if self.valid_until_ms is None else self.valid_until_ms
        return last + self.gap_ms

    def windows(self, event_time_ms: npt.NDArray[np.int64]) -> tuple[Mask, Mask, Mask]:
        """The train, validation and test rows."""
        t = event_time_ms
        train = _within(t, self.train_from_ms, self.train_until_ms)
        valid = (_within(t, self.train_until_ms + self.gap_ms, self.valid_until_ms)
                 if self.valid_until_ms is not None else np.zeros(len(t), dtype=bool))
        return train, valid, _within(t, self.test_from_ms, self.test_until_ms)

    def masks(self, event_time_ms: npt.NDArray[np.int64]) -> tuple[Mask, Mask]:
        """The train and test rows (:meth:`windows` has the validation rows too)."""
        train, _, test = self.windows(event_time_ms)
        return train, test

    def check(self) -> None:
        """Refuse windows that are empty or out of order."""
        if self.gap_ms < 0:
            raise ConfigError("the gap must not be negative")
        if self.train_from_ms is not None and self.train_from_ms >= self.train_until_ms:
            raise ConfigError("--train-from must be before --train-until")
        if self.valid_until_ms is not None and (
                self.valid_until_ms <= self.train_until_ms + self.gap_ms):
            raise ConfigError("--valid-until must be after --train-until plus the gap")
        if self.test_until_ms is not None and self.test_until_ms <= self.test_from_ms:
            raise ConfigError(f"--test-until must be after the test window's start, "
                              f"{_iso(self.test_from_ms)}")

    def describe(self) -> str:
        gap = (f"gap {self.gap_ms // DAY_MS} d" if self.gap_ms % DAY_MS == 0 and self.gap_ms
               else f"gap {self.gap_ms / 3_600_000:g} h")
        valid = ("" if self.valid_until_ms is None else
                 f"validation [{_iso(self.train_until_ms + self.gap_ms)}, "
                 f"{_iso(self.valid_until_ms)}), {gap}, ")
        return (f"time: train [{_iso(self.train_from_ms)}, {_iso(self.train_until_ms)}), "
                f"{gap}, {valid}test [{_iso(self.test_from_ms)}, {_iso(self.test_until_ms)})")


def _within(t: npt.NDArray[np.int64], start: int | None, end: int | None) -> Mask:
    inside = np.ones(len(t), dtype=bool)
    if start is not None:
        inside &= t >= start
    if end is not None:
        inside &= t < end
    return inside


def _iso(ms: int | None) -> str:
    if ms is None:
        return "..."
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def known_compromised(event_time_ms: npt.NDArray[np.int64], cards: npt.NDArray[Any],
                      labels: Vector, held_out: Mask, *, gap_ms: int,
                      since_ms: int | None = None) -> Mask:
    """The ``held_out`` rows whose card had a fraud already known when their (UTC) day began.

    A fraud at time ``x`` (at or after ``since_ms``) is known from ``x + gap_ms`` on. This is
    how the Fraud-Detection-Handbook builds its test sets: with a delay of whole days, test
    day ``D`` leaves out the cards defrauded from the training start up to day ``D - delay``
    (excluded), the training frauds and those of the delay period included. A production
    system has blocked those cards by then, so scoring them flatters a model.
    """
    t = event_time_ms
    fraud = labels == 1
    if since_ms is not None:
        fraud &= t >= since_ms
    known_from: dict[Any, int] = {}
    for card, when in zip(cards[fraud].tolist(), t[fraud].tolist(), strict=True):
        known_from[card] = min(known_from.get(card, when), when)
    never = np.iinfo(np.int64).max
    first = np.array([known_from.get(card, never) for card in cards.tolist()], dtype=np.int64)
    day_start = t // DAY_MS * DAY_MS
    return held_out & (first < day_start - gap_ms)


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


def parse_param(text: str) -> tuple[str, Scalar]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``, the value an int, else a float, else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--param {text!r}: expected KEY=VALUE, e.g. tree_method=exact")
    value = value.strip()
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


def read_params_file(path: Path) -> dict[str, Scalar]:
    """XGBoost parameters from a TOML (``tree_method = "exact"``) or JSON file: one flat table."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # TOML and JSON decoding errors, and bad UTF-8
        raise ConfigError(f"{path}: not a table of XGBoost parameters: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of XGBoost parameters")
    bad = [k for k, v in data.items() if not isinstance(v, int | float | str)]
    if bad:
        raise ConfigError(f"{path}: {', '.join(bad)}: a parameter is a number or a string")
    return data


def xgboost_params(overrides: Mapping[str, Scalar], *, max_depth: int, learning_rate: float,
                   seed: int, nthread: int) -> dict[str, Scalar]:
    """What ``xgboost.train`` gets: :data:`DEFAULT_PARAMS` and the named options, then
    ``overrides`` (an alias such as ``learning_rate`` replaces ``eta``)."""
    params: dict[str, Scalar] = {**DEFAULT_PARAMS, "max_depth": max_depth, "eta": learning_rate,
                                 "seed": seed, "nthread": nthread}
    for key, value in overrides.items():
        if key in ("n_estimators", "num_boost_round", "num_round"):
            raise ConfigError(f"{key}: the number of trees is --trees")
        if key == "early_stopping_rounds":
            raise ConfigError(f"{key}: use --early-stopping-rounds")
        params[ALIASES.get(key, key)] = value
    if params["objective"] not in PROBABILITY_OBJECTIVES:
        raise ConfigError(f"objective {params['objective']}: the service alerts on a fraud "
                          f"probability; use one of {', '.join(PROBABILITY_OBJECTIVES)}")
    return params


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold}: a score threshold is between 0 and 1")
    return threshold


@dataclass(frozen=True)
class _Rows:
    """The table as arrays: features, labels, and the time and card columns when present."""

    x: npt.NDArray[np.float32]
    y: Vector
    times: npt.NDArray[np.int64] | None
    cards: npt.NDArray[Any] | None


def _load(data: Path, names: list[str] | None, label: str, time_column: str,
          card_column: str) -> tuple[_Rows, list[str]]:
    table = read_table(data)
    if label not in table:
        raise ConfigError(f"{data}: no label column {label!r}")
    names = names or [c for c in table
                      if c not in NOT_FEATURES | {label, time_column, card_column}]
    missing = [f for f in names if f not in table]
    if missing:
        raise ConfigError(f"{data}: no column for features {missing}")
    x = np.column_stack([_numeric(table[f], f) for f in names]).astype(np.float32)
    y = _numeric(table[label], label)
    if np.isnan(y).any() or not set(np.unique(y)) <= {0.0, 1.0}:
        raise ConfigError(f"{data}: labels must be 0 or 1 in every row")
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{data}: labels are all {int(y[0])}; need both classes")
    times = _event_times(table[time_column], data, time_column) if time_column in table else None
    cards = (np.array(["" if v is None else str(v) for v in table[card_column]], dtype=object)
             if card_column in table else None)
    return _Rows(x, y, times, cards), names


def _event_times(column: list[Any], data: Path, name: str) -> npt.NDArray[np.int64]:
    try:
        return np.array([epoch_ms(v if v.tzinfo else v.replace(tzinfo=dt.UTC))
                         if isinstance(v, dt.datetime) else parse_time_ms(str(v))
                         for v in column], dtype=np.int64)
    except ConfigError as exc:
        raise ConfigError(f"{data}: {name}: {exc}") from None


def _split(rows: _Rows, split: TimeSplit | None, *, data: Path, time_column: str,
           test_fraction: float, valid_fraction: float,
           seed: int) -> tuple[Mask, Mask, Mask, str]:
    """Train, validation and test rows, and how they were chosen."""
    if split is None:
        if not (0 < test_fraction < 1 and test_fraction + valid_fraction < 1):
            raise ConfigError("the test and validation fractions must leave rows to train on")
        u = np.random.default_rng(seed).random(len(rows.y))
        test = u < test_fraction
        valid = ~test & (u < test_fraction + valid_fraction)
        return ~(test | valid), valid, test, (
            f"random (seed {seed}): test {test_fraction:.0%}, validation {valid_fraction:.0%}")
    if rows.times is None:
        raise ConfigError(f"{data}: a time split needs an event time column ({time_column!r})")
    split.check()
    train, valid, test = split.windows(rows.times)
    described = split.describe()
    if split.valid_until_ms is None and valid_fraction > 0 and train.any():
        train, valid = _latest(train, rows.times, valid_fraction)
        described += (f"; validation: the training window's latest {valid_fraction:.0%}, "
                      f"from {_iso(int(rows.times[valid].min()))}")
    if not train.any() or not test.any():
        raise ConfigError(f"{data}: the time split leaves {int(train.sum())} training "
                          f"and {int(test.sum())} test rows; both must be non-empty")
    return train, valid, test, described


def _latest(train: Mask, times: npt.NDArray[np.int64], fraction: float) -> tuple[Mask, Mask]:
    """Move the latest ``fraction`` of the training rows (by event time) to validation."""
    count = max(1, round(int(train.sum()) * fraction))
    cut = np.sort(times[train])[-count]
    valid = train & (times >= cut)
    return train & ~valid, valid


def train(
    data: Path,
    *,
    models_dir: Path,
    name: str,
    version: str | None = None,
    features: list[str] | None = None,
    label_column: str = "label",
    time_column: str = "event_time",
    card_column: str = "card_id",
    test_fraction: float = 0.2,
    valid_fraction: float | None = None,
    seed: int = 7,
    n_estimators: int = 200,
    max_depth: int = 6,
    learning_rate: float = 0.1,
    nthread: int = 2,
    params: Mapping[str, Scalar] | None = None,
    early_stopping_rounds: int | None = None,
    threshold: float | None = None,
    split: TimeSplit | None = None,
    drop_known_compromised: bool = False,
) -> TrainReport:
    """Train on the train rows, fit the threshold on the validation rows, evaluate on the test
    rows, and write a new model version. Its manifest holds the train rows' reference profile
    (:func:`stream_infer.drift.fit_profile`: each feature's and the score's bins).

    Without ``split`` the parts are a seeded random ``test_fraction`` and ``valid_fraction``;
    with it, windows of the ``time_column`` (see :class:`TimeSplit`). ``valid_fraction``
    defaults to 0.2 when something needs validation rows (no fixed ``threshold``, or early
    stopping) and a time split has no validation window, else to 0; with a time split it is
    the latest share of the training window. ``drop_known_compromised`` leaves out of the test
    rows the cards whose fraud was known (see :func:`known_compromised`).
    """
    if threshold is not None:
        _check_threshold(threshold)
    if drop_known_compromised and split is None:
        raise ConfigError("--drop-known-compromised needs a time split (--train-until)")
    valid_fraction = _valid_fraction(valid_fraction, split, threshold is None or
                                     early_stopping_rounds is not None)
    xgb_params = xgboost_params(params or {}, max_depth=max_depth, learning_rate=learning_rate,
                                seed=seed, nthread=nthread)
    rows, names = _load(data, features, label_column, time_column, card_column)
    train_rows, valid, test, described = _split(
        rows, split, data=data, time_column=time_column, test_fraction=test_fraction,
        valid_fraction=valid_fraction, seed=seed)
    _check_validation(rows.y[valid], threshold is None, early_stopping_rounds)
    dropped = None
    if drop_known_compromised:
        assert split is not None
        test, dropped = _drop_known(rows, test, split, data, card_column)

    x, y = rows.x, rows.y
    fitted = fit_booster(xgb_params, x[train_rows], y[train_rows], names, n_estimators,
                         valid=(x[valid], y[valid]) if early_stopping_rounds else None,
                         early_stopping_rounds=early_stopping_rounds)
    chosen, source = ((best_f1_threshold(y[valid], fitted.predict(x[valid])), THRESHOLD_FITTED)
                      if threshold is None else (threshold, THRESHOLD_GIVEN))
    scores, labels = fitted.predict(x[test]), y[test]
    both = 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, scores) if both else None
    ap = average_precision(labels, scores) if labels.sum() else None
    parts = Part.of(y, train_rows), Part.of(y, valid), Part.of(y, test)

    training: dict[str, Any] = {
        "data": Path(data).name, "data_sha256": _sha256(Path(data)), "rows": len(y),
        "split": described,
        "train_rows": parts[0].rows, "valid_rows": parts[1].rows, "test_rows": parts[2].rows,
        "positives": int(y.sum()), "train_positives": parts[0].positives,
        "valid_positives": parts[1].positives, "test_positives": parts[2].positives,
        "auc": _round(auc), "average_precision": _round(ap),
        "threshold": {"value": chosen, "source": source},
        "params": {**xgb_params, "n_estimators": n_estimators}, "trees": fitted.trees,
    }
    if early_stopping_rounds:
        training |= {"early_stopping_rounds": early_stopping_rounds,
                     "best_iteration": fitted.best_iteration}
    if dropped is not None:
        training["dropped_known_compromised"] = {"rows": dropped[0], "cards": dropped[1]}
    profile = fit_profile(x[train_rows], names, fitted.predict(x[train_rows]))
    model_dir = write_model(models_dir, name, version or next_version(models_dir / name),
                            fitted.json, features=names, threshold=chosen, training=training,
                            profile=profile.to_json())
    return TrainReport(model_dir, names, described, *parts, auc, ap, chosen, source,
                       fitted.trees, fitted.best_iteration, dropped)


def _valid_fraction(given: float | None, split: TimeSplit | None, wanted: bool) -> float:
    """The validation share: ``given``, else 0.2 if ``wanted`` and no window says otherwise."""
    window = split is not None and split.valid_until_ms is not None
    if given is not None and window:
        raise ConfigError("--valid-fraction and --valid-until both choose the validation rows; "
                          "give one")
    fraction = given if given is not None else (
        DEFAULT_VALID_FRACTION if wanted and not window else 0.0)
    if not 0 <= fraction < 1:
        raise ConfigError(f"validation fraction {fraction}: between 0 and 1")
    return fraction


def _drop_known(rows: _Rows, test: Mask, split: TimeSplit, data: Path,
                card_column: str) -> tuple[Mask, tuple[int, int]]:
    """The test rows less the known compromised cards', and how many rows and cards left."""
    assert rows.times is not None  # a time split has them
    cards = _cards(rows, data, card_column)
    left_out = known_compromised(rows.times, cards, rows.y, test, gap_ms=split.gap_ms,
                                 since_ms=split.train_from_ms)
    if not (test & ~left_out).any():
        raise ConfigError(f"{data}: no test rows are left once the known compromised cards "
                          f"are left out")
    return test & ~left_out, (int(left_out.sum()), len(set(cards[left_out].tolist())))


def _check_validation(labels: Vector, fit_threshold: bool, early_stopping: int | None) -> None:
    if (fit_threshold or early_stopping) and not labels.sum():
        needs = "fit the threshold" if fit_threshold else "stop early"
        raise ConfigError(
            f"no fraud among the {len(labels):,} validation rows to {needs} on: widen the "
            f"validation rows (--valid-fraction, --valid-until)"
            f"{' or give --threshold' if fit_threshold else ''}")


def _cards(rows: _Rows, data: Path, column: str) -> npt.NDArray[Any]:
    if rows.cards is None:
        raise ConfigError(f"{data}: --drop-known-compromised needs a card column ({column!r}, "
                          f"see --card-column)")
    if (rows.cards == "").any():
        raise ConfigError(f"{data}: {column} is empty in {int((rows.cards == '').sum())} rows")
    return rows.cards


@dataclass(frozen=True)
class RegisterReport:
    """What ``model register`` published."""

    model_dir: Path
    source: Path
    format: ModelFormat
    estimator: str | None
    features: list[str]
    features_from: str
    threshold: float
    threshold_source: str
    trees: int
    trees_in_file: int
    best_iteration: int | None
    sha256: str

    def summary(self) -> str:
        kind = "XGBClassifier" if self.estimator == "classifier" else (
            f"scikit-learn {self.estimator}" if self.estimator else "Booster")
        trees = f"{self.trees}"
        if self.trees != self.trees_in_file:
            trees += (f" of the file's {self.trees_in_file}: the trees up to best_iteration "
                      f"{self.best_iteration}, what {kind}.predict_proba scores")
        return "\n".join([
            f"registered {self.model_dir} from {self.source} ({kind}, {self.format})",
            f"  features    {len(self.features)} ({self.features_from}): "
            f"{', '.join(self.features)}",
            f"  trees       {trees}",
            f"  threshold   {self.threshold:.4f}: {self.threshold_source}",
            f"  sha256      {self.sha256}",
        ])


def register(source: Path, *, models_dir: Path, name: str, version: str | None = None,
             features: list[str] | None = None, threshold: float | None = None
             ) -> RegisterReport:
    """Publish a model trained elsewhere as ``models_dir/name/version``.

    Every check runs before anything is written: the file is XGBoost JSON or UBJSON (never a
    pickle), XGBoost reads it, it outputs one probability, and the feature order is the
    booster's own ``feature_names`` (``features``, when given, must equal them) or else
    ``features``, as many as the booster's ``num_feature``. The version is written beside
    the registry, loaded as the service loads it, and then renamed into place.
    """
    source = Path(source)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ModelError(f"{source}: cannot read it: {exc.strerror or exc}") from None
    fmt = sniff_format(source, raw)
    try:
        model = import_booster(raw, "json" if fmt == "xgboost-json" else "ubj")
    except ModelError as exc:
        raise ModelIntegrityError(f"{source}: {exc}") from None
    if model.objective not in PROBABILITY_OBJECTIVES or model.outputs != 1:
        raise ModelIntegrityError(
            f"{source}: objective {model.objective} with {model.outputs} outputs; the service "
            f"alerts on one fraud probability per event ({', '.join(PROBABILITY_OBJECTIVES)})")
    order = feature_order(model.features, features, model.num_features, str(source))
    chosen, how = ((_check_threshold(threshold), THRESHOLD_GIVEN) if threshold is not None
                   else (0.5, "default, the cut XGBClassifier.predict uses (see --threshold)"))
    training = {"registered_from": {"file": source.name,
                                    "sha256": hashlib.sha256(raw).hexdigest(),
                                    "format": fmt, "scikit_learn": model.estimator,
                                    "trees_in_file": model.trees_in_file,
                                    "best_iteration": model.best_iteration},
                "threshold": {"value": chosen, "source": how}}
    model_dir = _publish(Path(models_dir), name, version or next_version(models_dir / name),
                         model.raw, order, chosen, fmt, training)
    return RegisterReport(model_dir, source, fmt, model.estimator, order,
                          "the model's own names" if model.features else "--features",
                          chosen, how, model.trees, model.trees_in_file, model.best_iteration,
                          hashlib.sha256(model.raw).hexdigest())


def _publish(root: Path, name: str, version: str, raw: bytes, features: list[str],
             threshold: float, fmt: ModelFormat, training: dict[str, Any]) -> Path:
    """Write the version in a staging folder, load it as the service does, rename it in."""
    final = root / name / version
    if (final / MANIFEST).exists():
        raise ModelError(f"{final} already exists; versions are immutable")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".register-", dir=root))
    try:
        staged = write_model(staging, name, version, raw, features=features,
                             threshold=threshold, fmt=fmt, training=training)
        XGBoostModel.load(staged, nthread=1)
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _numeric(column: list[Any], name: str) -> Vector:
    try:
        return np.array([math.nan if v is None else float(v) for v in column], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"column {name!r} is not numeric") from None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
