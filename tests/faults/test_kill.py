"""SIGKILL at each named fail point, then restart: nothing is lost, dedup on alert_id is exact.

Traffic flows while the victim runs; its fail point lets 40 batches through, then the process
SIGKILLs itself. A restarted service (no fail point) must then produce an output for every
input the broker acknowledged before the restart, and commit them all.
"""

from __future__ import annotations

import signal

import pytest

from stream_infer.failpoints import ENV, POINTS
from tests.support.wait import wait_until

from .harness import FaultReport, Lab, Ledger, caught_up, reconcile

pytestmark = pytest.mark.integration
RATE = 1000  # events/s while the victim runs


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_a_fail_point_then_restart_loses_nothing(
    point: str, lab: Lab, fault_report: FaultReport
) -> None:
    run, ledger = lab.run(4), Ledger()
    traffic, outputs, config = lab.traffic(run, ledger), lab.outputs(run), run.write_config()

    traffic.start(RATE)
    victim = lab.service(config, "victim", {ENV: f"{point}=40*off->kill"})
    assert victim.wait(90) == -signal.SIGKILL, victim.log_tail()
    assert f"fail point {point}: SIGKILL" in victim.log()

    restarted = lab.service(config, "restarted")
    traffic.stop()
    recovery_s = outputs.wait_until_covered(ledger)
    wait_until(lambda: caught_up(run, outputs), 60, "the restarted service to commit everything")
    assert restarted.stop() == 0, restarted.log_tail()
    outputs.settle()

    tally = reconcile(ledger, outputs)
    fault_report.add(f"SIGKILL {point}, restart", tally, recovery_s,
                     max(victim.peak_mib, restarted.peak_mib))
    assert tally.inputs >= RATE and (tally.lost, tally.unknown, tally.absent) == (0, 0, 0)
    assert tally.after_dedup == 0 and tally.conflicts == 0
    if point == "after_flush":  # acknowledged but never stored: must be consumed again
        assert tally.duplicates > 0
