"""The Prometheus alert rules and the Grafana dashboard, checked statically: every expression
names a metric the service really exports (read from a scrape of the real metrics objects,
not from the source), the rules file is a set of Prometheus rule groups, each dashboard panel
has a data source and a query, and Prometheus and Grafana load them as docker-compose.yml
mounts them. Each check is shown to fail on a broken copy."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.pipeline import BatchCounts, BatchOutcome
from stream_infer.service.metrics import ConsumerCollector, ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "stream-infer.json"
RULE_TESTS = Path(__file__).with_name("prometheus_alerts_test.yml")

# -- what the service exports ------------------------------------------------------------


def exported_names() -> set[str]:
    """The sample names of a scrape of the service's metrics, every metric exercised once
    (a labelled metric has no sample until a label value is used)."""
    metrics = ServiceMetrics()
    metrics.registry.register(ConsumerCollector(lambda: {("tx", 0): 5}, lambda: 1, lambda: 2))
    metrics.serving("demo", "1", [("challenger", "1")])
    metrics.reloaded(True)
    counts = BatchCounts(consumed=3, scored=2, alerted=1, dead_lettered=1,
                         dlq_reasons=Counter({"schema": 1}),
                         shadow_alerts=Counter({"challenger:1": 1}))
    metrics.batch_done(BatchOutcome([], {}, {}, counts, [], {"decode": 0.001}), emit_s=0.001,
                       latency_ms=[5])
    metrics.dependency_down(True)
    metrics.delivery_failed()
    families = list(text_string_to_metric_families(generate_latest(metrics.registry).decode()))
    silent = [family.name for family in families if not family.samples]
    assert not silent, f"exercise these metrics above so that their samples are known: {silent}"
    return {sample.name for family in families for sample in family.samples}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_names()


def test_the_exported_names_carry_the_suffixes_prometheus_sees(exported: set[str]) -> None:
    assert {"stream_infer_events_consumed_total", "stream_infer_consumer_lag",
            "stream_infer_stage_seconds_bucket", "stream_infer_stage_seconds_sum",
            "stream_infer_stage_seconds_count", "stream_infer_model_info",
            "stream_infer_spans_dropped"} <= exported
    assert "stream_infer_events_consumed" not in exported  # a counter's sample ends in _total


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


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every name outside label matchers
    (``{...}``), ranges (``[...]``) and label lists (``by (...)``) that is neither a function
    or aggregation (a name before ``(``, ``by`` or ``without``) nor a keyword."""
    items = list(tokens(expr))
    found, i = set(), 0
    while i < len(items):
        kind, text = items[i]
        following = items[i + 1][1] if i + 1 < len(items) else ""
        if text in ("{", "["):
            i = closing(items, i)
        elif kind == "name" and text in LABEL_LISTS and following == "(":
            i = closing(items, i + 1)
        elif kind == "name" and following not in ("(", "by", "without") and (
                text not in KEYWORDS):
            found.add(text)
        i += 1
    return found


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


@pytest.mark.parametrize("expr", ["sum(rate(a[5m])", "a{b='c'", "a)", "a ; b"])
def test_a_malformed_expression_is_an_error(expr: str) -> None:
    with pytest.raises(ValueError):
        metric_names(expr)


def expression_problems(where: str, expr: Any, exported: set[str]) -> list[str]:
    if not isinstance(expr, str) or not expr.strip():
        return [f"{where}: no expression"]
    try:
        names = metric_names(expr)
    except ValueError as exc:
        return [f"{where}: cannot read {expr!r}: {exc}"]
    if not names:
        return [f"{where}: names no metric"]
    return [f"{where}: {name} is not a metric the service exports"
            for name in sorted(names - exported)]


# -- the alert rules ---------------------------------------------------------------------------

DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
GROUP_KEYS = {"name", "interval", "limit", "query_offset", "labels", "rules"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"page", "warning", "info"}


def rule_problems(doc: Any, exported: set[str]) -> list[str]:
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


def alert_problems(rule: Any, exported: set[str]) -> list[str]:
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


def test_the_alert_rules_are_sound(rules: dict[str, Any], exported: set[str]) -> None:
    assert rule_problems(rules, exported) == []
    used = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert {"stream_infer_consumer_lag", "stream_infer_dead_letters_total",
            "stream_infer_degraded", "stream_infer_paused",
            "stream_infer_dependency_outages_total", "stream_infer_spans_dropped"} <= used


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
])
def test_the_rule_checks_catch_a_broken_copy(rules: dict[str, Any], exported: set[str],
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


def dashboard_problems(doc: Any, datasources: set[str], exported: set[str]) -> list[str]:
    """Everything that keeps a panel from drawing: no data source (or one not provisioned),
    no query, a query naming a metric the service does not export."""
    if not isinstance(doc, dict) or not doc.get("uid") or not doc.get("title"):
        return ["not a dashboard with a uid and a title"]
    found = [] if panels(doc) else ["no panels"]
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


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_the_dashboard_is_sound_and_shows_what_operators_need(
    dashboard: dict[str, Any], compose: dict[str, Any], exported: set[str]
) -> None:
    assert dashboard_problems(dashboard, provisioned_datasources(compose), exported) == []
    used = set().union(*(metric_names(t["expr"]) for p in panels(dashboard)
                         for t in p["targets"]))
    assert {"stream_infer_events_consumed_total",  # throughput
            "stream_infer_stage_seconds_sum", "stream_infer_stage_seconds_count",  # stages
            "stream_infer_event_to_alert_seconds_bucket",  # event-to-alert latency
            "stream_infer_consumer_lag",  # lag per partition
            "stream_infer_alerts_total", "stream_infer_dead_letters_total",
            "stream_infer_model_info"} <= used  # the model versions served
    lag = next(p for p in panels(dashboard) if "stream_infer_consumer_lag" in
               p["targets"][0]["expr"])
    assert "partition" in lag["targets"][0]["expr"] and "{{partition}}" in (
        lag["targets"][0]["legendFormat"])


def first_panel(doc: dict[str, Any]) -> dict[str, Any]:
    return panels(doc)[0]


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
])
def test_the_dashboard_checks_catch_a_broken_copy(
    dashboard: dict[str, Any], compose: dict[str, Any], exported: set[str], breakage: Any,
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
