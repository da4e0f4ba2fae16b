"""What a test run left running, found by a mark in the environment of every process it started.

The run sets NEWSLETTER_TEST_RUN to an id of its own; the servers the tests start (PostgreSQL,
Postfix, nginx, Dovecot, Xvfb, Chromium …) inherit it, and pytest-xdist's workers share their
controller's. Each server is stopped by the fixture that started it, but an interrupted run can
skip that: Ctrl-C while a server is starting, or an xdist worker still tearing down when the
controller's grace time is up and it is killed. At the end of the run, whatever still carries
this run's id is stopped; another worker's, another run's or another developer's servers carry
another id or none, and are left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

MARK = "NEWSLETTER_TEST_RUN"


def mark_this_run() -> str:
    """This run's id, in os.environ for every process started from now on (an xdist worker: its controller's)."""
    inherited = os.environ.get(MARK) if "PYTEST_XDIST_WORKER" in os.environ else None
    run = inherited or uuid.uuid4().hex
    os.environ[MARK] = run
    return run


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _folder_mark(run: str) -> str:
    return f"-{run[:12]}-"


def server_folder(name: str) -> Path:
    """A new temp folder for a server the tests start, named with the run's id: an interrupted run's
    folders are removed by it, and a server that wipes its environment (Dovecot writes its process
    titles over it) is still found by its command line, which names the folder."""
    return Path(tempfile.mkdtemp(prefix=f"newsletter-{name}{_folder_mark(os.environ.get(MARK, ''))}"))


def marked_processes(run: str) -> dict[int, str]:
    """{pid: command line} of every live process but this one whose environment carries `run`,
    or whose command line names one of its server folders (server_folder)."""
    needle = f"{MARK}={run}".encode()
    in_command = _folder_mark(run)
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if in_command not in command and needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if _alive(int(entry.name)):
            found[int(entry.name)] = command
    return found


def stop_leftovers(run: str, grace: float = 5) -> dict[int, str]:
    """TERM what this run left running, then KILL what still carries its id after `grace` seconds, and
    remove its server folders; the processes found."""
    if len(run) < 12:
        raise ValueError(f"not a run's id: {run!r}")
    found = marked_processes(run)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        remaining = marked_processes(run) if sig == signal.SIGKILL else found
        for pid in remaining:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in remaining) and time.monotonic() < deadline:
            time.sleep(0.1)
    for folder in Path(tempfile.gettempdir()).glob(f"newsletter-*{_folder_mark(run)}*"):
        shutil.rmtree(folder, ignore_errors=True)
    return found
