"""Loopback ports for servers this process starts (the Faust engine's web server, the demo's
broker and Redis), and for servers started in another process that binds them later.

A port the kernel handed out (``bind(0)``) lies in its ephemeral range, which outgoing
connections draw from too: between choosing it and another process binding it, a client
socket of any process (a consumer reconnecting, a Redis client) can take it, and the server
then fails with "Address already in use". :func:`server_ports` hands out ports below that
range, where only servers that ask for a port by number go.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"


def bindable(port: int) -> bool:
    """True when a server could listen on ``port`` of 127.0.0.1 now (a socket in TIME_WAIT
    does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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
