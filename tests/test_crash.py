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
from sqlalchemy import func, select

from newsletter.store.schema import deliveries, send_runs

from .conftest import PROJECT, SAMPLE_DATE, RecordingHandler, run_cli
from .ports import free_port

# Five rounds of claims (NEWSLETTER_BATCH_SIZE 200): enough for a kill to land mid-list and for a
# rerun to have a pass to sweep, few enough that the sends' CPU time stays small.
READERS = 1000
CONNECTIONS = 4


class SlowHandler(RecordingHandler):
    """A relay that takes a few milliseconds per message, so a kill lands mid-list."""

    delay = 0.003

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.delay)
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


def start_send(env, clock: str | None = None) -> subprocess.Popen:
    """`newsletter send` in the background; `clock` runs it under libfaketime (e.g. "+60s")."""
    command = [sys.executable, "-m", "newsletter", "send", "--date", SAMPLE_DATE.isoformat()]
    if clock:
        command = ["faketime", "-f", clock, *command]
    return subprocess.Popen(command, env=env, cwd=PROJECT / "tests", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


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


def test_a_killed_senders_claims_are_taken_over_mid_pass_not_after_it(crash_env, slow_server, store):
    """Run A is killed holding claims; run B, started at once, sweeps a long list. B takes A's readers
    over within the stale time (2 s) and a round, not when its own pass through the list is done."""
    _, handler = slow_server
    handler.delay = 0.03  # B's pass through the list takes ~7 s, far longer than the stale time
    first = start_send(crash_env)
    wait_until_received(handler, 50, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    with store.engine.connect() as conn:
        held = set(conn.execute(select(deliveries.c.subscriber_id).where(deliveries.c.outcome == "sending")).scalars())
    orphans = {store.subscriber_by_id(i).email for i in held}
    assert len(orphans) >= 100, "the kill left few claims behind; nothing was tested"
    received_before = len(handler.recipients())

    second = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=crash_env, timeout=300)

    assert second.returncode == 0, second.stdout + second.stderr
    order = handler.recipients()[received_before:]
    fresh = [address for address in order if address not in orphans]
    last_orphan = max(order.index(address) for address in orphans if address in order)
    assert set(order) >= orphans - set(handler.recipients()[:received_before])
    assert last_orphan < len(order) - len(fresh) // 3, "A's readers waited for the end of B's pass"


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


def claims_held_by(store, process: subprocess.Popen) -> int:
    owner = f"% pid {process.pid}"
    with store.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(deliveries.join(send_runs, send_runs.c.run_id == deliveries.c.run_id))
            .where(send_runs.c.owner.like(owner), deliveries.c.outcome == "sending")).scalar_one()


def freeze_holding_claims(process: subprocess.Popen, store) -> None:
    """SIGSTOP the send at a moment it holds unsettled claims (not between two batches)."""
    for _ in range(200):
        process.send_signal(signal.SIGSTOP)
        if claims_held_by(store, process):
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("the send never held a claim when stopped")


@pytest.mark.postgresql_only
def test_three_senders_one_clock_a_minute_ahead_one_stalled_lose_nobody(crash_env, slow_server, store):
    """Several machines on one PostgreSQL: leases on the database's clock, not each host's."""
    _, handler = slow_server
    # Rounds of 100: three senders share ten, so the stalled one is still in the middle of one when frozen.
    crash_env = {**crash_env, "NEWSLETTER_BATCH_SIZE": "100"}
    steady = start_send(crash_env)
    ahead = start_send(crash_env, clock="+60s")  # its host clock is a minute ahead of the others'
    stalled = start_send(crash_env)
    wait_until_received(handler, READERS // 5, stalled)
    # Frozen mid-send with its claims held, until the others, having waited out the stale time,
    # took them over and finished the list. Then it wakes up and finds its claims gone.
    freeze_holding_claims(stalled, store)
    results = {name: process.communicate(timeout=300) + (process.returncode,)
               for name, process in (("steady", steady), ("ahead", ahead))}
    stalled.send_signal(signal.SIGCONT)
    results["stalled"] = stalled.communicate(timeout=300) + (stalled.returncode,)

    for name, (out, err, code) in results.items():
        assert "Traceback" not in err, f"{name}: {err}"
    assert results["steady"][2] == results["ahead"][2] == 0, results
    copies = Counter(handler.recipients())
    assert set(copies) == {f"reader{i:05d}@example.com" for i in range(READERS)}, "nobody is missed"
    duplicates = sum(n - 1 for n in copies.values())
    assert duplicates <= CONNECTIONS, f"{duplicates} sent twice; only the stalled run's in-flight messages may repeat"
    # The stalled run says what happened: it left the claims it lost (exit 0), or, frozen inside a
    # transaction, its database session was ended so the others could go on, and it stopped (exit 75).
    _, stalled_err, stalled_code = results["stalled"]
    assert (stalled_code, "stalled past NEWSLETTER_STALE_RUN_SECONDS" in stalled_err) == (0, True) or \
        (stalled_code, "the delivery log could not be written" in stalled_err) == (75, True), stalled_err
