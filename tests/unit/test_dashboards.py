"""The Prometheus alert rules and the Grafana dashboard, checked statically: every expression
names a metric the service or the monitor really exports (read from a scrape of the real
metrics objects, not from the source), with labels those metrics have and, for an equality
matcher, a value they take; the rules file is a set of Prometheus rule groups, each dashboard
panel has a data source and a query, and Prometheus and Grafana load them as
docker-compose.yml mounts them. Each check is shown to fail on a broken copy."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.drift import DriftTracker, ModelDrift, fit_profile, window
from stream_infer.features.engine import GroupStats, LabelStats
from stream_infer.features.live import LiveStats
from stream_infer.monitor.feed import Feed
from stream_infer.monitor.join import JoinState
from stream_infer.monitor.metrics import MetricsServer
from stream_infer.monitor.run import snapshot
from stream_infer.pipeline import BatchCounts, BatchOutcome
from stream_infer.service.metrics import ConsumerCollector, ServiceMetrics

from .monitor.streams import AS_OF, encoded, stream

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "stream-infer.json"
RULE_TESTS = Path(__file__).with_name("prometheus_alerts_test.yml")

# -- what the service and the monitor export ------------------------------------------------

Exported = Mapping[str, Mapping[str, set[str]]]
"""Sample name -> label name -> the values seen in a scrape."""
TARGET_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every scraped sample."""


def service_scrape() -> str:
    """A scrape of the service's metrics, every metric exercised once (a labelled metric has
    no sample until a label value is used): drift over a tiny profile fed one batch, window
    features over a group that saw every outcome."""
    metrics = ServiceMetrics()
    metrics.registry.register(ConsumerCollector(lambda: {("tx", 0): 5}, lambda: 1, lambda: 2))
    metrics.serving("demo", "1", [("challenger", "1")])
    metrics.reloaded(True)
    metrics.reloaded(False)
    counts = BatchCounts(consumed=3, scored=2, alerted=1, dead_lettered=1, labels=1,
                         dlq_reasons=Counter({"schema": 1}),
                         shadow_alerts=Counter({"challenger:1": 1}))
    metrics.batch_done(BatchOutcome([], {}, {}, counts, [], {"decode": 0.001}), emit_s=0.001,
                       latency_ms=[5])
    metrics.dependency_down(True)
    metrics.delivery_failed()
    tracker = DriftTracker([window("1h"), window("24h")], min_sample=1)
    metrics.watch_drift(tracker)
    rows = np.array([[10.0], [50.0], [90.0], [np.nan]], dtype=np.float32)
    drift = ModelDrift(fit_profile(rows, ["amount"], [0.1, 0.5, 0.9, 0.2]), ["amount"],
                       tracker.windows)
    tracker.models["demo", "1"] = drift
    drift.observe(rows, np.array([0.2, 0.4, 0.6, 0.8], dtype=np.float32))
    metrics.watch_windows(LiveStats({"customer": GroupStats(computed=5, late=1, too_late=1)},
                                    LabelStats(applied=2, ignored=1, pending=1)))
    return generate_latest(metrics.registry).decode()


def monitor_scrape() -> str:
    """A scrape of ``monitor run``'s metrics over a small stream of scores and delayed labels
    (some days past the join's TTL, so that entries are evicted)."""
    s = stream(events=300)
    feed = Feed(JoinState(ttl_days=14))
    for kind, value in encoded([*s.scores, *s.labels]):
        (feed.score if kind == "scores" else feed.label)(value)
    feed.label(b"not json")
    server = MetricsServer()
    server.publish(snapshot(feed, as_of_ms=AS_OF, horizon_days=7, k=10))
    return generate_latest(server.registry).decode()


def exported_series(*scrapes: str) -> dict[str, dict[str, set[str]]]:
    """The sample names of ``scrapes``, each with its labels and their values; every metric
    family must have samples."""
    families = [f for text in scrapes for f in text_string_to_metric_families(text)]
    silent = [family.name for family in families if not family.samples]
    assert not silent, f"exercise these metrics above so that their samples are known: {silent}"
    found: dict[str, dict[str, set[str]]] = {}
    for family in families:
        for sample in family.samples:
            labels = found.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return found


@pytest.fixture(scope="module")
def exported() -> Exported:
    return exported_series(service_scrape(), monitor_scrape())


def test_the_exported_names_carry_the_suffixes_prometheus_sees(exported: Exported) -> None:
    assert {"stream_infer_events_consumed_total", "stream_infer_consumer_lag",
            "stream_infer_stage_seconds_bucket", "stream_infer_stage_seconds_sum",
            "stream_infer_stage_seconds_count", "stream_infer_model_info",
            "stream_infer_spans_dropped", "stream_infer_labels_total",
            "stream_infer_window_events_total", "stream_infer_psi",
            "stream_infer_monitor_precision", "stream_infer_monitor_labels_total"} <= set(exported)
    assert "stream_infer_events_consumed" not in exported  # a counter's sample ends in _total
    assert exported["stream_infer_psi"]["feature"] == {"amount", "score"}
    assert exported["stream_infer_monitor_precision"]["cohort_window"] == {
        "7d", "30d", "matured_7d"}  # the stream's events end before the last day: no 1d
    assert exported["stream_infer_window_events_total"]["outcome"] == {
        "computed", "late", "too_late", "duplicate", "missing_key", "ahead"}


# -- PromQL, enough to find the metric names ------------------------------------------------

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<other>==|!=|>=|<=|=~|!~|[-+*/%^<>=,@:])
""", re.X)
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on",
            "ignoring", "group_left", "group_right"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
"""Keywords whose parenthesised list holds label names, not metrics."""
PAIRS = {"(": ")", "[": "]", "{": "}"}


def tokens(expr: str) -> Iterator[tuple[str, str]]:
    """``(kind, text)`` for each token of ``expr``, blanks left out; ValueError on a
    character no PromQL token starts with, or brackets that do not pair."""
    position, stack = 0, []
    while position < len(expr):
        match = TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"unexpected {expr[position]!r} at {position}")
        position = match.end()
        kind = match.lastgroup or ""
        if kind == "open":
            stack.append(PAIRS[match.group()])
        elif kind == "close" and (not stack or stack.pop() != match.group()):
            raise ValueError(f"unpaired {match.group()!r} at {match.start()}")
        if kind != "space":
            yield kind, match.group()
    if stack:
        raise ValueError(f"unclosed bracket: {stack[-1]!r} missing")


Matcher = tuple[str, str, str]
"""``(label, operator, value)``."""


def selectors(expr: str) -> list[tuple[str, list[Matcher]]]:
    """The metric selectors of a PromQL expression, each a name and its label matchers. A
    name is any name outside label matchers (``{...}``), ranges (``[...]``) and label lists
    (``by (...)``) that is neither a function or aggregation (a name before ``(``, ``by`` or
    ``without``) nor a keyword."""
    items = list(tokens(expr))
    found, i = [], 0
    while i < len(items):
        kind, text = items[i]
        following = items[i + 1][1] if i + 1 < len(items) else ""
        if text in ("{", "["):
            i = closing(items, i)
        elif kind == "name" and text in LABEL_LISTS and following == "(":
            i = closing(items, i + 1)
        elif kind == "name" and following not in ("(", "by", "without") and (
                text not in KEYWORDS):
            matchers: list[Matcher] = []
            if following == "{":
                end = closing(items, i + 1)
                matchers = label_matchers(items[i + 2:end])
                i = end
            found.append((text, matchers))
        i += 1
    return found


def label_matchers(items: list[tuple[str, str]]) -> list[Matcher]:
    """``label op "value"`` items, comma-separated (a trailing comma allowed); ValueError on
    anything else."""
    found = []
    for start in range(0, len(items), 4):
        part = items[start:start + 3]
        if [kind for kind, _ in part] != ["name", "other", "string"] or part[1][1] not in (
                "=", "!=", "=~", "!~") or items[start + 3:start + 4] not in ([], [("other", ",")]):
            raise ValueError(f"not a label matcher: {' '.join(text for _, text in part)}")
        found.append((part[0][1], part[1][1], part[2][1][1:-1]))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (:func:`selectors`)."""
    return {name for name, _ in selectors(expr)}


def closing(items: list[tuple[str, str]], start: int) -> int:
    """The index of the bracket that closes the one at ``start`` (tokens pair them)."""
    depth = 0
    for j in range(start, len(items)):
        depth += {"open": 1, "close": -1}.get(items[j][0], 0)
        if depth == 0:
            return j
    raise ValueError("unclosed bracket")


@pytest.mark.parametrize("expr, names", [
    ("sum(rate(a_total[5m]))", {"a_total"}),
    ('histogram_quantile(0.99, sum by (le, stage) (rate(b_bucket{stage="x"}[$__rate_interval])))',
     {"b_bucket"}),
    ("sum(x) by (instance) / ignoring(reason) group_left sum(y{reason=~'a|b'})", {"x", "y"}),
    ("deriv(sum(max by (topic, partition) (lag))[10m:1m]) > 0 and bool on(job) up", {"lag", "up"}),
    ("count(count by (name, version) (info{role='champion'})) > 1e3 offset 5m", {"info"}),
    ('absent(m) or vector(0) unless on() label_replace(n, "dst", "$1", "src", "(.*)")',
     {"m", "n"}),
    ("rate(ns:requests:rate5m[1h] @ end())", {"ns:requests:rate5m"}),
])
def test_metric_names_are_found_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_label_matchers_are_read_with_their_selector() -> None:
    assert selectors('rate(a_total{x="1", y!~"b|c",}[5m]) / on (x) b{z=~"$v"} > 0.25') == [
        ("a_total", [("x", "=", "1"), ("y", "!~", "b|c")]), ("b", [("z", "=~", "$v")])]


@pytest.mark.parametrize("expr", ["sum(rate(a[5m])", "a{b='c'", "a)", "a ; b", "a{b}",
                                  "a{b=c}", "a{b='c' d='e'}"])
def test_a_malformed_expression_is_an_error(expr: str) -> None:
    with pytest.raises(ValueError):
        selectors(expr)


def expression_problems(where: str, expr: Any, exported: Exported) -> list[str]:
    """A metric the service and the monitor do not export, a label it does not have, an
    equality matcher on a value it never takes: each makes a query silently empty."""
    if not isinstance(expr, str) or not expr.strip():
        return [f"{where}: no expression"]
    try:
        found = selectors(expr)
    except ValueError as exc:
        return [f"{where}: cannot read {expr!r}: {exc}"]
    if not found:
        return [f"{where}: names no metric"]
    problems = []
    for name, matchers in found:
        labels = exported.get(name)
        if labels is None:
            problems.append(f"{where}: {name} is not a metric the service or the monitor "
                            "exports")
            continue
        for label, op, value in matchers:
            if label not in labels and label not in TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label}")
            elif op == "=" and label in labels and value not in labels[label]:
                problems.append(f"{where}: {name}{{{label}={value!r}}} matches nothing: "
                                f"{label} is one of {sorted(labels[label])}")
    return problems


# -- the alert rules ---------------------------------------------------------------------------

DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
GROUP_KEYS = {"name", "interval", "limit", "query_offset", "labels", "rules"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"page", "warning", "info"}


def rule_problems(doc: Any, exported: Exported) -> list[str]:
    """Everything that keeps ``doc`` from being Prometheus alerting rule groups over the
    service's metrics, each labelled with a severity and annotated for the person paged."""
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        return ["no rule groups (a top-level `groups:` list)"]
    found = [f"unknown top-level key {key}" for key in doc if key != "groups"]
    alerts = Counter(rule.get("alert") for group in groups if isinstance(group, dict)
                     for rule in group.get("rules") or [] if isinstance(rule, dict))
    found += [f"alert {name} is defined {n} times" for name, n in alerts.items() if n > 1]
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("name"), str):
            found.append(f"group {group!r} has no name")
            continue
        found += [f"group {group['name']}: unknown key {k}" for k in set(group) - GROUP_KEYS]
        if not isinstance(group.get("rules"), list) or not group["rules"]:
            found.append(f"group {group['name']}: no rules")
            continue
        for rule in group["rules"]:
            found += alert_problems(rule, exported)
    return found


def alert_problems(rule: Any, exported: Exported) -> list[str]:
    name = rule.get("alert") if isinstance(rule, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name):
        return [f"rule {rule!r}: not an alerting rule with a valid `alert` name"]
    found = [f"{name}: unknown key {key}" for key in set(rule) - RULE_KEYS]
    found += expression_problems(name, rule.get("expr"), exported)
    found += [f"{name}: {key} {rule[key]!r} is not a duration" for key in ("for",
              "keep_firing_for") if key in rule and not DURATION.match(str(rule[key]))]
    labels, annotations = rule.get("labels") or {}, rule.get("annotations") or {}
    if labels.get("severity") not in SEVERITIES:
        found.append(f"{name}: labels.severity must be one of {sorted(SEVERITIES)}")
    found += [f"{name}: annotations.{key} missing" for key in ("summary", "description")
              if not isinstance(annotations.get(key), str) or not annotations[key].strip()]
    found += [f"{name}: {kind} {key} is not a string" for kind, values in
              (("label", labels), ("annotation", annotations))
              for key, value in values.items() if not isinstance(value, str)]
    return found


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def test_the_alert_rules_are_sound(rules: dict[str, Any], exported: Exported) -> None:
    assert rule_problems(rules, exported) == []
    used = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert {"stream_infer_consumer_lag", "stream_infer_dead_letters_total",
            "stream_infer_degraded", "stream_infer_paused",
            "stream_infer_dependency_outages_total", "stream_infer_spans_dropped",
            "stream_infer_psi", "stream_infer_psi_expected_p99",  # drift, beyond the noise
            "stream_infer_monitor_precision",  # realized precision dropping
            "stream_infer_monitor_labels_total",  # no labels read
            "stream_infer_monitor_last_label_timestamp_seconds",  # none joined lately
            "stream_infer_window_events_total",  # too late for the windows
            "stream_infer_window_state_lost_total",  # the window state lost in Redis
            "stream_infer_monitor_state_entries"} <= used  # the monitor down
    drift = {r: rule(rules, r)["expr"] for r in ("StreamInferFeatureDrift",
                                                  "StreamInferScoreDrift")}
    assert all("> 0.25" in e and "> stream_infer_psi_expected_p99" in e for e in drift.values())
    precision = rule(rules, "StreamInferRealizedPrecisionDrop")["expr"]
    assert precision.count('cohort_window="matured_7d"') == 2 and "offset 7d" in precision


def rule(doc: dict[str, Any], alert: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for g in doc["groups"] for r in g["rules"]
                                 if r["alert"] == alert)
    return found


@pytest.mark.parametrize("breakage, problem", [
    (lambda d: rule(d, "StreamInferDegraded").update(expr="stream_infer_degraded_mode == 1"),
     "stream_infer_degraded_mode is not a metric"),
    (lambda d: rule(d, "StreamInferDeadLetterRate").update(
        expr="sum(rate(stream_infer_dead_letters[5m])) > 0"), "stream_infer_dead_letters is not"),
    (lambda d: rule(d, "StreamInferDegraded").update(expr="sum(rate(x[5m])"), "cannot read"),
    (lambda d: rule(d, "StreamInferDegraded").update(expr="vector(1)"), "names no metric"),
    (lambda d: rule(d, "StreamInferDegraded").update({"for": "2 minutes"}), "not a duration"),
    (lambda d: rule(d, "StreamInferDegraded")["labels"].pop("severity"), "labels.severity"),
    (lambda d: rule(d, "StreamInferDegraded")["annotations"].pop("summary"), "summary missing"),
    (lambda d: rule(d, "StreamInferDegraded").update(severity="page"), "unknown key severity"),
    (lambda d: d["groups"][0]["rules"].append(copy.deepcopy(d["groups"][0]["rules"][0])),
     "defined 2 times"),
    (lambda d: d["groups"][0].pop("name"), "has no name"),
    (lambda d: d["groups"][0]["rules"].__setitem__(0, {"record": "x:rate5m", "expr": "x"}),
     "not an alerting rule"),
    (lambda d: d.update(rules=d.pop("groups")), "no rule groups"),
    (lambda d: rule(d, "StreamInferFeatureDrift").update(
        expr='stream_infer_psi{features!="score"} > 0.25'),
     "stream_infer_psi has no label features"),
    (lambda d: rule(d, "StreamInferScoreDrift").update(
        expr='stream_infer_psi_rows{feature="score"} > 0.25'), "has no label feature"),
    (lambda d: rule(d, "StreamInferRealizedPrecisionDrop").update(
        expr=rule(d, "StreamInferRealizedPrecisionDrop")["expr"].replace("matured_7d", "mature")),
     "{cohort_window='mature'} matches nothing"),
    (lambda d: rule(d, "StreamInferRealizedPrecisionDrop").update(
        expr='stream_infer_monitor_realized_precision{cohort_window="matured_7d"} < 0.5'),
     "stream_infer_monitor_realized_precision is not a metric"),
    (lambda d: rule(d, "StreamInferNoLabelsRead").update(
        expr="sum(increase(stream_infer_monitor_labels[6h])) == 0"),
     "stream_infer_monitor_labels is not a metric"),
    (lambda d: rule(d, "StreamInferWindowEventsTooLate").update(
        expr=rule(d, "StreamInferWindowEventsTooLate")["expr"].replace("too_late", "toolate")),
     "{outcome='toolate'} matches nothing"),
    (lambda d: rule(d, "StreamInferMonitorDown").update(expr="absent(stream_infer_monitor_up)"),
     "stream_infer_monitor_up is not a metric"),
    (lambda d: rule(d, "StreamInferLabelsStale").update({"for": "1 hour"}), "not a duration"),
])
def test_the_rule_checks_catch_a_broken_copy(rules: dict[str, Any], exported: Exported,
                                             breakage: Any, problem: str) -> None:
    broken = copy.deepcopy(rules)
    breakage(broken)
    found = rule_problems(broken, exported)
    assert any(problem in p for p in found), found


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("command", [["check", "rules", str(RULES)],
                                     ["test", "rules", str(RULE_TESTS)]])
def test_promtool_accepts_the_rules_and_they_fire_as_meant(command: list[str]) -> None:
    result = subprocess.run(["promtool", *command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the dashboard -----------------------------------------------------------------------------


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels, those inside collapsed rows included; rows left out."""
    out: list[dict[str, Any]] = []
    for panel in doc.get("panels") or []:
        if panel.get("type") == "row":
            out += panel.get("panels") or []
        else:
            out.append(panel)
    return out


def dashboard_problems(doc: Any, datasources: set[str], exported: Exported) -> list[str]:
    """Everything that keeps a panel from drawing: no data source (or one not provisioned),
    no query, a query naming a metric (or a label, or a value) the service and the monitor
    do not export; a template variable whose values would come from none."""
    if not isinstance(doc, dict) or not doc.get("uid") or not doc.get("title"):
        return ["not a dashboard with a uid and a title"]
    found = [] if panels(doc) else ["no panels"]
    found += variable_problems(doc, datasources, exported)
    ids = Counter(p.get("id") for p in panels(doc))
    found += [f"panel id {i} is used {n} times" for i, n in ids.items() if n > 1]
    for panel in panels(doc):
        title = panel.get("title") or f"panel {panel.get('id')}"
        source = (panel.get("datasource") or {}).get("uid")
        if source not in datasources:
            found.append(f"{title}: data source {source!r} is not provisioned ({datasources})")
        if not {"x", "y", "w", "h"} <= set(panel.get("gridPos") or {}):
            found.append(f"{title}: no gridPos")
        targets = panel.get("targets") or []
        if not targets:
            found.append(f"{title}: no targets")
        refs = Counter(t.get("refId") for t in targets)
        found += [f"{title}: refId {r!r} is used {n} times" for r, n in refs.items() if n > 1]
        for target in targets:
            where = f"{title} [{target.get('refId')}]"
            own = (target.get("datasource") or {"uid": source}).get("uid")
            if own != source:
                found.append(f"{where}: data source {own!r} differs from the panel's")
            found += expression_problems(where, target.get("expr"), exported)
    return found


LABEL_VALUES = re.compile(r"label_values\((?P<expr>.+),\s*(?P<label>\w+)\)")


def variable_problems(doc: dict[str, Any], datasources: set[str],
                      exported: Exported) -> list[str]:
    """Each query variable reads ``label_values(selector, label)`` of an exported metric
    with that label, from a provisioned data source."""
    found = []
    for variable in (doc.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        where = f"variable {variable.get('name')}"
        source = (variable.get("datasource") or {}).get("uid")
        if source not in datasources:
            found.append(f"{where}: data source {source!r} is not provisioned")
        query = variable.get("query")
        text = str((query.get("query") if isinstance(query, dict) else query) or "")
        match = LABEL_VALUES.fullmatch(text.strip())
        if match is None:
            found.append(f"{where}: {text!r} is not label_values(metric, label)")
            continue
        found += expression_problems(where, match["expr"], exported)
        found += [f"{where}: {name} has no label {match['label']}"
                  for name in metric_names(match["expr"]) if name in exported
                  and match["label"] not in {*exported[name], *TARGET_LABELS}]
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_the_dashboard_is_sound_and_shows_what_operators_need(
    dashboard: dict[str, Any], compose: dict[str, Any], exported: Exported
) -> None:
    assert dashboard_problems(dashboard, provisioned_datasources(compose), exported) == []
    used = set().union(*(metric_names(t["expr"]) for p in panels(dashboard)
                         for t in p["targets"]))
    assert {"stream_infer_events_consumed_total",  # throughput
            "stream_infer_stage_seconds_sum", "stream_infer_stage_seconds_count",  # stages
            "stream_infer_event_to_alert_seconds_bucket",  # event-to-alert latency
            "stream_infer_consumer_lag",  # lag per partition
            "stream_infer_alerts_total", "stream_infer_dead_letters_total",
            "stream_infer_model_info",  # the model versions served
            "stream_infer_psi", "stream_infer_psi_expected_p99",  # PSI per feature, window
            "stream_infer_monitor_precision", "stream_infer_monitor_recall",  # per version
            "stream_infer_monitor_label_coverage", "stream_infer_monitor_label_delay_hours",
            "stream_infer_monitor_last_label_timestamp_seconds",
            "stream_infer_window_events_total",  # window feature outcomes
            "stream_infer_window_retries_total",  # window batches computed again
            "stream_infer_window_wait_seconds_total",  # workers waiting for a turn
            "stream_infer_window_log_bytes_total",  # window state moved per event
            "stream_infer_labels_total", "stream_infer_monitor_labels_total"} <= used
    lag = next(p for p in panels(dashboard) if "stream_infer_consumer_lag" in
               p["targets"][0]["expr"])
    assert "partition" in lag["targets"][0]["expr"] and "{{partition}}" in (
        lag["targets"][0]["legendFormat"])


def first_panel(doc: dict[str, Any]) -> dict[str, Any]:
    return panels(doc)[0]


def titled(doc: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in panels(doc) if p["title"] == title)


def variable(doc: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = doc["templating"]["list"][0]
    return found


@pytest.mark.parametrize("breakage, problem", [
    (lambda d: first_panel(d).update(targets=[]), "no targets"),
    (lambda d: first_panel(d).pop("targets"), "no targets"),
    (lambda d: first_panel(d).pop("datasource"), "data source None is not provisioned"),
    (lambda d: first_panel(d).update(datasource={"type": "prometheus", "uid": "other"}),
     "'other' is not provisioned"),
    (lambda d: first_panel(d)["targets"][0].update(expr="rate(stream_infer_events[5m])"),
     "stream_infer_events is not a metric"),
    (lambda d: first_panel(d)["targets"][0].update(expr=""), "no expression"),
    (lambda d: first_panel(d)["targets"][1].update(refId="A"), "refId 'A' is used 2 times"),
    (lambda d: first_panel(d).update(id=2), "panel id 2 is used 2 times"),
    (lambda d: d.update(panels=[{"type": "row", "title": "r", "panels": [
        {"id": 9, "title": "inside a row", "datasource": {"uid": "prometheus"},
         "gridPos": {"x": 0, "y": 0, "w": 1, "h": 1}}]}]), "inside a row: no targets"),
    (lambda d: d.update(panels=[]), "no panels"),
    (lambda d: titled(d, "PSI per feature")["targets"][0].update(
        expr='stream_infer_psi{feature!="score", window="1 hour"}'),
     "{window='1 hour'} matches nothing"),
    (lambda d: titled(d, "Realized precision per model version")["targets"][0].update(
        expr='stream_infer_monitor_precision{window="matured_7d"}'), "has no label window"),
    (lambda d: titled(d, "Labels consumed")["targets"][0].update(
        expr="sum(rate(stream_infer_labels_consumed_total[5m]))"),
     "stream_infer_labels_consumed_total is not a metric"),
    (lambda d: variable(d)["query"].update(query="label_values(stream_infer_psi_rows, span)"),
     "variable drift_window: stream_infer_psi_rows has no label span"),
    (lambda d: variable(d)["query"].update(query="label_values(stream_infer_drift, window)"),
     "variable drift_window: stream_infer_drift is not a metric"),
    (lambda d: variable(d).update(query="query_result(stream_infer_psi)"),
     "is not label_values(metric, label)"),
    (lambda d: variable(d).update(datasource={"uid": "other"}),
     "variable drift_window: data source 'other' is not provisioned"),
])
def test_the_dashboard_checks_catch_a_broken_copy(
    dashboard: dict[str, Any], compose: dict[str, Any], exported: Exported, breakage: Any,
    problem: str
) -> None:
    broken = copy.deepcopy(dashboard)
    breakage(broken)
    found = dashboard_problems(broken, provisioned_datasources(compose), exported)
    assert any(problem in p for p in found), found


# -- how docker-compose.yml loads them ---------------------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts from the repository: container path -> repository path."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[target] = ROOT / source
    return out


def provisioned_datasources(compose: dict[str, Any]) -> set[str]:
    """The uids of the Prometheus data sources Grafana is provisioned with, each pointing at
    the compose stack's Prometheus."""
    grafana = mounts(compose["services"]["grafana"])
    port = compose["services"]["prometheus"]["ports"][0].rpartition(":")[2]
    uids = set()
    for path in sorted((grafana["/etc/grafana/provisioning"] / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            if source.get("type") == "prometheus" and source.get("url") == (
                    f"http://prometheus:{port}"):
                uids.add(source["uid"])
    return uids


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    compose: dict[str, Any]
) -> None:
    grafana = compose["services"]["grafana"]
    assert provisioned_datasources(compose) == {"prometheus"}
    assert "prometheus" in grafana["depends_on"]
    assert "3000:3000" in grafana["ports"]
    mounted = mounts(grafana)
    (provider_file,) = (mounted["/etc/grafana/provisioning"] / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file"
    folder = mounted[provider["options"]["path"]]
    assert sorted(folder.glob("*.json")) == [DASHBOARD]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounted[str(Path(home).parent)] / Path(home).name == DASHBOARD


def test_prometheus_loads_the_alert_rules_mounted_from_deploy(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    mounted = mounts(compose["services"]["prometheus"])
    assert [mounted[path] for path in config["rule_files"]] == [RULES]
