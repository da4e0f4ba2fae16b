"""Waiting for a server the tests started to listen: one helper for Dovecot, Postfix and the like."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def wait_listening(port: int, name: str, log: Callable[[], str], process: subprocess.Popen | None = None,
                   timeout: float = 30) -> None:
    """Return once 127.0.0.1:`port` accepts connections; RuntimeError with the server's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"{name} exited: {output} {log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {port}: {log()}")
