"""Consumer-group faults while traffic flows: members join and leave, a batch outlives
``max.poll.interval.ms``, a member freezes (SIGSTOP) past its session timeout.

Each test reconciles every input offset against the outputs, and samples the group's
committed offsets throughout: they must never go backwards (a member committing for a
partition it lost would move them back).
"""

from __future__ import annotations

import signal
import time

import pytest

from stream_infer.failpoints import ENV
from tests.support.service import Service
from tests.support.wait import wait_until

from .harness import (
    CommitWatch,
    FaultReport,
    Lab,
    Ledger,
    Outputs,
    Run,
    Tally,
    caught_up,
    reconcile,
)

pytestmark = pytest.mark.integration


def balanced(run: Run, *members: Service) -> bool:
    """Every partition owned, each by exactly one of ``members``, each member owning some."""
    owned = [m.assignment() for m in members]
    every = {f"{run.input_topic}[{p}]" for p in range(run.partitions)}
    return all(owned) and sum(map(len, owned)) == len(every) and set().union(*owned) == every


def finish(run: Run, ledger: Ledger, outputs: Outputs, watch: CommitWatch,
           *members: Service) -> Tally:
    """Wait until every input is committed, stop ``members``, check that the commits never
    went back, and reconcile."""
    wait_until(lambda: caught_up(run, outputs), 60, "every input to be committed")
    for member in members:
        assert member.stop() == 0, member.log_tail()
    watch.stop()
    outputs.settle()
    assert watch.samples > 10 and watch.regressions == []
    return reconcile(ledger, outputs)


@pytest.mark.slow  # the SIGSTOP test moves partitions between two members in the default run
def test_members_join_and_leave_1_3_1_while_traffic_flows(
    lab: Lab, fault_report: FaultReport
) -> None:
    run, ledger = lab.run(6), Ledger()
    traffic, outputs, config = lab.traffic(run, ledger), lab.outputs(run), run.write_config()
    watch = lab.commit_watch(run)
    traffic.start(1000)
    first = lab.service(config, "first")
    wait_until(lambda: balanced(run, first), 60, "the first member to own everything")
    time.sleep(2)
    joiners = [lab.service(config, "second"), lab.service(config, "third")]
    wait_until(lambda: balanced(run, first, *joiners), 60, "three members to share the partitions")
    time.sleep(2)
    joiners[0].signal(signal.SIGTERM)  # one leaves cleanly, the other dies
    joiners[1].signal(signal.SIGKILL)
    assert joiners[0].wait(60) == 0 and joiners[1].wait(10) == -signal.SIGKILL
    wait_until(lambda: balanced(run, first), 60, "the first member to own everything again")
    traffic.stop()
    recovery_s = outputs.wait_until_covered(ledger)
    tally = finish(run, ledger, outputs, watch, first)

    fault_report.add("members 1 → 3 → 1 (one leaves cleanly, one is killed)", tally,
                     recovery_s, max(s.peak_mib for s in lab.services))
    assert (tally.lost, tally.unknown, tally.absent, tally.after_dedup) == (0, 0, 0, 0)
    assert tally.conflicts == 0
    assert "revoked" in first.log()


def test_a_batch_slower_than_max_poll_interval_commits_nothing_for_the_lost_assignment(
    lab: Lab, fault_report: FaultReport
) -> None:
    run, ledger = lab.run(4), Ledger()
    traffic, outputs, watch = lab.traffic(run, ledger), lab.outputs(run), lab.commit_watch(run)
    config = run.write_config(kafka={"max_poll_interval_ms": 4000})
    traffic.start(500)
    steady = lab.service(config, "steady")
    slow = lab.service(config, "slow", {ENV: "after_score=20*off->1*sleep(8000)"})
    wait_until(lambda: "fail point after_score: sleeping" in slow.log(), 60, "the slow batch")
    wait_until(lambda: balanced(run, steady), 30, "the steady member to take every partition")
    wait_until(lambda: "assignment lost" in slow.log(), 30, "the slow member to see its loss")
    traffic.stop()
    recovery_s = outputs.wait_until_covered(ledger)
    wait_until(lambda: balanced(run, steady, slow), 60, "the slow member to rejoin")
    tally = finish(run, ledger, outputs, watch, steady, slow)

    fault_report.add("a batch slower than max.poll.interval.ms", tally, recovery_s,
                     max(steady.peak_mib, slow.peak_mib))
    assert (tally.lost, tally.unknown, tally.absent, tally.after_dedup) == (0, 0, 0, 0)
    assert tally.conflicts == 0
    assert "assignment lost (nothing committed for it)" in slow.log()
    assert "offset store refused" not in slow.log()


def test_a_member_frozen_past_its_session_timeout_rejoins_and_loses_nothing(
    lab: Lab, fault_report: FaultReport
) -> None:
    run, ledger = lab.run(4), Ledger()
    traffic, outputs, config = lab.traffic(run, ledger), lab.outputs(run), run.write_config()
    watch = lab.commit_watch(run)
    traffic.start(1000)
    frozen, other = lab.service(config, "frozen"), lab.service(config, "other")
    wait_until(lambda: balanced(run, frozen, other), 60, "two members to share the partitions")
    time.sleep(1)
    frozen.signal(signal.SIGSTOP)
    wait_until(lambda: balanced(run, other), 30, "the other member to take every partition")
    time.sleep(2)
    frozen.signal(signal.SIGCONT)
    traffic.stop()
    recovery_s = outputs.wait_until_covered(ledger)
    wait_until(lambda: balanced(run, frozen, other), 60, "the frozen member to rejoin")
    tally = finish(run, ledger, outputs, watch, frozen, other)

    fault_report.add("SIGSTOP past the session timeout, SIGCONT", tally, recovery_s,
                     max(frozen.peak_mib, other.peak_mib))
    assert (tally.lost, tally.unknown, tally.absent, tally.after_dedup) == (0, 0, 0, 0)
    assert tally.conflicts == 0
    assert "assignment lost (nothing committed for it)" in frozen.log()
