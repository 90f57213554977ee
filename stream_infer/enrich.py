"""Batch of transactions -> float32 feature matrix, with one feature-store round trip.

A model's feature names say where each value comes from:

- ``amount``: a numeric field of the transaction;
- ``attributes.<name>``: ``Transaction.attributes[<name>]``, carried by the event;
- ``<view>.<field>``: field ``<field>`` of the feature view ``<view>``, whose key is the view's
  template over transaction fields, e.g. ``card:{card_id}``: a Redis hash (``layout =
  "hash"``, readable, one ``HMGET``), or the view's fields packed as little-endian float32
  (``layout = "packed"``, one ``GET`` and no text parsing: the fast path).

Anything missing becomes NaN, which XGBoost treats as a missing value; misses are counted.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from .config import FeatureView
from .errors import ConfigError
from .records import Transaction

NAN = math.nan
EVENT_FIELDS = ("amount",)
F32_MAX = float(np.finfo(np.float32).max)
Lookup = tuple[str, Sequence[str] | None]
Reply = Sequence[bytes | None] | bytes | None
"""A lookup's answer: the hash's field values, or a packed vector (None if absent)."""
Matrix = npt.NDArray[np.float32]
_ATTRIBUTES = operator.attrgetter("attributes")


class FeatureStore(Protocol):
    """The feature store port: the Redis adapter and ``adapters.memory`` implement it."""

    def fetch(self, lookups: Sequence[Lookup]) -> Sequence[Reply]:
        """One round trip: for each ``(key, fields)`` the raw field values, ``None`` if absent;
        for ``(key, None)`` (a packed vector) the whole value, ``None`` if absent.

        Raises ``FeatureStoreError`` when the store times out or is unreachable.
        """
        ...


@dataclass(frozen=True, slots=True)
class ViewPlan:
    """Which fields of one view feed which matrix columns, and how its values are stored.

    ``width`` is None for the hash layout (one ``HMGET`` of ``fields``) and the vector length
    for the packed layout (one ``GET`` of little-endian float32s; ``positions`` are the
    needed fields' places in it).
    """

    name: str
    key_fields: tuple[str, ...]
    template: str
    fields: tuple[str, ...]
    columns: tuple[int, ...]
    width: int | None = None
    positions: tuple[int, ...] = ()

    @property
    def request(self) -> tuple[str, ...] | None:
        """What a lookup asks the store for: the fields, or None for the whole vector."""
        return None if self.width is not None else self.fields

    def key(self, event: Transaction) -> str | None:
        values = [getattr(event, f) for f in self.key_fields]
        if any(v is None for v in values):
            return None
        return self.template.format_map(dict(zip(self.key_fields, values, strict=True)))

    def keys(self, events: Sequence[Transaction]) -> list[str | None]:
        """Every event's key (None where the field is None); a one-field template is filled
        by concatenation, in one ``map`` when the field ends the template (the fast path)."""
        if len(self.key_fields) != 1:
            return [self.key(e) for e in events]
        prefix, _, suffix = self.template.partition("{" + self.key_fields[0] + "}")
        values = list(map(operator.attrgetter(self.key_fields[0]), events))
        if not suffix:
            with contextlib.suppress(TypeError):  # a None or a number among the values
                return list(map(operator.add, itertools.repeat(prefix), values))
        return [None if v is None else f"{prefix}{v}{suffix}" for v in values]


@dataclass(frozen=True, slots=True)
class ViewIndex:
    """Where one view's lookups sit in the batch's lookup list, and each event's lookup."""

    start: int
    count: int
    rows: npt.NDArray[np.intp]
    """Per event: the lookup's index from ``start``, or ``count`` when it has no key."""


@dataclass(frozen=True, slots=True)
class EnrichResult:
    """The feature matrix of a batch and what was missing from it."""

    matrix: Matrix
    misses: int
    degraded: bool = False
    lookups: int = 0
    """How many distinct keys were looked up (see :meth:`Enricher.enrich`)."""


class Enricher:
    """Built once per model: compiles feature names into column plans, then fills matrices."""

    def __init__(self, features: Sequence[str], views: Mapping[str, FeatureView], *,
                 features_in_events: bool = False, windows: Sequence[str] = ()) -> None:
        self.features = tuple(features)
        self._event_cols: list[tuple[int, str]] = []
        self._attr_cols: list[tuple[int, str]] = []
        window_at = {name: i for i, name in enumerate(windows)}
        self.window_cols = [(col, window_at[name]) for col, name in enumerate(self.features)
                            if name in window_at]
        """``(matrix column, window column)`` of the features computed from the stream."""
        by_view: dict[str, list[tuple[int, str]]] = {}
        for col, name in enumerate(self.features):
            head, _, rest = name.partition(".")
            if name in window_at:
                continue
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

    def enrich(self, events: Sequence[Transaction],
               fetch: Callable[[list[Lookup]], Sequence[Reply] | None],
               windows: Matrix | None = None) -> EnrichResult:
        """The batch's matrix, its lookups fetched with one ``fetch`` call (which returns None
        when the store is unavailable: fail-open), its window features from ``windows`` (the
        window engine's rows; None: unavailable, NaN)."""
        lookups, index = self.lookups(events)
        values = fetch(lookups) if lookups else []
        result = replace(self.matrix(events, values, index), lookups=len(lookups))
        if self.window_cols:
            columns, source = zip(*self.window_cols, strict=True)
            if windows is None:
                result = replace(result, misses=result.misses + len(columns) * len(events),
                                 degraded=True)
            else:
                result.matrix[:, list(columns)] = windows[:, list(source)]
        return result

    def lookups(self, events: Sequence[Transaction]) -> tuple[list[Lookup], list[ViewIndex]]:
        """The distinct ``(key, fields)`` to fetch, and for each view which lookup each
        event reads.

        Events sharing a key (a card seen twice in one batch) share one lookup; packed views
        ask for ``(key, None)``, the whole vector.
        """
        lookups: list[Lookup] = []
        index_by_view: list[ViewIndex] = []
        for plan in self.views:
            keys = plan.keys(events)
            distinct = dict.fromkeys(keys)
            if len(distinct) == len(keys) and None not in distinct:  # no repeats: no remap
                rows = np.arange(len(keys), dtype=np.intp)
            else:
                distinct.pop(None, None)
                position = dict(zip(distinct, itertools.count()))
                rows = np.fromiter(map(position.get, keys, itertools.repeat(len(position))),
                                   np.intp, len(keys))
            index_by_view.append(ViewIndex(len(lookups), len(distinct), rows))
            lookups += zip(cast(dict[str, None], distinct), itertools.repeat(plan.request))
        return lookups, index_by_view

    def matrix(
        self,
        events: Sequence[Transaction],
        values: Sequence[Reply] | None,
        index_by_view: Sequence[ViewIndex],
    ) -> EnrichResult:
        """Fill the matrix; ``values=None`` means the store was unavailable (fail-open)."""
        rows = np.full((len(events), len(self.features)), NAN, dtype=np.float32)
        misses = 0
        for col, name in self._event_cols:
            rows[:, col] = _f32(np.fromiter(map(operator.attrgetter(name), events), np.float64,
                                            len(events)))
        if self._attr_cols and events:
            columns = [col for col, _ in self._attr_cols]
            names, nans = [name for _, name in self._attr_cols], [NAN] * len(self._attr_cols)
            try:  # every event carries every name (the usual case): no list per event
                found = map(operator.itemgetter(*names), map(_ATTRIBUTES, events))
                attributes = _f32(np.fromiter(
                    found if len(names) == 1 else itertools.chain.from_iterable(found),
                    np.float64, len(events) * len(names)).reshape(len(events), len(names)))
            except KeyError:
                attributes = _f32(np.array([list(map(e.attributes.get, names, nans))
                                            for e in events], dtype=np.float64))
            misses += int(np.isnan(attributes).sum())
            rows[:, columns] = attributes
        if values is None:
            unavailable = sum(len(p.fields) for p in self.views) * len(events)
            return EnrichResult(rows, misses + unavailable, degraded=True)
        for plan, index in zip(self.views, index_by_view, strict=True):
            fetched = values[index.start:index.start + index.count]
            block = _packed(fetched, plan) if plan.width is not None else _hashed(fetched, plan)
            chosen = block[index.rows]
            misses += int(np.isnan(chosen).sum())
            rows[:, plan.columns] = chosen
        return EnrichResult(rows, misses)


def _hashed(fetched: Sequence[Reply], plan: ViewPlan) -> Matrix:
    """One row per lookup (plus a NaN row for events without a key) from HMGET replies."""
    block = np.full((len(fetched) + 1, len(plan.fields)), NAN, dtype=np.float64)
    replies = cast(Sequence[Sequence[bytes | None]], fetched)
    if replies:
        block[:-1] = [[_to_float(v) for v in reply] for reply in replies]
    return _f32(block).astype(np.float32)


def _packed(fetched: Sequence[Reply], plan: ViewPlan) -> Matrix:
    """One row per lookup from packed float32 vectors; absent or mis-sized values are NaN."""
    assert plan.width is not None
    size = plan.width * 4
    block = np.full((len(fetched) + 1, plan.width), NAN, dtype=np.float32)
    values = cast(Sequence[bytes | None], fetched)
    if all(values) and list(map(len, cast(Sequence[bytes], values))).count(size) == len(values):
        joined = b"".join(cast(Sequence[bytes], values))  # all present: one copy
        block[:-1] = np.frombuffer(joined, dtype="<f4").reshape(len(values), plan.width)
    else:
        present = [i for i, v in enumerate(values) if v is not None and len(v) == size]
        if present:
            joined = b"".join([cast(bytes, values[i]) for i in present])
            block[present] = np.frombuffer(joined, dtype="<f4").reshape(len(present), plan.width)
    np.clip(block, -F32_MAX, F32_MAX, out=block)  # a stored infinity, as _f32 does
    return block[:, plan.positions]


def _plan(name: str, view: FeatureView, cols: list[tuple[int, str]]) -> ViewPlan:
    fields = tuple(field for _, field in cols)
    packed = view.layout == "packed"
    return ViewPlan(
        name=name,
        key_fields=tuple(re.findall(r"{(\w+)}", view.key)),
        template=view.key,
        fields=fields,
        columns=tuple(col for col, _ in cols),
        width=len(view.fields) if packed else None,
        positions=tuple(view.fields.index(f) for f in fields) if packed else (),
    )


def _f32(values: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Values clamped into float32's finite range, NaN kept: a double beyond it (1e300) would
    become infinity, which XGBoost refuses; the largest float32 takes the same side of every
    split."""
    return np.clip(np.asarray(values, dtype=np.float64), -F32_MAX, F32_MAX)


def _to_float(value: bytes | None) -> float:
    if value is None:
        return NAN
    try:
        return float(value)
    except ValueError:
        return NAN
