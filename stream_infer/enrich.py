"""Batch of transactions -> float32 feature matrix, with one feature-store round trip.

A model's feature names say where each value comes from:

- ``amount``: a numeric field of the transaction;
- ``attributes.<name>``: ``Transaction.attributes[<name>]``, carried by the event;
- ``<view>.<field>``: field ``<field>`` of the feature view ``<view>`` (a Redis hash whose key
  is the view's template over transaction fields, e.g. ``card:{card_id}``).

Anything missing becomes NaN, which XGBoost treats as a missing value; misses are counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .config import FeatureView
from .errors import ConfigError
from .records import Transaction

NAN = math.nan
EVENT_FIELDS = ("amount",)
F32_MAX = float(np.finfo(np.float32).max)
Lookup = tuple[str, Sequence[str]]
Matrix = npt.NDArray[np.float32]


class FeatureStore(Protocol):
    """The feature store port: the Redis adapter and ``adapters.memory`` implement it."""

    def fetch(self, lookups: Sequence[Lookup]) -> list[list[bytes | None]]:
        """One round trip: for each ``(key, fields)`` the raw field values, ``None`` if absent.

        Raises ``FeatureStoreError`` when the store times out or is unreachable.
        """
        ...


@dataclass(frozen=True, slots=True)
class ViewPlan:
    """Which fields of one view feed which matrix columns."""

    name: str
    key_fields: tuple[str, ...]
    template: str
    fields: tuple[str, ...]
    columns: tuple[int, ...]

    def key(self, event: Transaction) -> str | None:
        values = [getattr(event, f) for f in self.key_fields]
        if any(v is None for v in values):
            return None
        return self.template.format_map(dict(zip(self.key_fields, values, strict=True)))


@dataclass(frozen=True, slots=True)
class EnrichResult:
    """The feature matrix of a batch and what was missing from it."""

    matrix: Matrix
    misses: int
    degraded: bool = False


class Enricher:
    """Built once per model: compiles feature names into column plans, then fills matrices."""

    def __init__(self, features: Sequence[str], views: Mapping[str, FeatureView], *,
                 features_in_events: bool = False) -> None:
        self.features = tuple(features)
        self._event_cols: list[tuple[int, str]] = []
        self._attr_cols: list[tuple[int, str]] = []
        by_view: dict[str, list[tuple[int, str]]] = {}
        for col, name in enumerate(self.features):
            head, _, rest = name.partition(".")
            if not rest:
                if name not in EVENT_FIELDS:
                    raise ConfigError(f"feature {name!r}: not a numeric transaction field")
                self._event_cols.append((col, name))
            elif head == "attributes":
                self._attr_cols.append((col, rest))
            elif features_in_events:
                self._attr_cols.append((col, name))
            elif head in views:
                if rest not in views[head].fields:
                    raise ConfigError(f"feature {name!r}: view {head!r} has no field {rest!r}")
                by_view.setdefault(head, []).append((col, rest))
            else:
                raise ConfigError(f"feature {name!r}: no feature view named {head!r} is configured")
        self.views = tuple(_plan(name, views[name], cols) for name, cols in by_view.items())

    def lookups(self, events: Sequence[Transaction]) -> tuple[list[Lookup], list[list[int]]]:
        """The distinct ``(key, fields)`` to fetch, and for each view the lookup index per event.

        Events sharing a key (a card seen twice in one batch) share one lookup; ``-1`` marks
        an event whose key fields are absent.
        """
        lookups: list[Lookup] = []
        index_by_view: list[list[int]] = []
        for plan in self.views:
            seen: dict[str, int] = {}
            indexes = []
            for event in events:
                key = plan.key(event)
                if key is None:
                    indexes.append(-1)
                    continue
                idx = seen.get(key)
                if idx is None:
                    idx = seen[key] = len(lookups)
                    lookups.append((key, plan.fields))
                indexes.append(idx)
            index_by_view.append(indexes)
        return lookups, index_by_view

    def matrix(
        self,
        events: Sequence[Transaction],
        values: Sequence[Sequence[bytes | None]] | None,
        index_by_view: Sequence[Sequence[int]],
    ) -> EnrichResult:
        """Fill the matrix; ``values=None`` means the store was unavailable (fail-open)."""
        rows = np.full((len(events), len(self.features)), NAN, dtype=np.float32)
        misses = 0
        for col, name in self._event_cols:
            rows[:, col] = _f32([getattr(e, name) for e in events])
        for col, attr in self._attr_cols:
            column = [e.attributes.get(attr, NAN) for e in events]
            misses += sum(1 for v in column if v != v)
            rows[:, col] = _f32(column)
        if values is None:
            unavailable = sum(len(p.fields) for p in self.views) * len(events)
            return EnrichResult(rows, misses + unavailable, degraded=True)
        parsed = [_parse(v) for v in values]
        for plan, indexes in zip(self.views, index_by_view, strict=True):
            block = np.full((len(events), len(plan.fields)), NAN, dtype=np.float64)
            for row, idx in enumerate(indexes):
                fetched = parsed[idx] if idx >= 0 else None
                if fetched is not None:
                    block[row] = fetched
            misses += int(np.isnan(block).sum())
            rows[:, list(plan.columns)] = _f32(block)
        return EnrichResult(rows, misses)


def _plan(name: str, view: FeatureView, cols: list[tuple[int, str]]) -> ViewPlan:
    return ViewPlan(
        name=name,
        key_fields=tuple(re.findall(r"{(\w+)}", view.key)),
        template=view.key,
        fields=tuple(field for _, field in cols),
        columns=tuple(col for col, _ in cols),
    )


def _f32(values: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Values clamped into float32's finite range, NaN kept: a double beyond it (1e300) would
    become infinity, which XGBoost refuses; the largest float32 takes the same side of every
    split."""
    return np.clip(np.asarray(values, dtype=np.float64), -F32_MAX, F32_MAX)


def _parse(raw: Sequence[bytes | None]) -> list[float]:
    return [_to_float(v) for v in raw]


def _to_float(value: bytes | None) -> float:
    if value is None:
        return NAN
    try:
        return float(value)
    except ValueError:
        return NAN
