"""The report's charts: matplotlib figures from plain arrays, rendered to inline SVG.

Every function takes numbers already computed (by :mod:`.backtest`, or by whoever calls it) and
returns a :class:`~matplotlib.figure.Figure`; :func:`svg` renders one to an ``<svg>`` element
for an HTML page. Figures are built without ``pyplot`` (no global state, no window, nothing
written to disk), and matplotlib is imported inside the functions, so importing this module,
or running a replay without ``--report``, never loads it. Without matplotlib installed,
:func:`require` raises :class:`~stream_infer.errors.ConfigError` naming the extra to install.

The SVG is deterministic: the same figure gives the same text, text stays text (searchable,
selectable), and each chart's element ids carry its own prefix so several charts can share a
page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL = "pip install 'stream-infer[report]'"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
LEGIT, FRAUD = "#1f77b4", "#d62728"
PSI_BANDS = ((0.1, "0.1: moderate shift"), (0.25, "0.25: large shift"))
Array = npt.NDArray[Any]
_IDS = re.compile(r'(\bid="|url\(#|href="#)')
Corner = Literal["lower left", "lower right", "upper center"]


@dataclass(frozen=True, slots=True)
class Line:
    """One model on a curve chart: the points as drawn, and its operating point (the model's
    own threshold) if it has one."""

    label: str
    x: Array
    y: Array
    point: tuple[float, float] | None = None
    point_label: str = ""


def require() -> None:
    """Raise :class:`ConfigError` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the HTML report draws its charts with matplotlib: {INSTALL}"
                          ) from exc


def svg(figure: Figure, name: str) -> str:
    """``figure`` as one inline ``<svg>`` element; ``name`` prefixes every element id (and
    every reference to one), so charts on one page never share an id."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "stream-infer"}):
        figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return _IDS.sub(lambda m: m.group(1) + name, text[text.index("<svg"):])


def precision_recall(lines: Sequence[Line], *, fraud_rate: float | None = None) -> Figure:
    """Precision against recall, one step line per model (each point held until the next, as
    average precision integrates it), each model's threshold marked; ``fraud_rate`` draws the
    precision of a model that ranks at random."""
    figure, ax = _figure()
    for i, line in enumerate(lines):
        ax.plot(line.x, line.y, drawstyle="steps-post", color=_colour(i), lw=1.6,
                label=line.label)
        _mark(ax, line, i, "pr")
    if fraud_rate is not None:
        ax.axhline(fraud_rate, color="#888", lw=0.8, ls=":",
                   label=f"random ranking ({fraud_rate:.2%})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02),
           title="Precision / recall at every threshold")
    _finish(ax, "lower left")
    return figure


def roc(lines: Sequence[Line], *, min_fpr: float = 1e-4) -> Figure:
    """True-positive rate against false-positive rate, the latter on a log scale from
    ``min_fpr`` (at a fraud rate of 1%, every threshold worth alerting at sits below an FPR of
    a few percent), each model's threshold marked."""
    figure, ax = _figure()
    for i, line in enumerate(lines):
        ax.plot(line.x, line.y, color=_colour(i), lw=1.6, label=line.label)
        _mark(ax, line, i, "roc")
    chance = np.logspace(np.log10(min_fpr), 0, 50)
    ax.plot(chance, chance, color="#888", lw=0.8, ls=":", label="random ranking")
    ax.set_xscale("log")
    ax.set(xlabel="false-positive rate (log scale)", ylabel="true-positive rate (recall)",
           xlim=(min_fpr, 1), ylim=(0, 1.02), title="ROC at every threshold")
    _finish(ax, "lower right")
    return figure


def score_histograms(panels: Mapping[str, tuple[Array, Array, Array]],
                     thresholds: Mapping[str, float]) -> Figure:
    """One panel per model: counts of legitimate and fraudulent rows per score bin (``edges``,
    ``legit``, ``fraud``) on a log scale, with the model's threshold."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 1.9 * max(len(panels), 1) + 0.6), layout="constrained")
    axes = figure.subplots(max(len(panels), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, (edges, legit, fraud)) in zip(axes, panels.items(), strict=False):
        ax.stairs(legit, edges, color=LEGIT, lw=1.4, label=f"legitimate ({int(legit.sum()):,})")
        ax.stairs(fraud, edges, color=FRAUD, lw=1.4, label=f"fraud ({int(fraud.sum()):,})")
        if name in thresholds:
            ax.axvline(thresholds[name], color="#333", lw=1, ls="--",
                       label=f"threshold {thresholds[name]:.4f}")
        ax.set_yscale("log", nonpositive="clip")
        ax.set(title=name, ylabel="rows")
        _finish(ax, "upper center")
    axes[-1].set(xlabel="score", xlim=(0, 1))
    return figure


def card_precision_by_day(days: Sequence[str], series: Mapping[str, Sequence[float]],
                          *, k: int) -> Figure:
    """Card precision@k per day, one line per series name (solid for names in even positions
    and dashed for odd ones, so a model's two definitions share a colour)."""
    figure, ax = _figure()
    x = np.arange(len(days))
    for i, (label, values) in enumerate(series.items()):
        ax.plot(x, values, color=_colour(i // 2), ls="-" if i % 2 == 0 else "--",
                marker="o" if i % 2 == 0 else "s", ms=4, lw=1.4, label=label)
    ax.set_xticks(x, list(days), rotation=30 if len(days) > 4 else 0, ha="right"
                  if len(days) > 4 else "center")
    ax.set(xlabel="day (UTC)", ylabel=f"card precision@{k}", ylim=(0, 1.02),
           title=f"Card precision@{k} per day")
    _finish(ax, "lower left")
    return figure


def psi_by_feature(psi: Mapping[str, float], no_drift_p99: Mapping[str, float] | None = None,
                   title: str = "Population stability index per feature") -> Figure:
    """Population stability index per feature, largest first, with the usual bands and,
    when given, each feature's PSI that no drift stays under 99 times in 100 (a tick)."""
    from matplotlib.figure import Figure

    ranked = sorted(psi.items(), key=lambda item: (-item[1], item[0]))
    figure = Figure(figsize=(6.4, 0.28 * len(ranked) + 1.2), layout="constrained")
    ax = figure.subplots()
    y = np.arange(len(ranked))
    ax.barh(y, [v for _, v in ranked], color=COLOURS[0])
    ax.set_yticks(y, [name for name, _ in ranked])
    ax.invert_yaxis()
    if no_drift_p99:
        ticks = [(i, no_drift_p99[name]) for i, (name, _) in enumerate(ranked)
                 if name in no_drift_p99]
        ax.plot([x for _, x in ticks], [i for i, _ in ticks], marker="|", ms=12, mew=2,
                ls="none", color="black", label="no drift: 99% below")
    for value, label in PSI_BANDS:
        ax.axvline(value, color="#888", lw=0.8, ls=":", label=label)
    ax.set(xlabel="PSI", title=title)
    _finish(ax, "lower right")
    return figure


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    return figure, figure.subplots()


def _mark(ax: Axes, line: Line, i: int, chart: str) -> None:
    """The model's operating point, an SVG group with id ``{chart}-threshold-{i}``."""
    if line.point is not None:
        (marker,) = ax.plot(*line.point, marker="o", ms=8, mfc=_colour(i), mec="black",
                            ls="none", label=line.point_label, zorder=5)
        marker.set_gid(f"{chart}-threshold-{i}")


def _finish(ax: Axes, legend_at: Corner) -> None:
    """Grid and legend; the legend's place is fixed (matplotlib's "best" scans every point)."""
    ax.grid(True, color="#e5e5e5", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize="small", loc=legend_at)


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]
