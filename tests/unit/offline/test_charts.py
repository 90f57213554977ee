"""The report's charts: drawn from the exact curves, readable, and only loaded when asked for."""

import html
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from sklearn import metrics

from stream_infer.errors import ConfigError
from stream_infer.offline import backtest, charts


def backtest_run(n: int = 8000, seed: int = 5) -> tuple[list[backtest.ModelReport],
                                                        dict[str, backtest.Curves],
                                                        dict[str, tuple[list[int], list[int]]],
                                                        dict[str, np.ndarray]]:
    """Two models over four days of imbalanced labelled rows (0.5% fraud, tied scores)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.005).astype(int)
    scores = {"champ:1": np.clip(rng.normal(0.2 + 0.5 * labels, 0.15), 0, 1).round(3),
              "shadow:2": np.clip(rng.normal(0.3 + 0.3 * labels, 0.2), 0, 1).round(2)}
    cards = np.array([f"card-{i}" for i in rng.integers(0, 1500, n)])
    times = 1_767_312_000_000 + rng.integers(0, 4 * backtest.DAY_MS, n)
    reports = [backtest.evaluate(m, t, s, labels, cards, times, k=10)
               for (m, s), t in zip(scores.items(), (0.5, 0.6), strict=True)]
    return (reports, {m: backtest.curves(s, labels) for m, s in scores.items()},
            {m: backtest.histogram(s, labels) for m, s in scores.items()},
            {"labels": labels, **scores})


def test_the_pr_chart_draws_every_threshold_of_the_exact_curve() -> None:
    reports, curves, histograms, data = backtest_run()
    figures = backtest.figures(reports, curves, histograms)
    pr = figures["Precision / recall"].axes[0]
    drawn = [line for line in pr.lines if line.get_gid() is None][:2]  # not the markers
    for line, model in zip(drawn, ("champ:1", "shadow:2"), strict=True):
        precision, recall, _ = metrics.precision_recall_curve(data["labels"], data[model])
        np.testing.assert_array_equal(line.get_xydata(), np.column_stack([recall, precision]))
        assert len(np.asarray(line.get_xdata())) == len(np.unique(data[model])) + 1 != 101
        assert line.get_drawstyle() == "steps-post"
    fpr, tpr, _ = metrics.roc_curve(data["labels"], data["champ:1"], drop_intermediate=False)
    roc = figures["ROC"].axes[0]
    np.testing.assert_array_equal(roc.lines[0].get_xydata(), np.column_stack([fpr, tpr]))
    assert roc.get_xscale() == "log"


def test_each_model_has_its_threshold_marked_where_it_operates() -> None:
    reports, curves, histograms, _ = backtest_run()
    pr = backtest.figures(reports, curves, histograms)["Precision / recall"].axes[0]
    for i, report in enumerate(reports):
        marker = next(line for line in pr.lines if line.get_gid() == f"pr-threshold-{i}")
        assert tuple(np.asarray(marker.get_xydata())[0]) == (report.recall, report.precision)
        assert marker.get_label() == f"{report.model} at its threshold {report.threshold:.4f}"


def test_the_page_has_an_svg_per_chart_a_legend_naming_each_model_and_the_markers() -> None:
    reports, curves, histograms, _ = backtest_run()
    page = backtest.html_page(reports, curves, histograms, {"input": "history.jsonl"})
    assert page.count("<svg") == 4
    titles = ["Precision / recall", "ROC", "Score distributions (log scale)",
              "Card precision@10 per day"]
    assert re.findall(r"<h2>(.*?)</h2>", page) == titles
    legend_text = re.findall(r"<text[^>]*>([^<]*)</text>", page)
    for report in reports:
        assert f"{report.model} (AP {report.average_precision:.4f})" in legend_text
        assert f"{report.model} (AUC {report.auc:.4f})" in legend_text
        assert f"{report.model} plain" in legend_text
        assert f"{report.model} excl. known compromised" in legend_text
    for chart, name in ((0, "pr"), (1, "roc")):
        for i in range(len(reports)):
            assert f'id="chart{chart}-{name}-threshold-{i}"' in page
    ids = Counter(re.findall(r'\bid="([^"]+)"', page))
    assert not [i for i, n in ids.items() if n > 1]  # charts on one page share no id
    references = set(re.findall(r'(?:url\(#|href="#)([^")]+)', page))
    assert references <= set(ids)
    assert "2026-01-02" in page and "plain / excl. known" in page  # the days, in the table
    assert page == backtest.html_page(reports, curves, histograms, {"input": "history.jsonl"})


def test_a_report_with_warnings_shows_them_first() -> None:
    reports, curves, histograms, _ = backtest_run()
    warning = backtest.point_in_time_warnings("redis")[0]
    page = backtest.html_page(reports, curves, histograms,
                              {"features": "redis", "warnings": ["one snapshot & more"]},
                              warnings=[warning])
    box = page.index("<div class=warnings>")
    assert box < page.index("<ul>", box + 30) < page.index("<svg")
    assert f"<li>{html.escape(warning)}</li>" in page and "<li>one snapshot &amp; more</li>" in page
    assert f"WARNING: {html.escape(warning)}" in page  # under the table too
    assert "<div class=warnings>" not in backtest.html_page(reports, curves, histograms, {})


def test_models_without_labels_draw_no_curve() -> None:
    reports = backtest_run()[0]
    unlabelled = backtest.curves(np.array([0.2, 0.9]), np.array([-1, -1]))
    figures = backtest.figures(reports[:1], {"champ:1": unlabelled}, {})
    assert figures == {"Card precision@10 per day": figures["Card precision@10 per day"]}
    with pytest.raises(ConfigError):
        unlabelled.precision_recall()


def test_psi_bars_one_per_feature_largest_first() -> None:
    figure = charts.psi_by_feature({"amount": 0.04, "card.avg_amount_30d": 0.31,
                                    "merchant.fraud_rate_90d": 0.12})
    ax = figure.axes[0]
    bars = [bar for bar in ax.patches if isinstance(bar, Rectangle)]
    assert [round(bar.get_width(), 2) for bar in bars] == [0.31, 0.12, 0.04]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "card.avg_amount_30d", "merchant.fraud_rate_90d", "amount"]
    assert charts.svg(figure, "psi-").startswith("<svg")


def test_without_matplotlib_the_page_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, curves, histograms, _ = backtest_run(n=500)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'stream-infer[report]'")):
        backtest.html_page(reports, curves, histograms, {})


def test_the_figures_table_and_json_do_not_load_matplotlib() -> None:
    code = ("import sys, json, numpy as np\n"
            "from stream_infer.offline import backtest, charts\n"
            "r = backtest.evaluate('m', 0.5, np.array([.9, .1]), np.array([1, 0]),"
            " np.array(['a', 'b']), np.array([0, 1]), k=1)\n"
            "backtest.table([r]); json.dumps(backtest.as_json([r], {}))\n"
            "backtest.curves(np.array([.9, .1]), np.array([1, 0]))\n"
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
