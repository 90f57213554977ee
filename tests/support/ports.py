"""Ports for servers a test starts in another process, which binds them later.

A port the kernel handed out (``bind(0)``) lies in its ephemeral range, which outgoing
connections draw from too: between the test choosing it and the server binding it, a client
socket of any process (a consumer reconnecting, a Redis client) can take it, and the server
then fails with "Address already in use". These ports lie below that range, where only
servers that ask for a port by number go.
"""

from __future__ import annotations

import random
from pathlib import Path

from stream_infer.service.ports import bindable

_given: set[int] = set()


def ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (32768 if unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def server_ports(count: int = 1, *, lowest: int = 10_000, stride: int = 1) -> int:
    """The first of ``count`` ports on 127.0.0.1 ``stride`` apart, each free now, below the
    ephemeral range, and none handed out before by this process."""
    top = ephemeral_floor() - (count - 1) * stride - 1
    for _ in range(1000):
        first = random.randrange(lowest, top)
        block = range(first, first + count * stride, stride)
        if _given.isdisjoint(block) and all(map(bindable, block)):
            _given.update(block)
            return first
    raise RuntimeError(f"no {count} free ports {stride} apart below {ephemeral_floor()}")
