"""Shared fixtures: a real in-process SMTP server (aiosmtpd), a real SQLite file, test settings."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller

from newsletter.config import Settings
from newsletter.store.database import Store
from newsletter.web.app import UVICORN_OPTIONS

from .leftovers import mark_this_run, stop_leftovers
from .ports import free_port
from .postgres import PostgresCluster

PROJECT = Path(__file__).resolve().parent.parent
SAMPLE_DATE = dt.date(2017, 5, 9)  # the day of the bundled sample feeds


class LiveApp:
    """An ASGI app under uvicorn in a background thread, on a loopback port, over real HTTP."""

    def __init__(self, app, port: int | None = None, **options) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                **{**UVICORN_OPTIONS, **options})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveApp:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (openssl): the tests' TLS servers use it."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class ServeProcess:
    """The real `newsletter serve` in a subprocess on a loopback port; what it logged, once stopped."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(self.port)],
                                        env=env, cwd=PROJECT / "tests", stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout = self.stderr = ""

    def __enter__(self) -> httpx.Client:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        # Generous: on a machine busy with other work (or other xdist workers) importing the app takes a while.
        deadline = time.monotonic() + 90
        while True:
            try:
                self.client.get("/healthz")
                return self.client
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise AssertionError(f"serve did not start: {self.stderr[-2000:]}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.stdout, self.stderr = self.process.communicate(timeout=30)


@dataclass
class Received:
    mail_from: str
    rcpt_to: str
    raw: bytes

    def parsed(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


@dataclass
class RecordingHandler:
    """Accepts everything unless `refuse` maps a recipient to a reply (e.g. '550 …')."""

    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    refuse_once: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            reply = self.refuse.get(address) or self.refuse_once.pop(address, None)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append(Received(envelope.mail_from, rcpt, envelope.original_content))
        return "250 Message accepted"

    def recipients(self) -> list[str]:
        with self.lock:
            return [m.rcpt_to for m in self.messages]


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler


@pytest.fixture
def smtp_server():
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    yield SmtpServer("127.0.0.1", port, handler)
    controller.stop()


# Test modules that run against both stores; the rest use SQLite, the embedded default.
BOTH_STORES = {"test_send", "test_crash", "test_faults", "test_subscribers", "test_web", "test_web_hardening",
               "test_rate_limit", "test_unsubscribe_during_send", "test_migrations", "test_embed", "test_log_retention",
               "test_bounces", "test_webhooks", "test_clicks", "test_approval", "test_send_bugs",
               "test_pending_expiry", "test_reader_links", "test_doctor", "test_desk", "test_manage",
               "test_desk_today", "test_desk_results", "test_desk_readers"}


RUN = pytest.StashKey[str]()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite itself; not run on PostgreSQL")
    config.addinivalue_line("markers", "postgresql_only: several machines share only a PostgreSQL store")
    config.stash[RUN] = mark_this_run()  # before xdist starts its workers: they and their servers inherit it


def pytest_unconfigure(config) -> None:
    """After an interrupted run, stop the servers nobody stopped (see tests/leftovers.py); the xdist
    controller does it for all its workers, once they are down."""
    if "PYTEST_XDIST_WORKER" in os.environ or RUN not in config.stash:
        return
    left = stop_leftovers(config.stash[RUN])
    if left:
        print(f"\nstopped {len(left)} processes the tests left running:", file=sys.stderr)
        for pid, command in sorted(left.items()):
            print(f"  {pid} {command[:160]}", file=sys.stderr)


def pytest_generate_tests(metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if metafunc.definition.get_closest_marker("postgresql_only"):
        kinds = ["postgresql"]
    elif module in BOTH_STORES and not metafunc.definition.get_closest_marker("sqlite_only"):
        kinds = ["sqlite", "postgresql"]
    else:
        kinds = ["sqlite"]
    metafunc.parametrize("store_kind", kinds)


@pytest.fixture(scope="session")
def postgres():
    """One throw-away PostgreSQL cluster for the whole run, started the first time a test needs it."""
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def database_url(store_kind, tmp_path, request):
    """A new, empty database of the kind under test."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'subscribers.sqlite3'}"
        return
    cluster = request.getfixturevalue("postgres")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def env(tmp_path, smtp_server, database_url) -> dict[str, str]:
    """Environment for running the real `newsletter` command against the test server."""
    values = {
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SMTP_HOST": smtp_server.host,
        "NEWSLETTER_SMTP_PORT": str(smtp_server.port),
        "NEWSLETTER_SMTP_CONNECTIONS": "4",
        "NEWSLETTER_FROM_ADDRESS": "morning@news.example",
        "NEWSLETTER_BASE_URL": "https://news.example",
        "NEWSLETTER_SECRET_KEY": "tests-only-key-0123456789-abcdefghijklmnop",
        "NEWSLETTER_RETRY_BASE_SECONDS": "0.05",
        "NEWSLETTER_EDITORIAL_DIR": str(tmp_path / "editorial"),
    }
    return {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}, **values}


@pytest.fixture
def settings(env) -> Settings:
    fields = {k.removeprefix("NEWSLETTER_").lower(): v for k, v in env.items() if k.startswith("NEWSLETTER_")}
    return Settings(_env_file=None, **fields)


@pytest.fixture
def store(settings):
    store = Store(settings.database_url)
    yield store
    store.close()


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `newsletter` command; cwd defaults to a folder without a .env file."""
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env=env, cwd=cwd or PROJECT / "tests", capture_output=True, text=True, timeout=timeout,
    )
