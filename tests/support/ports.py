"""Free ports of 127.0.0.1. A port found free may be taken by another process before its server binds it: each
server that takes one retries with another when its start says the address is in use."""

from __future__ import annotations

import socket


def free_port(udp: bool = False) -> int:
    """A TCP port of 127.0.0.1 that is free now (a UDP one with `udp`)."""
    with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_free(port: int) -> bool:
    """Whether TCP port `port` of 127.0.0.1 can be bound now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, taken: set[int]) -> list[int]:
    """`count` free ports of 127.0.0.1, different from each other and from `taken` (which they are added to)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken:
            taken.add(port)
            ports.append(port)
    return ports


def free_port_pair(offset: int, taken: set[int]) -> int:
    """A free port P of 127.0.0.1 such that P + `offset` is free too, both outside `taken` (and then added to it)."""
    while True:
        port = free_port()
        if port + offset <= 65535 and not {port, port + offset} & taken and is_free(port + offset):
            taken.update({port, port + offset})
            return port
