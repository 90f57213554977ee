"""Server ports for other processes stay out of the kernel's ephemeral range."""

from __future__ import annotations

import socket

from stream_infer.service.ports import LOOPBACK, ephemeral_floor, server_ports


def test_server_ports_are_free_below_the_ephemeral_range_and_never_given_twice() -> None:
    blocks = [server_ports(3) for _ in range(50)]
    ports = [first + i for first in blocks for i in range(3)]
    assert len(ports) == len(set(ports))
    assert all(port + 2 < ephemeral_floor() for port in blocks)
    for port in ports[:9]:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, port))


def test_ports_a_stride_apart_are_all_below_the_ephemeral_range() -> None:
    first = server_ports(2, stride=10_000)
    assert first + 10_000 < ephemeral_floor()
