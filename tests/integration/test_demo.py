"""The README's first command, as a user runs it (with a small event count)."""

import re

import pytest

from tests.support.service import cli

pytestmark = pytest.mark.integration


def test_demo_runs_the_real_pipeline_and_summarises_it() -> None:
    result = cli("demo", "--events", "3000", "--rate", "0", "--bad-rate", "0.01", timeout=180)
    out = result.stdout
    consumed = int(re.search(r"events\s+([\d,]+) in", out).group(1).replace(",", ""))
    scored = int(re.search(r"scored\s+([\d,]+)", out).group(1).replace(",", ""))
    dead = int(re.search(r"dead letters\s+([\d,]+)", out).group(1).replace(",", ""))
    alerts = int(re.search(r"alerts\s+([\d,]+)", out).group(1).replace(",", ""))
    assert consumed == 3000 and scored + dead == 3000
    assert 0 < dead < 100 and 0 < alerts < scored
    assert re.search(r"event-to-alert\s+p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert '"alert_id"' in out


def number(pattern: str, out: str) -> int:
    found = re.search(pattern, out)
    assert found, (pattern, out)
    return int(found.group(1).replace(",", ""))


def test_the_window_demo_computes_windows_from_the_stream_and_labels_arriving_late() -> None:
    result = cli("demo", "--windows", "--days", "20", "--customers", "100", "--terminals",
                 "200", "--rate", "2000", timeout=240)
    out = result.stdout
    payments = number(r"history ([\d,]+) payments", out)
    labels = number(r"payments of .*?, ([\d,]+) labels a week after each", out)
    assert number(r"\(([\d,]+) payments scored", out) == payments > 500
    assert number(r"scored, ([\d,]+) labels", out) == labels == payments
    computed = number(r"customer windows\s+([\d,]+) computed", out)
    too_late = number(r"customer windows.*?([\d,]+) too late", out)
    assert computed + too_late == payments and too_late < payments / 10
    applied = number(r"labels\s+([\d,]+) applied", out)
    waited = number(r"applied to the window state, ([\d,]+) waited", out)
    assert applied + waited == labels
    assert number(r"alerts\s+([\d,]+)", out) > 0
    assert re.search(r"pushed alerts .*terminal\.rate_label_\d+d \d", out), out
    assert "demo v2" in out
