"""Why the embedded broker's group stopped assigning, and how the service notices.

Tansu (0.6) keeps a group's leader while the group re-forms: if that leader *leaves*
(LeaveGroup: a consumer closed, a service stopped with SIGTERM) after a member's JoinGroup
started a rebalance and before the leader synced it, the group goes on naming the departed
member as its leader. Every JoinGroup then answers "follow that leader", every SyncGroup
"rebalance in progress", and no member is ever assigned a partition again, however many
join, leave or restart, until the emptied group is deleted. A leader that dies instead
(SIGKILL) stays a member until its session times out, which clears it, and the group
recovers. Apache Kafka clears the leader on LeaveGroup in every state: the same sequence
there ends with every partition assigned.

The last two tests are the service's side: a member of a stalled group that keeps its
partitions (cooperative-sticky lets it) warns once, naming the group; and a ``--workers``
unit whose workers wait in a stalled group answers 503 on its ``/readyz``. The stall being
Tansu's, ``broker`` is the session's Tansu in this module.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_infer.adapters.kafka import KafkaSource, ensure_topics
from stream_infer.demo.apache_kafka import ApacheKafka
from stream_infer.demo.embedded import EmbeddedBroker
from tests.support.configs import service_config, write_config
from tests.support.service import Service
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SESSION_MS = 6000
STALL_S = 3 * SESSION_MS / 1000
"""How long a test watches a stalled group: three session timeouts, the service's threshold."""
LEADER = {"heartbeat.interval.ms": 5000}
"""The leader hears of a rebalance on its next heartbeat: 5 s leaves the test time to make
it leave first, right after it formed the group."""


@pytest.fixture
def broker(tansu: EmbeddedBroker) -> EmbeddedBroker:
    return tansu


def member_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """The consumer options the service uses for its group, with a short session."""
    return {"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": SESSION_MS,
            "partition.assignment.strategy": "cooperative-sticky", **extra}


class Member:
    """A librdkafka consumer in the group, counting the assignments it was handed."""

    def __init__(self, bootstrap: str, group: str, topic: str, **extra: Any) -> None:
        self.assignments: list[list[int]] = []
        self.consumer = Consumer(member_config(bootstrap, group, **extra))
        self.consumer.subscribe([topic], on_assign=self._on_assign)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignments.append([tp.partition for tp in partitions])


def poll(members: list[Member], until: Callable[[], bool], timeout_s: float) -> bool:
    """Serve the members' callbacks until ``until()`` or ``timeout_s``; whether it came."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in members:
            m.consumer.poll(0.1)
        if until():
            return True
    return False


def await_rebalance(member: Member, bootstrap: str, group: str) -> None:
    """Serve ``member`` until the broker reports the group out of its stable state (the
    member's JoinGroup arrived), within 4 s: before the leader's next heartbeat
    (``heartbeat.interval.ms`` 5000), after which it would rejoin and no case of a leader
    leaving or dying mid-rebalance could be set up."""
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def left_stable() -> bool:
        described = admin.describe_consumer_groups([group], request_timeout=5)[group]
        return described.result().state is not ConsumerGroupState.STABLE

    assert poll([member], left_stable, 4), \
        "the JoinGroup did not reach the group before the leader's next heartbeat"


def stall(bootstrap: str, group: str, topic: str) -> Member:
    """The reproduction: a leader forms the group, a newcomer's JoinGroup starts a
    rebalance it leads, and it leaves (LeaveGroup) before it rejoined and synced the group.
    Returns the newcomer."""
    leader = Member(bootstrap, group, topic, **LEADER)
    assert poll([leader], lambda: bool(leader.assignments), 20), "the group never formed"
    newcomer = Member(bootstrap, group, topic)
    await_rebalance(newcomer, bootstrap, group)
    leader.consumer.close()
    return newcomer


def test_tansu_group_stalls_when_the_leader_leaves_mid_rebalance(
    broker: Any, make_topics: Callable[..., list[str]]
) -> None:
    bootstrap, group, (topic,) = broker.bootstrap_servers, f"stall-{uuid.uuid4().hex[:8]}", \
        make_topics(2)
    follower = stall(bootstrap, group, topic)
    latecomer = Member(bootstrap, group, topic)
    members = [follower, latecomer]
    assert not poll(members, lambda: bool(follower.assignments or latecomer.assignments),
                    STALL_S), "Tansu assigned again: the stall this test documents is fixed"

    for m in members:  # the stall outlives them (the last test starts workers in it)
        m.consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})  # the way out: delete the group
    admin.delete_consumer_groups([group], request_timeout=10)[group].result()
    revived = Member(bootstrap, group, topic)
    assert poll([revived], lambda: any(revived.assignments), 20), "deleting did not help"
    revived.consumer.close()


def test_apache_kafka_assigns_again_when_the_leader_leaves_mid_rebalance(
    kafka: ApacheKafka
) -> None:
    bootstrap, group, topic = kafka.bootstrap_servers, f"stall-{uuid.uuid4().hex[:8]}", \
        f"stall-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], create=True, partitions=2,
                  replication_factor=1)
    members = [stall(bootstrap, group, topic), Member(bootstrap, group, topic)]

    def shared() -> bool:
        owned = [{tp.partition for tp in m.consumer.assignment()} for m in members]
        return all(owned) and sorted(p for parts in owned for p in parts) == [0, 1]

    assert poll(members, shared, STALL_S), "Apache Kafka stalled like Tansu"
    for m in members:
        m.consumer.close()


KILLABLE_LEADER = """
import sys
from confluent_kafka import Consumer
bootstrap, group, topic, session_ms = sys.argv[1:5]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "session.timeout.ms": int(session_ms), "heartbeat.interval.ms": 5000,
                     "partition.assignment.strategy": "cooperative-sticky"})
assigned = []
consumer.subscribe([topic], on_assign=lambda c, parts: assigned.extend(parts))
while not assigned:
    consumer.poll(0.1)
print("assigned", flush=True)
while True:
    consumer.poll(0.1)
"""


def test_tansu_group_recovers_when_the_leader_is_killed_mid_rebalance(
    broker: Any, make_topics: Callable[..., list[str]]
) -> None:
    bootstrap, group, (topic,) = broker.bootstrap_servers, f"kill-{uuid.uuid4().hex[:8]}", \
        make_topics(2)
    with subprocess.Popen([sys.executable, "-c", KILLABLE_LEADER, bootstrap, group, topic,
                           str(SESSION_MS)], stdout=subprocess.PIPE, text=True) as leader:
        try:
            assert leader.stdout is not None and leader.stdout.readline().strip() == "assigned"
            follower = Member(bootstrap, group, topic)
            await_rebalance(follower, bootstrap, group)
            leader.send_signal(signal.SIGKILL)  # no LeaveGroup: its session expires instead
            assert poll([follower], lambda: bool(follower.assignments), STALL_S), \
                "the group did not recover from a killed leader"
            assert follower.assignments == [[0, 1]]
            follower.consumer.close()
        finally:
            leader.kill()


def test_a_member_that_keeps_its_partitions_in_a_stalled_group_warns_once_naming_it(
    broker: Any, make_topics: Callable[..., list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap, group, (topic,) = broker.bootstrap_servers, f"watch-{uuid.uuid4().hex[:8]}", \
        make_topics(2)
    leader = Member(bootstrap, group, topic, **LEADER)
    assert poll([leader], lambda: bool(leader.assignments), 20), "the group never formed"
    source = KafkaSource(member_config(bootstrap, group, **{"statistics.interval.ms": 1000}),
                         [topic])

    def both_hold_one() -> bool:
        source.consume(100, 0.1)
        return len(source.assigned) == 1 and len(leader.consumer.assignment()) == 1

    assert poll([leader], both_hold_one, 30), "the partitions were never shared"
    newcomer = Member(bootstrap, group, topic)
    await_rebalance(newcomer, bootstrap, group)
    leader.consumer.close()  # the stall of the first test, with this member inside it

    with caplog.at_level(logging.WARNING, logger="stream_infer.adapters.kafka"):
        assert poll([newcomer], lambda: bool(source.consume(100, 0.1)) or
                    bool(source.watch.stalled()), STALL_S + 15), "the watch never fired"
        stalled = source.watch.stalled()
        assert stalled is not None and repr(group) in stalled, stalled
        assert len(source.assigned) == 1  # it keeps its partition: only the watch tells
        poll([newcomer], lambda: bool(source.consume(100, 0.1)), 2)
    warnings = [r.getMessage() for r in caplog.records if "stuck in a rebalance" in r.getMessage()]
    assert len(warnings) == 1 and repr(group) in warnings[0], warnings
    newcomer.consumer.close()
    source.close()


def test_the_supervisor_is_not_ready_while_its_workers_wait_on_a_stalled_group(
    tmp_path: Path, broker: Any, redis_server: Any
) -> None:
    sections = service_config(uuid.uuid4().hex[:8], broker.bootstrap_servers, redis_server.url)
    kafka = sections["kafka"]
    group, topic = kafka["group_id"], kafka["input_topics"][0]
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [topic], create=True,
                  partitions=2, replication_factor=1)
    stall(broker.bootstrap_servers, group, topic).consumer.close()
    stuck = f"no assignment from group {group!r}"

    with Service(write_config(tmp_path / "config.toml", sections), "supervisor",
                 "--workers", "2") as supervisor:
        wait_until(lambda: supervisor.get("/readyz")[1].count(stuck) == 2, STALL_S + 45,
                   "both workers to report the stall", poll_s=1, ignoring=(OSError,))
        status, body = supervisor.get("/readyz")
        assert status == 503
        for i in (1, 2):
            assert f"worker {i} http://127.0.0.1:{supervisor.port + i}: FAIL 503" in body
        assert supervisor.get("/healthz")[0] == 200  # alive, not ready
        assert supervisor.stop() == 0, supervisor.log_tail()
    assert supervisor.log().count("is the group stuck in a rebalance?") == 2
