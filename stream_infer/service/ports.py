"""Loopback ports for servers this process starts (the Faust engine's web server, the demo's
broker and Redis)."""

from __future__ import annotations

import socket

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
