"""Relays that misbehave on purpose: postfix's smtp-sink and aiosmtpd handlers.

Each test checks, from what the server actually received, who got the issue,
that nobody got it twice, and that the delivery log, `status` and the exit code
tell the truth.
"""

from __future__ import annotations

import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from .ports import free_port
from sqlalchemy import text
from newsletter.store.database import Status

from .conftest import PROJECT, SAMPLE_DATE, RecordingHandler, run_cli
from .leftovers import server_folder
from .test_unsubscribe_during_send import HeldRelay

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
READERS = [f"reader{i:03d}@example.com" for i in range(40)]


class Sink:
    """postfix's smtp-sink on loopback, dumping each mail transaction to a file."""

    def __init__(self, *flags: str) -> None:
        # smtp-sink drops to user nobody, who cannot enter pytest's tmp_path.
        self.folder = server_folder("smtp-sink")  # named with the run's id: an interrupted run's is removed
        self.folder.chmod(0o777)
        self.port = free_port()
        self.process = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-d", f"{self.folder}/%H%M%S.", *flags, f"127.0.0.1:{self.port}", "100"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read()
                assert time.monotonic() < deadline, "smtp-sink did not start"
                time.sleep(0.05)

    def recipients(self) -> list[str]:
        found = []
        for dump in self.folder.iterdir():
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("X-Rcpt-Args:"):
                    found.append(line.split("<", 1)[1].split(">", 1)[0])
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def sinks():
    started: list[Sink] = []

    def start(*flags: str) -> Sink:
        sink = Sink(*flags)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def readers(store):
    store.add_subscribers([(address, "") for address in READERS])
    return READERS


def send(env, port: int, **settings: str) -> subprocess.CompletedProcess:
    overrides = {f"NEWSLETTER_{k.upper()}": v for k, v in settings.items()}
    return run_cli("send", "--date", SAMPLE_DATE.isoformat(),
                   env={**env, "NEWSLETTER_SMTP_PORT": str(port), **overrides})


def status(env) -> str:
    return run_cli("status", "--date", SAMPLE_DATE.isoformat(), env=env).stdout


def test_soft_rejects_are_retried_then_left_for_the_next_run(env, sinks, readers):
    refusing = sinks("-r", "RCPT", "-b", "452 4.2.2 Mailbox full")

    first = send(env, refusing.port, send_attempts="2")

    assert first.returncode == 75, first.stdout + first.stderr
    assert f"failed {len(readers)}" in first.stdout
    assert refusing.recipients() == []
    report = status(env)
    assert f"retrying {len(readers)}" in report and "452 4.2.2 Mailbox full" in report

    healthy = sinks()
    second = send(env, healthy.port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(healthy.recipients()) == sorted(readers)
    assert f"delivered {len(readers)}, pending 0, retrying 0, refused during the send 0" in status(env)


def test_hard_rejects_bounce_the_reader_and_end_the_job(env, sinks, readers, store):
    refusing = sinks("-f", "RCPT", "-B", "550 5.1.1 User unknown")

    result = send(env, refusing.port)

    assert result.returncode == 0, "every reader was either delivered or refused for good"
    assert f"refused {len(readers)}" in result.stdout
    assert store.count_subscribers(Status.bounced) == len(readers)
    report = status(env)
    assert f"refused during the send {len(readers)}" in report and "550 5.1.1 User unknown" in report
    healthy = sinks()
    assert send(env, healthy.port).returncode == 0
    assert healthy.recipients() == [], "a bounced reader receives nothing more"


def test_a_relay_that_refuses_our_sender_stops_the_send_and_changes_no_reader(env, sinks, readers, store):
    """A relay that wants TLS or a login refuses MAIL FROM for every message: that is ours to fix, not the
    readers' addresses; bouncing them would empty the list."""
    refusing = sinks("-f", "MAIL", "-B", "530 5.7.0 Must issue a STARTTLS command first")

    result = send(env, refusing.port)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "refuses the sender" in line]
    assert len(lines) == 1 and "530 5.7.0 Must issue a STARTTLS command first" in lines[0], result.stderr
    assert "NEWSLETTER_SMTP_TLS" in lines[0] and "Traceback" not in result.stderr
    assert store.count_subscribers(Status.active) == len(readers)
    healthy = sinks()
    assert send(env, healthy.port).returncode == 0
    assert sorted(healthy.recipients()) == sorted(readers), "once fixed, everyone gets the issue"


def test_a_relay_that_refuses_by_policy_bounces_nobody(env, sinks, readers, store):
    """«Relay access denied» (5.7.1) to every recipient: our relay will not take our mail. The readers are left
    for the next run, not bounced."""
    refusing = sinks("-f", "RCPT", "-B", "554 5.7.1 Relay access denied")

    result = send(env, refusing.port, send_attempts="1")

    assert result.returncode == 75, result.stdout + result.stderr
    assert f"failed {len(readers)}" in result.stdout
    assert store.count_subscribers(Status.active) == len(readers)
    assert "554 5.7.1 Relay access denied" in status(env)
    healthy = sinks()
    assert send(env, healthy.port).returncode == 0
    assert sorted(healthy.recipients()) == sorted(readers)


def test_a_relay_that_hangs_up_at_data_loses_nobody(env, sinks, readers):
    hanging_up = sinks("-q", "DATA")

    result = send(env, hanging_up.port, send_attempts="2")

    assert result.returncode == 75
    assert "Traceback" not in result.stderr
    assert hanging_up.recipients() == []
    healthy = sinks()
    assert send(env, healthy.port).returncode == 0
    assert Counter(healthy.recipients()) == Counter(readers)


def test_421_on_connect_stops_with_one_line_and_keeps_everyone(env, sinks, readers):
    closed = sinks("-Q", "CONNECT")

    result = send(env, closed.port, send_attempts="1", smtp_connections="2")

    assert result.returncode == 75
    assert "error:" in result.stderr and "421" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"pending {len(readers)}" in status(env)


# --- aiosmtpd relays with a mind of their own -------------------------------------


class FlakyHandler(RecordingHandler):
    """Refuses a fraction of recipients with 451 on their first try."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction
        self.tried: set[str] = set()
        self.random = random.Random(7)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            first_try = address not in self.tried
            self.tried.add(address)
        if first_try and self.random.random() < self.fraction:
            return "451 4.3.0 Temporary local problem"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


class DroppingHandler(RecordingHandler):
    """Hangs up (no reply) on the MAIL after `per_session` messages on one connection."""

    def __init__(self, per_session: int) -> None:
        super().__init__()
        self.per_session = per_session
        self.counts: Counter[int] = Counter()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            self.counts[id(session)] += 1
            over = self.counts[id(session)] > self.per_session
        if over:
            server.transport.close()
            return "421 4.4.2 Connection dropped"
        envelope.mail_from = address
        return "250 OK"


class CountingHandler(RecordingHandler):
    """Counts messages per connection and keeps the time each arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.per_session: Counter[int] = Counter()
        self.times: list[float] = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.per_session[id(session)] += 1
            self.times.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


class CrowdedSMTP(SMTP):
    """Greets with 421 "too many connections" beyond `limit` simultaneous sessions."""

    limit = 2
    active = 0
    turned_away = 0
    lock = threading.Lock()

    def connection_made(self, transport):
        with CrowdedSMTP.lock:
            CrowdedSMTP.active += 1
            crowded = CrowdedSMTP.active > CrowdedSMTP.limit
            CrowdedSMTP.turned_away += crowded
        self._crowded = crowded
        if crowded:
            transport.write(b"421 4.7.0 Too many connections, try later\r\n")
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc):
        with CrowdedSMTP.lock:
            CrowdedSMTP.active -= 1
        if not self._crowded:
            super().connection_lost(exc)


class CrowdedController(Controller):
    def factory(self):
        return CrowdedSMTP(self.handler, **self.SMTP_kwargs)


def send_through(env, handler, controller_class=Controller, **settings: str) -> subprocess.CompletedProcess:
    """Run `newsletter send` against an aiosmtpd relay using `handler`."""
    controller = controller_class(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        return send(env, controller.port, **settings)
    finally:
        controller.stop()


def test_a_fraction_of_transient_refusals_is_retried_to_completion(env, readers):
    handler = FlakyHandler(fraction=0.3)
    result = send_through(env, handler)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Counter(handler.recipients()) == Counter(readers), "everyone once, nobody twice"
    assert "delivered 40, pending 0, retrying 0" in status(env)


def test_dropped_connections_are_reopened_and_nobody_gets_two_copies(env, readers):
    handler = DroppingHandler(per_session=3)
    result = send_through(env, handler)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Counter(handler.recipients()) == Counter(readers)


def test_too_many_connections_makes_the_sender_use_fewer(env, readers):
    CrowdedSMTP.active = CrowdedSMTP.turned_away = 0
    handler = RecordingHandler()
    result = send_through(env, handler, CrowdedController, smtp_connections="6", retry_base_seconds="0.01")
    assert result.returncode == 0, result.stdout + result.stderr
    assert CrowdedSMTP.turned_away >= 1
    assert "relay busy" in result.stderr and "connection(s)" in result.stderr
    assert Counter(handler.recipients()) == Counter(readers)


def test_messages_per_connection_cap_is_respected(env, readers):
    handler = CountingHandler()
    result = send_through(env, handler, smtp_messages_per_connection="5")
    assert result.returncode == 0
    assert max(handler.per_session.values()) <= 5
    assert sum(handler.per_session.values()) == len(readers)


def test_rate_limit_spaces_the_messages(env, readers):
    handler = CountingHandler()
    result = send_through(env, handler, rate_limit="40")
    assert result.returncode == 0
    # 40 messages at 40/s: the first and the last are at least ~39 intervals apart.
    assert handler.times[-1] - handler.times[0] >= 39 / 40 * 0.9


def assert_a_log_broken_mid_send_stops_it_cleanly(env, store, break_log, mend_log=lambda: None) -> str:
    """Break the delivery log while the first message is held in DATA, then mend it and send again.

    The first run must stop with exit 75 and one line, no traceback; the rerun
    must finish, with at most one repeat per connection. Returns the first run's stderr.
    """
    store.add_subscribers([(address, "") for address in READERS])
    relay = HeldRelay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    # The failed run cannot hand its claims back (its log is broken): the rerun takes them once stale.
    send_env = {**env, "NEWSLETTER_SMTP_PORT": str(controller.port), "NEWSLETTER_SMTP_CONNECTIONS": "2",
                "NEWSLETTER_STALE_RUN_SECONDS": "3"}
    try:
        send = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--date", SAMPLE_DATE.isoformat()],
                                env=send_env, cwd=PROJECT / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert relay.holding.wait(60)
        break_log()
        relay.release.set()
        out, err = send.communicate(timeout=120)  # it stops: it does not wait for ever
        assert send.returncode == 75, out + err
        assert "the delivery log could not be written" in err and "Traceback" not in err

        mend_log()
        rerun = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=send_env)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    finally:
        relay.release.set()
        controller.stop()
    copies = Counter(relay.recipients())
    assert set(copies) == set(READERS)
    assert sum(n - 1 for n in copies.values()) <= 2, "only messages in flight when the log failed may repeat"
    return err


@pytest.mark.sqlite_only
def test_a_delivery_log_that_cannot_be_written_mid_send_stops_it_cleanly(env, store, database_url):
    """SQLite's group commits go through the DB-API directly: their errors still end the send in one line."""
    database = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        # The log's table vanishes from under the send (an operator's mistake, a restore gone wrong).
        err = assert_a_log_broken_mid_send_stops_it_cleanly(
            env, store,
            break_log=lambda: database.execute("ALTER TABLE deliveries RENAME TO deliveries_elsewhere"),
            mend_log=lambda: database.execute("ALTER TABLE deliveries_elsewhere RENAME TO deliveries"))
    finally:
        database.close()
    assert "no such table" in err


@pytest.mark.postgresql_only
def test_the_database_going_away_mid_send_stops_it_cleanly_and_the_rerun_finishes(env, store, postgres, database_url):
    def drop_our_sessions() -> None:  # the database server drops every session of ours
        with postgres.admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"),
                         {"db": database_url.rsplit("/", 1)[1]})

    assert_a_log_broken_mid_send_stops_it_cleanly(env, store, break_log=drop_our_sessions)
