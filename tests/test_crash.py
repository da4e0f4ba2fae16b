"""A send killed halfway (SIGKILL) or stopped (SIGTERM) loses nobody and repeats almost nobody."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from aiosmtpd.controller import Controller

from newsletter.outbox import free_port

from .conftest import PROJECT, SAMPLE_DATE, RecordingHandler, run_cli

READERS = 3000
CONNECTIONS = 4


class SlowHandler(RecordingHandler):
    """A relay that takes a few milliseconds per message, so a kill lands mid-list."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.003)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_server():
    handler = SlowHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture
def crash_env(env, store, slow_server):
    controller, _ = slow_server
    store.add_subscribers([(f"reader{i:05d}@example.com", "") for i in range(READERS)])
    return {**env, "NEWSLETTER_SMTP_PORT": str(controller.port), "NEWSLETTER_SMTP_CONNECTIONS": str(CONNECTIONS),
            "NEWSLETTER_BATCH_SIZE": "200", "NEWSLETTER_STALE_RUN_SECONDS": "2"}


def start_send(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--date", SAMPLE_DATE.isoformat()],
                            env=env, cwd=PROJECT / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_received(handler, count: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(handler.recipients()) < count:
        assert process.poll() is None, "the send ended before it could be stopped"
        assert time.monotonic() < deadline, "the send made no progress"
        time.sleep(0.01)


def test_sigkill_halfway_then_rerun_delivers_everyone_once(crash_env, slow_server):
    _, handler = slow_server
    first = start_send(crash_env)
    wait_until_received(handler, READERS // 4, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    received_before = len(handler.recipients())
    assert received_before < READERS, "the kill landed after the end; nothing was tested"

    second = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=crash_env, timeout=300)

    assert second.returncode == 0, second.stdout + second.stderr
    copies = Counter(handler.recipients())
    assert set(copies) == {f"reader{i:05d}@example.com" for i in range(READERS)}, "nobody is missed"
    duplicates = sum(n - 1 for n in copies.values())
    assert duplicates <= CONNECTIONS, f"{duplicates} sent twice; only in-flight messages may repeat"


def test_sigterm_stops_cleanly_with_exit_75_and_the_rerun_finishes(crash_env, slow_server):
    _, handler = slow_server
    first = start_send(crash_env)
    wait_until_received(handler, READERS // 4, first)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=60)

    assert first.returncode == 75, out + err
    assert "Interrupted" in err and "Traceback" not in err
    second = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=crash_env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    copies = Counter(handler.recipients())
    assert len(copies) == READERS
    assert max(copies.values()) == 1, "a clean stop records every message it sent"
