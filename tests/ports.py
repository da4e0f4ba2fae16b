"""Loopback ports for the servers the tests start, safe with several pytest-xdist workers at once.

Asking the kernel for any free port (bind to port 0, close, let the server bind it a moment later)
leaves a gap in which another worker's server, or any outgoing connection (its source port comes
from the same ephemeral range), can take the port. Here each worker hands out ports from a block
of its own below the ephemeral range (net.ipv4.ip_local_port_range), where the kernel never picks
a source port, and never hands out the same port twice in a run. Each block is started at a random
place, so that another run of the tests on the same machine is unlikely to walk the same ports.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
from collections.abc import Iterator

LOWEST = 10000  # above the ports people give their own servers (8000, 8080, 5432, 9090 …)


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _worker_block() -> range:
    """This worker's ports: gw0 the first of PYTEST_XDIST_WORKER_COUNT equal blocks (one run: all of them)."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (_ephemeral_start() - LOWEST) // count
    if size < 100:
        raise RuntimeError(f"too few ports below the ephemeral range for {count} workers")
    return range(LOWEST + index * size, LOWEST + (index + 1) * size)


def _cycle(block: range) -> Iterator[int]:
    start = random.randrange(len(block))
    return itertools.cycle([*block[start:], *block[:start]])


_lock = threading.Lock()
_ports: Iterator[int] | None = None
_given: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port of this worker's block nobody listens on or is connected from, not handed out before."""
    global _ports
    with _lock:
        if _ports is None:
            _ports = _cycle(_worker_block())
        for port in itertools.islice(_ports, 10000):
            if port in _given:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError("no free port left in this worker's block")
