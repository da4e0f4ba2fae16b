"""Addresses nobody confirms are forgotten after NEWSLETTER_PENDING_DAYS, by `db compact` and by `serve`."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from newsletter.store.database import Status
from newsletter.store.schema import subscribers, suppressions
from newsletter.tokens import Tokens

from .conftest import PROJECT, run_cli
from .test_web import live_site


def signed_up(store, email: str, days_ago: float, status: Status = Status.pending,
              link_sent_days_ago: float | None = None, unsubscribed_before: bool = False) -> None:
    """A reader who asked `days_ago` (by the database's clock), optionally mailed a new link since."""
    store.add_subscriber(email, "", status)
    database_now = select(func.now() if store.engine.dialect.name == "postgresql" else func.datetime("now"))
    with store.engine.begin() as conn:
        now = conn.execute(database_now).scalar_one()
        now = now if isinstance(now, dt.datetime) else dt.datetime.fromisoformat(now).replace(tzinfo=dt.timezone.utc)
        values = {"created_at": now - dt.timedelta(days=days_ago), "updated_at": now - dt.timedelta(days=days_ago)}
        if link_sent_days_ago is not None:
            values["confirmation_sent_at"] = now - dt.timedelta(days=link_sent_days_ago)
        if unsubscribed_before:
            values["unsubscribed_at"] = now - dt.timedelta(days=days_ago + 30)
        conn.execute(update(subscribers).where(subscribers.c.email == email).values(**values))


def emails(store) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(subscribers.c.email)).scalars())


def test_db_compact_forgets_addresses_never_confirmed_within_the_setting(env, store, settings, tmp_path):
    signed_up(store, "forgotten@example.com", days_ago=8)
    signed_up(store, "fresh@example.com", days_ago=6.9)
    signed_up(store, "asked-again@example.com", days_ago=20, link_sent_days_ago=1)  # its new link still works
    signed_up(store, "old-link@example.com", days_ago=20, link_sent_days_ago=9)
    signed_up(store, "once-gone@example.com", days_ago=8, unsubscribed_before=True)
    signed_up(store, "reader@example.com", days_ago=400, status=Status.active)
    signed_up(store, "left@example.com", days_ago=400, status=Status.unsubscribed)

    result = run_cli("db", "compact", env=env)

    assert result.returncode == 0, result.stderr
    assert "Forgot 3 address(es) never confirmed within 7 day(s)" in result.stdout, result.stdout
    assert emails(store) == {"fresh@example.com", "asked-again@example.com", "reader@example.com",
                             "left@example.com"}
    # Someone signed up an address whose owner had unsubscribed; nobody confirmed: it stays unsubscribed.
    with store.engine.connect() as conn:
        kept = set(conn.execute(select(suppressions.c.email_hash)).scalars())
    assert kept == {Tokens(settings.secret_key).email_hash("once-gone@example.com")}
    (tmp_path / "list.csv").write_text("once-gone@example.com\nforgotten@example.com\n", encoding="utf-8")
    imported = run_cli("subscribers", "import", str(tmp_path / "list.csv"), env=env)
    assert "Imported 1" in imported.stdout and "1 previously unsubscribed" in imported.stdout, imported.stdout

    again = run_cli("db", "compact", env={**env, "NEWSLETTER_PENDING_DAYS": "2.5"})
    assert "Forgot 1 address(es) never confirmed within 2.5 day(s)" in again.stdout, again.stdout
    assert "fresh@example.com" not in emails(store)


def test_a_confirmation_pressed_after_the_address_was_forgotten_says_the_link_is_not_valid(settings, store):
    import httpx

    signed_up(store, "late@example.com", days_ago=8)
    token = Tokens(settings.secret_key).confirm_token(store.get_subscriber("late@example.com").id)
    assert store.forget_unconfirmed(dt.timedelta(days=7), Tokens(settings.secret_key).email_hash) == 1
    with live_site(settings.model_copy(update={"pending_days": 1000})) as server, \
            httpx.Client(base_url=server.url) as client:
        pressed = client.post(f"/confirm/{token}")
    assert pressed.status_code == 400 and "رابط التأكيد غير صالح" in pressed.text
    assert 'action="https://news.example/subscribe"' in pressed.text, "a way to sign up again"
    assert store.count_subscribers() == 0


def test_serve_forgets_them_in_the_background_and_says_so_in_its_log(settings, store, caplog):
    signed_up(store, "forgotten@example.com", days_ago=8)
    signed_up(store, "fresh@example.com", days_ago=1)
    with caplog.at_level(logging.INFO, logger="newsletter"), live_site(settings):
        deadline = time.monotonic() + 10
        while store.get_subscriber("forgotten@example.com") is not None:
            assert time.monotonic() < deadline, "serve forgot nobody"
            time.sleep(0.05)
    assert emails(store) == {"fresh@example.com"}
    said = [r.getMessage() for r in caplog.records if "never confirmed" in r.getMessage()]
    assert said == ["forgot 1 address(es) never confirmed within 7 day(s) (NEWSLETTER_PENDING_DAYS)"]


@pytest.mark.postgresql_only
def test_the_host_clock_does_not_count_only_the_databases(env, store):
    """A machine whose clock runs a month ahead (libfaketime) forgets nobody early."""
    signed_up(store, "fresh@example.com", days_ago=1)
    ahead = subprocess.run(["faketime", "-f", "+30d", sys.executable, "-m", "newsletter", "db", "compact"],
                           env=env, cwd=PROJECT / "tests", capture_output=True, text=True, timeout=60)
    assert ahead.returncode == 0, ahead.stderr
    assert "Forgot 0 address(es)" in ahead.stdout
    assert emails(store) == {"fresh@example.com"}
