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
