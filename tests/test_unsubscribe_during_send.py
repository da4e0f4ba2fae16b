"""A reader who leaves while the morning send is running gets nothing, though their batch was already claimed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import httpx
from aiosmtpd.controller import Controller

from .ports import free_port
from newsletter.store.database import Status
from newsletter.tokens import Tokens

from .conftest import PROJECT, SAMPLE_DATE, RecordingHandler, run_cli
from .test_web import live_site

READERS = [f"reader{i}@example.com" for i in range(10)]


@dataclass
class HeldRelay(RecordingHandler):
    """Holds the first message in DATA until the test lets it go: the send is provably mid-run."""

    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope):
        self.holding.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return await super().handle_DATA(server, session, envelope)


def test_readers_who_leave_mid_send_are_not_sent_the_issue(env, store, settings):
    for address in READERS:
        store.add_subscriber(address)
    relay = HeldRelay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    send_env = {**env, "NEWSLETTER_SMTP_PORT": str(controller.port), "NEWSLETTER_SMTP_CONNECTIONS": "1"}
    send = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--date", SAMPLE_DATE.isoformat()],
                            env=send_env, cwd=PROJECT / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert relay.holding.wait(60), "the send never reached the relay"
        # Every reader is claimed by now (one batch); the first message is in flight.
        one_click = Tokens(settings.secret_key).unsubscribe_token(store.get_subscriber(READERS[5]).id)
        with live_site(settings) as site:
            answer = httpx.post(f"{site.url}/unsubscribe/{one_click}", content="List-Unsubscribe=One-Click",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert answer.status_code == 200
        assert run_cli("subscribers", "remove", READERS[6], env=env).returncode == 0
        assert run_cli("subscribers", "forget", READERS[7], env=env).returncode == 0
    finally:
        relay.release.set()
        stdout, stderr = send.communicate(timeout=120)
        controller.stop()

    assert send.returncode == 0, stderr
    assert "withdrawn 3 (unsubscribed during the send)" in stdout
    left = {READERS[5], READERS[6], READERS[7]}
    assert sorted(relay.recipients()) == sorted(set(READERS) - left)
    assert store.get_subscriber(READERS[5]).status == Status.unsubscribed.value
    assert store.get_subscriber(READERS[7]) is None

    status = run_cli("status", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert status.returncode == 0, status.stdout
    assert "delivered 7, pending 0, retrying 0, refused during the send 0" in status.stdout

    again = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=send_env)
    assert again.returncode == 0 and "Sent 0" in again.stdout
