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
    trees = model["trees"]
    if not trees:
        raise Unsupported("the model has no trees")
    depth = max(_depth(tree) for tree in trees)
    if depth > MAX_DEPTH:
        raise Unsupported(f"trees {depth} deep (at most {MAX_DEPTH})")
    depth = max(depth, 1)
    inner, leaves = (1 << depth) - 1, 1 << depth
    feature = np.zeros(len(trees) * inner + SPARE, dtype=np.int32)
    threshold = np.zeros(len(trees) * inner + SPARE, dtype=np.float32)
    leaf = np.zeros(len(trees) * leaves, dtype=np.float32)
    stop = np.zeros(len(trees) * inner, dtype=np.uint8)
    slots = inner + leaves
    mean = np.zeros(len(trees) * slots, dtype=np.float32)
    for t, tree in enumerate(trees):
        if any(int(kind) != 0 for kind in tree.get("split_type", [])):
            raise Unsupported("categorical splits")
        _fill(tree, depth, feature[t * inner:(t + 1) * inner],
              threshold[t * inner:(t + 1) * inner], leaf[t * leaves:(t + 1) * leaves],
              stop[t * inner:(t + 1) * inner], mean[t * slots:(t + 1) * slots])
    if (feature & ~MISSING_RIGHT).max(initial=0) >= columns:
        raise Unsupported("a split names a feature beyond the model's feature count")
    return Forest(feature, threshold, leaf, stop, mean, depth, 0.0, _OBJECTIVES[objective],
                  columns, simd)


def _depth(tree: dict[str, Any]) -> int:
    left, right = tree["left_children"], tree["right_children"]
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, level = stack.pop()
        if left[node] == -1:
            deepest = max(deepest, level)
        else:
            stack += [(left[node], level + 1), (right[node], level + 1)]
    return deepest


def _fill(tree: dict[str, Any], depth: int, feature: npt.NDArray[np.int32],
          threshold: npt.NDArray[np.float32], leaf: npt.NDArray[np.float32],
          stop: npt.NDArray[np.uint8], mean: npt.NDArray[np.float32]) -> None:
    """Heap-order arrays of one tree; a shallow leaf fills every leaf slot beneath it (the
    inner slots beneath it keep column 0: either way leads to the same value) and is marked
    in ``stop`` where contributions end their walk."""
    left, right = tree["left_children"], tree["right_children"]
    column, condition = tree["split_indices"], tree["split_conditions"]
    default_left = tree["default_left"]
    means = _node_means(tree)
    inner = (1 << depth) - 1
    stack = [(0, 0, 0)]
    while stack:
        node, slot, level = stack.pop()
        mean[slot] = means[node]
        if left[node] == -1:
            span = 1 << (depth - level)
            first = (slot + 1) * span - 1 - inner  # leftmost leaf slot under `slot`
            leaf[first:first + span] = np.float32(condition[node])
            if slot < inner:
                stop[slot] = 1
            continue
        feature[slot] = np.int32(column[node]) | (0 if default_left[node] else MISSING_RIGHT)
        threshold[slot] = np.float32(condition[node])
        stack += [(left[node], 2 * slot + 1, level + 1), (right[node], 2 * slot + 2, level + 1)]


def _node_means(tree: dict[str, Any]) -> list[np.float32]:
    """XGBoost's node mean values, in its float32 arithmetic: a leaf's value, else the children's
    means weighted by their hessian sums, over the node's own."""
    left, right = tree["left_children"], tree["right_children"]
    hess = [np.float32(h) for h in tree["sum_hessian"]]
    means = [np.float32(0)] * len(left)
    order, stack = [], [0]
    while stack:  # parents before children; filled in reverse: children first
        node = stack.pop()
        order.append(node)
        if left[node] != -1:
            stack += [left[node], right[node]]
    with np.errstate(all="ignore"):  # IEEE results, as in C++ (a zero hessian sum: inf/NaN)
        for node in reversed(order):
            if left[node] == -1:
                means[node] = np.float32(tree["split_conditions"][node])
            else:
                total = means[left[node]] * hess[left[node]]
                total = np.float32(total + means[right[node]] * hess[right[node]])
                means[node] = np.float32(total / hess[node])
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
