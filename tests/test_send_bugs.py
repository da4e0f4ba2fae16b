"""A bug inside the send (an exception that is neither ours nor SQLAlchemy's) stops it promptly with exit 70.

The bug is put in from outside: the real `newsletter send` runs in a subprocess whose entry
point first replaces a store method with one that raises. Nothing in the library knows about it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from sqlalchemy import func, select

from newsletter.store.schema import deliveries

from .conftest import PROJECT, SAMPLE_DATE, run_cli

READERS = 60
CONNECTIONS = 4
# A hang fails the test instead of blocking the run: a working send of 60 readers takes ~2 s.
PROMPTLY = 30

# The delivery log's group commit raises on its fifth round, after some messages went out.
BUGGY_SEND = textwrap.dedent("""
    import sys
    from newsletter.store.deliverylog import DeliveryLog

    real_rounds = DeliveryLog.rounds

    def buggy_rounds(self, issue_id, run_id):
        rounds = real_rounds(self, issue_id, run_id)
        real_record, calls = rounds.record, [0]

        async def record(outcomes, upcoming):
            calls[0] += 1
            if calls[0] == 5:
                raise ZeroDivisionError("injected bug")
            return await real_record(outcomes, upcoming)

        rounds.record = record
        return rounds

    DeliveryLog.rounds = buggy_rounds
    from newsletter.cli import main
    sys.argv = ["newsletter", *sys.argv[1:]]
    main()
""")


def buggy_send(env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-c", BUGGY_SEND, "send", "--date", SAMPLE_DATE.isoformat()],
                              env=env, cwd=PROJECT / "tests", capture_output=True, text=True, timeout=PROMPTLY)
    except subprocess.TimeoutExpired as hung:  # subprocess.run has killed it
        pytest.fail(f"the send hung after the bug (killed after {PROMPTLY} s): {hung.stderr!r}")


def test_a_bug_in_a_delivery_round_stops_the_send_with_exit_70_and_the_rerun_finishes(env, store, smtp_server):
    store.add_subscribers([(f"reader{i:03d}@example.com", "") for i in range(READERS)])
    env = {**env, "NEWSLETTER_SMTP_CONNECTIONS": str(CONNECTIONS)}

    first = buggy_send(env)

    assert first.returncode == 70, first.stdout + first.stderr
    said = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "bug" in said[0] and "ZeroDivisionError: injected bug" in said[0], first.stderr
    assert "Traceback (most recent call last)" in first.stderr and ", in record\n" in first.stderr, \
        "the traceback, down to the injected bug, is in the log"
    with store.engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(deliveries)
                            .where(deliveries.c.outcome == "sending")).scalar_one()
    assert held == 0, "the run handed back every claim it had not settled"
    assert len(smtp_server.handler.recipients()) < READERS, "the bug landed after the end; nothing was tested"

    second = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env, timeout=PROMPTLY)

    assert second.returncode == 0, second.stdout + second.stderr
    copies = Counter(smtp_server.handler.recipients())
    assert set(copies) == {f"reader{i:03d}@example.com" for i in range(READERS)}, "nobody is missed"
    duplicates = sum(n - 1 for n in copies.values())
    assert duplicates <= CONNECTIONS, f"{duplicates} sent twice; only the failed round's messages may repeat"
