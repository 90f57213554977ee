"""XGBoost's trees as flat arrays, scored by the compiled ``stream_infer._forest``.

:func:`compile_forest` lays a Booster's trees out as complete binary trees (a leaf above the
last level is copied into every slot below it, so every row takes exactly ``depth`` steps)
and hands back a :class:`Forest`, or the reason it cannot. The C kernel repeats XGBoost's
float32 arithmetic in XGBoost's order. The one number the model file does not pin down
exactly, ``base_score`` in margin space, is read off XGBoost itself, and
:func:`compile_forest` then proves the scores on probe rows against ``inplace_predict``
before a forest is used: any difference, and XGBoost keeps scoring.

Supported: ``gbtree`` boosters with numeric splits, one output (``binary:logistic``,
``reg:logistic``, ``binary:logitraw``, ``reg:squarederror``), one tree per round, depth up to
:data:`MAX_DEPTH`. Like ``inplace_predict``, every tree scores, ``best_iteration`` or not.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import xgboost

try:
    from .. import _forest
except ImportError:  # built without a C compiler: XGBoost scores
    _forest = None  # type: ignore[assignment,unused-ignore]

MAX_DEPTH = 12
SPARE = 32  # the kernel's vector path reads up to 32 nodes from a level's first
MISSING_RIGHT = np.int32(-(2**31))
# objective -> whether scores go through the sigmoid
_OBJECTIVES = {"binary:logistic": True, "reg:logistic": True, "binary:logitraw": False,
               "reg:squarederror": False}
_THREAD_ROWS = 4096  # fewer rows than this per thread are not worth a thread


class Unsupported(Exception):
    """The booster cannot be served by the forest; the message says why."""


@dataclass(frozen=True, slots=True)
class Forest:
    """A tree ensemble ready for the kernel. ``predict`` equals ``inplace_predict`` bit for
    bit on float32 rows of ``columns`` features (NaN = missing)."""

    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float32]
    leaf: npt.NDArray[np.float32]
    stop: npt.NDArray[np.uint8]
    """Per inner slot: 1 where the tree has a leaf above the last level."""
    mean: npt.NDArray[np.float32]
    """Per slot of every level: XGBoost's node mean value (for contributions)."""
    depth: int
    base: float
    logistic: bool
    columns: int
    simd: bool = True

    @property
    def trees(self) -> int:
        return len(self.leaf) >> self.depth

    def predict(self, matrix: npt.NDArray[np.float32], nthread: int = 1) -> npt.NDArray[np.float32]:
        """Scores of the rows of ``matrix``; ``nthread`` > 1 splits large batches over threads
        (the kernel releases the GIL)."""
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.columns:
            raise ValueError(f"expected (rows, {self.columns}) features, got {rows.shape}")
        out = np.empty(len(rows), dtype=np.float32)
        parts = min(nthread, len(rows) // _THREAD_ROWS)
        if parts <= 1:
            self._score(rows, out)
            return out
        bounds = np.linspace(0, len(rows), parts + 1).astype(int) // 64 * 64
        bounds[-1] = len(rows)
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(lambda i: self._score(rows[bounds[i]:bounds[i + 1]],
                                                out[bounds[i]:bounds[i + 1]]), range(parts)))
        return out

    def contributions(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Saabas contributions, ``(rows, columns + 1)`` with the bias last, equal bit for bit
        to XGBoost's ``pred_contribs`` with ``approx_contribs``."""
        assert _forest is not None
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        out = np.empty((len(rows), self.columns + 1), dtype=np.float32)
        _forest.contributions(rows, self.columns, self.feature, self.threshold, self.stop,
                              self.mean, self.depth, self.base, out)
        return out

    def _score(self, rows: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        assert _forest is not None
        _forest.score(rows, self.columns, self.feature, self.threshold, self.leaf, self.depth,
                      self.base, out, self.logistic, self.simd)


def compile_forest(booster: xgboost.Booster, *, simd: bool = True,
                   probe_rows: int = 2048) -> Forest:
    """The booster as a :class:`Forest`, checked bit for bit on probe rows; raises
    :class:`Unsupported` naming the reason when it cannot serve this booster exactly."""
    if _forest is None:
        raise Unsupported("the compiled scorer was not built (no C compiler at install)")
    raw = bytes(booster.save_raw("json"))
    laid_out = _lay_out(msgspec.json.decode(raw)["learner"], booster.num_features(), simd)
    forest = replace(laid_out, base=_base_margin(msgspec.json.decode(raw)))
    _prove(forest, booster, probe_rows)
    return forest


def _lay_out(learner: dict[str, Any], columns: int, simd: bool) -> Forest:
    """The arrays of a supported model, its base margin still 0; raises Unsupported."""
    objective = learner["objective"]["name"]
    if objective not in _OBJECTIVES:
        raise Unsupported(f"objective {objective!r} (supported: {', '.join(_OBJECTIVES)})")
    booster = learner["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise Unsupported(f"booster {booster.get('name')!r} (only gbtree)")
    model = booster["model"]
    params = model["gbtree_model_param"]
    if int(params.get("num_parallel_tree", 1)) != 1 or any(
            int(group) != 0 for group in model["tree_info"]):
        raise Unsupported("more than one tree per round or more than one output")
    if not model["trees"]:
        raise Unsupported("the model has no trees")
    nodes = _Nodes.of(model["trees"])
    if nodes.categorical:
        raise Unsupported("categorical splits")
    reached, tree, slot, level = nodes.heap_slots()
    is_leaf = nodes.left[reached] == -1
    depth = int(level[is_leaf].max())
    if depth > MAX_DEPTH:
        raise Unsupported(f"trees {depth} deep (at most {MAX_DEPTH})")
    depth = max(depth, 1)
    count, inner, leaves = len(model["trees"]), (1 << depth) - 1, 1 << depth
    slots = inner + leaves
    feature = np.zeros(count * inner + SPARE, dtype=np.int32)
    threshold = np.zeros(count * inner + SPARE, dtype=np.float32)
    stop = np.zeros(count * inner, dtype=np.uint8)
    mean = np.zeros(count * slots, dtype=np.float32)
    mean[tree * slots + slot] = nodes.means(reached, level)[reached]
    split, at = reached[~is_leaf], tree[~is_leaf] * inner + slot[~is_leaf]
    feature[at] = nodes.column[split] | np.where(nodes.default_left[split], np.int32(0),
                                                  MISSING_RIGHT)
    threshold[at] = nodes.condition[split]
    # A leaf above the last level fills every leaf slot beneath it (the inner slots beneath
    # it keep column 0: either way leads to the same value) and stops contributions' walk.
    ends, end_tree, end_slot = reached[is_leaf], tree[is_leaf], slot[is_leaf]
    span = np.left_shift(1, depth - level[is_leaf])
    first = end_tree * leaves + (end_slot + 1) * span - 1 - inner
    order = np.argsort(first)  # the leaves' spans tile each tree's last level, in order
    leaf = np.repeat(nodes.condition[ends[order]], span[order])
    if len(leaf) != count * leaves:
        raise Unsupported("a tree's leaves do not cover its last level")
    stop[end_tree[end_slot < inner] * inner + end_slot[end_slot < inner]] = 1
    if (feature & ~MISSING_RIGHT).max(initial=0) >= columns:
        raise Unsupported("a split names a feature beyond the model's feature count")
    return Forest(feature, threshold, leaf, stop, mean, depth, 0.0, _OBJECTIVES[objective],
                  columns, simd)


@dataclass(frozen=True, slots=True)
class _Nodes:
    """Every tree's nodes in one set of arrays, children as indexes into them (-1: leaf)."""

    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    roots: npt.NDArray[np.int64]
    column: npt.NDArray[np.int32]
    condition: npt.NDArray[np.float32]
    """The split threshold, or a leaf's value, rounded to float32 as XGBoost holds it."""
    hess: npt.NDArray[np.float32]
    default_left: npt.NDArray[np.bool_]
    categorical: bool

    @classmethod
    def of(cls, trees: list[dict[str, Any]]) -> _Nodes:
        def joined(key: str, dtype: Any) -> npt.NDArray[Any]:
            return np.concatenate([np.asarray(t.get(key, []), dtype=dtype) for t in trees])

        sizes = np.asarray([len(t["left_children"]) for t in trees], dtype=np.int64)
        roots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        base = np.repeat(roots, sizes)
        left, right = joined("left_children", np.int64), joined("right_children", np.int64)
        return cls(np.where(left == -1, -1, left + base), np.where(right == -1, -1, right + base),
                   roots, joined("split_indices", np.int32),
                   joined("split_conditions", np.float64).astype(np.float32),
                   joined("sum_hessian", np.float64).astype(np.float32),
                   joined("default_left", np.int64) != 0,
                   bool(joined("split_type", np.int64).any()))

    def heap_slots(self) -> tuple[npt.NDArray[np.int64], ...]:
        """The nodes reached from the roots, parents before children, with each one's tree,
        heap slot (children of k: 2k+1, 2k+2) and level."""
        found: list[tuple[npt.NDArray[np.int64], ...]] = []
        node, tree = self.roots, np.arange(len(self.roots))
        slot, level = np.zeros_like(node), 0
        while len(node):
            found.append((node, tree, slot, np.full_like(node, level)))
            split = self.left[node] != -1
            node, tree, slot = node[split], tree[split], slot[split]
            node = np.concatenate([self.left[node], self.right[node]])
            tree, slot = np.concatenate([tree, tree]), np.concatenate([2 * slot + 1, 2 * slot + 2])
            level += 1
        return tuple(np.concatenate(column) for column in zip(*found, strict=True))

    def means(self, reached: npt.NDArray[np.int64], level: npt.NDArray[np.int64]
              ) -> npt.NDArray[np.float32]:
        """XGBoost's node mean values, in its float32 arithmetic: a leaf's value, else the
        children's means weighted by their hessian sums, over the node's own (deepest level
        first: children before their parent)."""
        means = np.where(self.left == -1, self.condition, np.float32(0))
        with np.errstate(all="ignore"):  # IEEE results, as in C++ (a zero hessian sum: inf/NaN)
            for depth in range(int(level.max()), -1, -1):
                at = reached[(level == depth) & (self.left[reached] != -1)]
                low, high = self.left[at], self.right[at]
                total = means[low] * self.hess[low]
                total = total + means[high] * self.hess[high]
                means[at] = total / self.hess[at]
        return means


def _base_margin(zeroed: dict[str, Any]) -> float:
    """``base_score`` in margin space, exactly as XGBoost holds it.

    The JSON states ``base_score`` in decimal, and whether XGBoost turns it into a margin in
    double or in float32 precision depends on where it came from (set by the user or estimated
    from the labels). So ask XGBoost: the same model with every leaf set to 0 predicts the
    base margin itself for any row (adding 0.0 is exact). ``zeroed`` is changed in place.
    """
    for tree in zeroed["learner"]["gradient_booster"]["model"]["trees"]:
        tree["split_conditions"] = [0.0 if left == -1 else condition for left, condition
                                    in zip(tree["left_children"], tree["split_conditions"],
                                           strict=True)]
    booster = xgboost.Booster(params={"nthread": 1})
    booster.load_model(bytearray(msgspec.json.encode(zeroed)))
    row = np.zeros((1, booster.num_features()), dtype=np.float32)
    margin = booster.inplace_predict(row, predict_type="margin", validate_features=False)
    return float(np.asarray(margin, dtype=np.float32)[0])


def _prove(forest: Forest, booster: xgboost.Booster, rows: int) -> None:
    """Score probe rows both ways; any bit of difference refuses the forest."""
    probe = probe_rows(forest, rows)
    expected = np.asarray(booster.inplace_predict(probe, validate_features=False),
                          dtype=np.float32)
    differ = int(np.count_nonzero(expected.view(np.int32) != forest.predict(probe).view(np.int32)))
    if differ:
        raise Unsupported(f"{differ} of {rows} probe rows scored differently from XGBoost")


def probe_rows(forest: Forest, count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Rows that exercise the splits: values at, just below and above the thresholds, NaN,
    infinities and the float32 extremes, mixed per column."""
    rng = np.random.default_rng(seed)
    inner = (1 << forest.depth) - 1
    used = forest.feature[:forest.trees * inner] & ~MISSING_RIGHT
    thresholds = forest.threshold[:forest.trees * inner]
    out = np.empty((count, forest.columns), dtype=np.float32)
    f32 = np.finfo(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, f32.max, -f32.max, 0.0, -0.0, f32.tiny],
                        dtype=np.float32)
    for col in range(forest.columns):
        cuts = thresholds[used == col]
        if not len(cuts):
            cuts = np.zeros(1, dtype=np.float32)
        picks = rng.choice(cuts, count)
        nudged = np.where(rng.random(count) < 0.5, np.nextafter(picks, np.float32(np.inf)),
                          np.nextafter(picks, np.float32(-np.inf)))
        choice = rng.random(count)
        out[:, col] = np.where(choice < 0.3, picks, np.where(choice < 0.8, nudged,
                               rng.choice(specials, count)))
    return out
