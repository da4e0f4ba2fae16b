"""Waiting for a server the tests started to listen: one helper for Dovecot, Postfix and the like."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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


def stop_and_remove(process: subprocess.Popen, folder: Path) -> None:
    """Stop a server the tests started (TERM, then KILL after 15 s) and remove its temp folder."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(folder, ignore_errors=True)
