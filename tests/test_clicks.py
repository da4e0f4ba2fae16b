"""What readers read: click counts per story on both stores, and how little they keep about readers."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from sqlalchemy import select, update

from newsletter.store.clicks import Click
from newsletter.store.schema import click_history, click_readers, click_salts, click_totals, metadata
from newsletter.web.machines.clicks import BURST_SECONDS as BURST
from newsletter.web.machines.clicks import FLUSH_SECONDS as FLUSH

from .conftest import run_cli

NOW = dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.timezone.utc)
STORIES = [{"url": f"https://outlet.example/story/{n}", "title": f"الخبر {n}", "summary": "", "source": "وكالة"}
           for n in range(1, 4)]


def _issue(store, day: str) -> int:
    return store.save_issue(day, "موضوع", "", "<p>NLLINK01SLOT</p>", "NLLINK01SLOT", STORIES).id


def _readers(store, count: int) -> list[int]:
    for n in range(count):
        store.add_subscriber(f"reader{n}@example.com", "")
    return [store.get_subscriber(f"reader{n}@example.com").id for n in range(count)]


def _dump(store, skip: set[str]) -> dict[str, list[tuple]]:
    """Every row of every table but `skip`, in order."""
    with store.engine.connect() as conn:
        return {table.name: sorted(map(tuple, conn.execute(select(table))), key=repr)
                for table in metadata.sorted_tables if table.name not in skip}


def _age_salts(store, days: float) -> None:
    """Move the salts' birth back by `days` on the database's own clock (what time passing does)."""
    with store.engine.begin() as conn:
        conn.execute(update(click_salts).values(created_epoch=click_salts.c.created_epoch - days * 86400))


def test_clicks_readers_and_machines_are_counted_per_story(store):
    issue = _issue(store, "2026-12-06")
    a, b, c = _readers(store, 3)
    store.clicks.record([Click(issue, 1, a, False, NOW), Click(issue, 1, a, False, NOW),
                         Click(issue, 1, b, False, NOW), Click(issue, 2, a, False, NOW),
                         Click(issue, 3, c, True, NOW)], salt_days=2, individual=False)
    store.clicks.record([Click(issue, 1, c, False, NOW)], salt_days=2, individual=False)

    counts = store.clicks.by_story(issue)

    assert {p: (s.clicks, s.machine_clicks, s.unique_readers) for p, s in counts.items()} == {
        0: (5, 1, 3),  # the issue: 5 reader clicks by 3 readers, 1 machine click
        1: (4, 0, 3), 2: (1, 0, 1), 3: (0, 1, 0)}


def test_after_the_salt_expires_nothing_tells_which_reader_clicked_what(store):
    """Two issues whose readers clicked crosswise leave identical traces once their salts are gone."""
    first, second = _issue(store, "2026-12-05"), _issue(store, "2026-12-06")
    a, b = _readers(store, 2)
    before = _dump(store, skip={"click_totals", "click_salts", "click_readers", "click_history"})
    store.clicks.record([Click(first, 1, a, False, NOW), Click(first, 2, b, False, NOW),
                         Click(second, 2, a, False, NOW), Click(second, 1, b, False, NOW)],
                        salt_days=2, individual=False)
    assert store.clicks.by_story(first)[1].unique_readers == 1
    _age_salts(store, 1.5)
    assert store.clicks.fold_expired_salts(salt_days=2) == 0, "not yet: the salt lives two days"
    _age_salts(store, 1)

    assert store.clicks.fold_expired_salts(salt_days=2) == 2

    with store.engine.connect() as conn:
        assert conn.execute(select(click_readers)).all() == []
        assert conn.execute(select(click_salts)).all() == []
        assert conn.execute(select(click_history)).all() == []
        totals = {issue: sorted((p, c, m, u) for _, p, c, m, u in conn.execute(
            select(click_totals).where(click_totals.c.issue_id == issue))) for issue in (first, second)}
    assert totals[first] == totals[second] == [(0, 2, 0, 2), (1, 1, 0, 1), (2, 1, 0, 1)]
    assert _dump(store, skip={"click_totals", "click_salts", "click_readers", "click_history"}) == before, \
        "clicking wrote nothing anywhere else"
    # The counts survive the fold, and a later click starts a new salt.
    store.clicks.record([Click(first, 1, a, False, NOW)], salt_days=2, individual=False)
    assert store.clicks.by_story(first)[1].unique_readers == 2, "a new period counts the reader again"


def test_individual_history_is_kept_and_forgotten_with_the_reader(store):
    issue = _issue(store, "2026-12-06")
    a, b = _readers(store, 2)
    store.clicks.record([Click(issue, 2, a, False, NOW), Click(issue, 1, a, True, NOW),
                         Click(issue, 3, b, False, NOW)], salt_days=2, individual=True)
    assert store.clicks.history_of(a) == [(issue, 2, False, NOW), (issue, 1, True, NOW)] or \
        [(i, p, m) for i, p, m, _ in store.clicks.history_of(a)] == [(issue, 2, False), (issue, 1, True)]

    assert store.forget("reader0@example.com", "hash")

    assert store.clicks.history_of(a) == []
    assert [(i, p, m) for i, p, m, _ in store.clicks.history_of(b)] == [(issue, 3, False)]
    assert store.clicks.by_story(issue)[2].clicks == 1, "counts stay: they name nobody"


def test_db_compact_folds_expired_salts_and_drops_old_individual_history(store, env):
    issue = _issue(store, "2026-12-06")
    [a] = _readers(store, 1)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    store.clicks.record([Click(issue, 1, a, False, old), Click(issue, 2, a, False, NOW)], salt_days=2, individual=True)
    _age_salts(store, 3)

    compacted = run_cli("db", "compact", env=env)

    assert compacted.returncode == 0, compacted.stderr
    assert "the expired click salts of 1 issue(s) into counts; 1 individual click(s) of that age deleted" \
        in compacted.stdout, compacted.stdout
    assert [(p, m) for _, p, m, _ in store.clicks.history_of(a)] == [(2, False)]
    assert store.clicks.by_story(issue)[1].unique_readers == 1 and store.clicks.by_story(issue)[1].clicks == 1


@pytest.mark.parametrize("individual", [False, True])
def test_a_click_of_a_reader_forgotten_meanwhile_is_counted_but_not_kept(store, individual):
    issue = _issue(store, "2026-12-06")
    [a] = _readers(store, 1)
    store.forget("reader0@example.com", "hash")
    store.clicks.record([Click(issue, 1, a, False, NOW)], salt_days=2, individual=individual)
    assert store.clicks.by_story(issue)[1].clicks == 1
    assert store.clicks.history_of(a) == []


# --- /c/ over real HTTP ------------------------------------------------------------------------

READER_AGENT = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Mobile Safari/537.36")


def _send_issue(settings, store, stories_base: str, readers: int) -> tuple[dict[str, list[str]], int]:
    """Freeze an issue whose stories live at `stories_base` and send it; each reader's /c/ links, the issue id."""
    from newsletter.edition import send_edition
    from newsletter.issue.render import Issue, IssueStory, Renderer

    stories = [IssueStory(f"{stories_base}/story/{n}?from=rss&lang=ar", f"الخبر رقم {n}", "ملخص.", ["وكالة"],
                          None, "") for n in range(1, 4)]
    rendered = Renderer(settings.templates_dir, settings.base_url).render(Issue(SENT_DATE, stories))
    issue = store.save_issue(SENT_DATE.isoformat(), rendered.subject, rendered.preheader, rendered.html,
                             rendered.text, rendered.stories)
    for n in range(readers):
        store.add_subscriber(f"reader{n}@example.com", "")
    result = send_edition(settings, store, SENT_DATE)
    assert result.report.sent == readers
    return issue.id


SENT_DATE = dt.date(2026, 12, 6)


def _links(received) -> tuple[list[str], list[str]]:
    """The /c/ links of one received message: (in the HTML, in the plain text), in order."""
    import re

    parsed = received.parsed()
    html = parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content()
    pattern = r"https?://[^\s\"'<>]+/c/[0-9a-z-]+"
    return re.findall(pattern, html), re.findall(pattern, text)


@pytest.fixture
def clicks_site(settings, store, smtp_server):
    """The app under uvicorn with BASE_URL pointing at it, and an issue sent to three readers."""
    from .ports import free_port

    from .test_web import live_site

    port = free_port()
    local = settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
    issue_id = _send_issue(local, store, "https://outlet.example", readers=3)
    messages = {m.rcpt_to: m for m in smtp_server.handler.messages}
    site = live_site(local, port)
    with site:
        yield site, issue_id, messages


def _wait_for_clicks(store, issue_id: int, place: int, clicks: int, machine: int = 0, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = store.clicks.by_story(issue_id).get(place)
        if found is not None and (found.clicks, found.machine_clicks) == (clicks, machine):
            return
        assert time.monotonic() < deadline, f"place {place}: {found}, wanted {clicks} + {machine} machine"
        time.sleep(0.1)


def test_a_readers_click_is_redirected_to_the_story_and_counted_once_per_reader(clicks_site, store, env):
    site, issue_id, messages = clicks_site
    html_links, text_links = _links(messages["reader0@example.com"])
    assert len(html_links) == 3 * 2 and len(text_links) == 3, "the headline and «اقرأ المزيد» (no pictures); text: one"
    lead = text_links[0]
    assert lead in html_links, "the same link in both parts"
    with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        first = client.get(lead)
        time.sleep(BURST + 0.3)
        again = client.get(lead)
        other = client.get(_links(messages["reader1@example.com"])[1][0])

    assert first.status_code == 302 and first.headers["location"] == "https://outlet.example/story/1?from=rss&lang=ar"
    assert again.status_code == other.status_code == 302
    _wait_for_clicks(store, issue_id, 1, clicks=3)
    assert store.clicks.by_story(issue_id)[1].unique_readers == 2
    assert store.clicks.by_story(issue_id)[0].unique_readers == 2, "two readers clicked something"

    status = run_cli("status", "--date", SENT_DATE.isoformat(), env=env)
    assert "clicks: 2 reader(s) clicked a story (66.67% of delivered), 3 click(s) by readers, 0 by machines" \
        in status.stdout, status.stdout
    assert "        2  66.67%       3       0  1. الخبر رقم 1 (وكالة)" in status.stdout
    assert "        0   0.00%       0       0  2. الخبر رقم 2 (وكالة)" in status.stdout


def test_scanners_prefetches_heads_and_bursts_are_machine_clicks(clicks_site, store):
    site, issue_id, messages = clicks_site
    links = _links(messages["reader2@example.com"])[1]
    with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        assert client.head(links[0]).status_code == 302
        assert client.get(links[0], headers={"Sec-Purpose": "prefetch"}).status_code == 302
        assert client.get(links[0], headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}
                          ).status_code == 302
        assert client.get(links[0], headers={"User-Agent": ""}).status_code == 302
    _wait_for_clicks(store, issue_id, 1, clicks=0, machine=4)
    # A scanner following every link of reader1's message within a second: none of them is the reader.
    with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        for link in _links(messages["reader1@example.com"])[1]:
            assert client.get(link).status_code == 302
    for place in (2, 3):
        _wait_for_clicks(store, issue_id, place, clicks=0, machine=1)
    _wait_for_clicks(store, issue_id, 1, clicks=0, machine=5)
    assert store.clicks.by_story(issue_id)[0].unique_readers == 0


def test_forged_damaged_foreign_and_huge_tokens_get_a_404_page_and_count_nothing(clicks_site, store, settings):
    from newsletter.tokens import Tokens

    site, issue_id, messages = clicks_site
    link = _links(messages["reader0@example.com"])[1][0]
    token = link.rsplit("/", 1)[1]
    other_key = Tokens("another-install-key-0123456789-abcdefgh")
    bad = [
        token[:-1] + ("a" if token[-1] != "a" else "b"),  # damaged MAC
        token[:-4],  # cut short
        token.replace("-1-", "-9-", 1),  # another place, same MAC
        other_key.click_token("20261206", 1, 1),  # another install's key
        Tokens(settings.secret_key).click_token("20261205", 1, 1),  # genuine, but no such issue
        Tokens(settings.secret_key).click_token("20261206", 7, 1),  # genuine, a place the issue lacks
        "x" * 5000,
        "%00%0d%0aLocation:%20evil.example",
    ]
    with httpx.Client(base_url=site.url, timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        for path in [f"/c/{b}" for b in bad]:
            response = client.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert "location" not in response.headers
            assert 'dir="rtl"' in response.text and "اقرأ الرسالة في الأرشيف" in response.text, path
        for path in (f"/c/{token}/x", "/c/", "/c/%0d%0aLocation:%20https://evil.example"):
            assert client.get(path).status_code == 404
        # Parameters added to a genuine link are ignored, never followed.
        extra = client.get(f"/c/{token}?url=https://evil.example&next=//evil.example")
        assert extra.headers["location"] == "https://outlet.example/story/1?from=rss&lang=ar"
    _wait_for_clicks(store, issue_id, 1, clicks=1)
    time.sleep(BURST + FLUSH + 0.5)
    assert {p: (s.clicks, s.machine_clicks) for p, s in store.clicks.by_story(issue_id).items()} == {
        0: (1, 0), 1: (1, 0)}, "only the genuine link counted"


def test_the_archive_links_straight_to_the_outlets(clicks_site):
    site, issue_id, messages = clicks_site
    page = httpx.get(f"{site.url}/archive/{SENT_DATE.isoformat()}", timeout=10).text
    assert "/c/" not in page and "NLLINK" not in page
    assert 'href="https://outlet.example/story/2?from=rss&amp;lang=ar"' in page


def test_stats_lists_issues_side_by_side_and_clicks_per_outlet(clicks_site, store, env):
    site, issue_id, messages = clicks_site
    with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        for reader in ("reader0@example.com", "reader1@example.com"):
            assert client.get(_links(messages[reader])[1][1]).status_code == 302
    _wait_for_clicks(store, issue_id, 2, clicks=2)
    store.unsubscribe(store.get_subscriber("reader2@example.com").id)

    table = run_cli("stats", "--from", "2026-12-01", "--to", "2026-12-31", env=env)
    spreadsheet = run_cli("stats", "--from", "2026-12-01", "--to", "2026-12-31", "--csv", env=env)

    assert table.returncode == 0, table.stderr
    assert "2026-12-06         3   0.00%   0.00%  33.33%  66.67%  الخبر رقم 2 (2)" in table.stdout, table.stdout
    assert "        2 reader(s)       2 click(s)    3 stor(ies)  وكالة" in table.stdout
    rows = spreadsheet.stdout.splitlines()
    assert rows[0].startswith("date,subject,delivered,bounce_rate")
    assert rows[1].startswith("2026-12-06,") and rows[1].endswith(",3,0.0000,0.0000,0.3333,0.6667,الخبر رقم 2,2")
    assert "وكالة,3,2,2" in rows


class _Outlet:
    """A news outlet's site on loopback: answers every story page, remembers what was asked for."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                seen.append(self.path)
                body = "<!doctype html><html lang=ar dir=rtl><title>الخبر</title><h1>صفحة الخبر</h1>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_in_chromium_the_emails_story_links_reach_the_outlet_and_count(settings, store, smtp_server, tmp_path):
    from playwright.sync_api import sync_playwright

    from .ports import free_port

    from .test_browser import CHROMIUM, QUIET
    from .test_web import live_site

    outlet = _Outlet()
    port = free_port()
    local = settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
    issue_id = _send_issue(local, store, outlet.url, readers=2)
    messages = {m.rcpt_to: m for m in smtp_server.handler.messages}
    try:
        with live_site(local, port), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
            for reader, agent in (("reader0@example.com", READER_AGENT), ("reader1@example.com", None)):
                eml = tmp_path / f"{reader}.eml"
                eml.write_bytes(messages[reader].raw)
                html = messages[reader].parsed().get_body(("html",)).get_content()
                # A reader's browser, then a headless one (as scanners run): the same email, story 2's headline.
                context = browser.new_context(user_agent=agent) if agent else browser.new_context()
                page = context.new_page()
                page.set_content(html)
                with page.expect_navigation(url=f"{outlet.url}/story/2?from=rss&lang=ar"):
                    page.get_by_role("link", name="الخبر رقم 2").click()
                assert page.get_by_role("heading", level=1).inner_text() == "صفحة الخبر"
                context.close()
            browser.close()
    finally:
        outlet.close()

    assert [p for p in outlet.seen if p.startswith("/story/")] == ["/story/2?from=rss&lang=ar"] * 2
    counts = store.clicks.by_story(issue_id)
    assert (counts[2].clicks, counts[2].machine_clicks, counts[2].unique_readers) == (1, 1, 1), \
        "the reader's click counts; HeadlessChrome's is a machine's"


def test_a_sigterm_in_the_middle_of_the_burst_loses_no_click(env, settings, store, smtp_server):
    import signal
    import subprocess
    import sys

    from .ports import free_port

    from .conftest import PROJECT

    port = free_port()
    local = settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
    issue_id = _send_issue(local, store, "https://outlet.example", readers=3)
    links = [link for m in smtp_server.handler.messages for link in _links(m)[1]]
    server = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
                              env={**env, "NEWSLETTER_BASE_URL": local.base_url}, cwd=PROJECT / "tests",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{local.base_url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.1)
        followed = 0
        with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
            for n in range(300):
                assert client.get(links[n % len(links)]).status_code == 302
                followed += 1
        server.send_signal(signal.SIGTERM)  # at once: the last clicks are still in the buffer
        # uvicorn stops gracefully, then re-raises the signal it caught: -15 after a clean shutdown.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
    whole = store.clicks.by_story(issue_id)[0]
    assert whole.clicks + whole.machine_clicks == followed == 300


@pytest.mark.sqlite_only
def test_while_the_store_is_locked_readers_are_still_redirected_and_the_clicks_wait(clicks_site, store, settings):
    import sqlite3

    site, issue_id, messages = clicks_site
    links = _links(messages["reader0@example.com"])[1]
    with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        assert client.get(links[0]).status_code == 302  # the issue's links are now in memory
        locker = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), timeout=1)
        locker.execute("BEGIN EXCLUSIVE")  # a long import or a send holding the write lock
        try:
            started = time.monotonic()
            time.sleep(BURST + 0.1)
            responses = [client.get(links[0]) for _ in range(20)]
            assert all(r.status_code == 302 for r in responses)
            assert time.monotonic() - started < BURST + 3, "the redirect never waits for the store"
        finally:
            time.sleep(1.5)
            locker.rollback()
            locker.close()
    _wait_for_clicks(store, issue_id, 1, clicks=21, timeout=30)


def test_past_its_bound_the_buffer_drops_clicks_and_says_how_many(caplog):
    import asyncio

    from newsletter.web.machines.clicks import ClickBuffer

    class DownStore:
        class clicks:  # noqa: N801 (the store's attribute)
            @staticmethod
            def record(*args) -> None:
                raise ConnectionError("the database server is not answering")

    buffer = ClickBuffer(DownStore(), salt_days=2, individual=False, burst_seconds=0, max_pending=5)
    for n in range(8):
        buffer.add(issue_id=1, place=1, subscriber_id=n, machine=False)
    assert asyncio.run(buffer.flush(everything=True)) == 0
    assert len(buffer.pending) == 5 and buffer.dropped == 3
    assert "3 click(s) dropped so far" in caplog.text
    assert "could not write 5 click(s), will retry" in caplog.text


@pytest.mark.parametrize("agent, machine", [
    (READER_AGENT, False),
    ("Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36", False),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", False),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
    ("TelegramBot (like TwitterBot)", True),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", True),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36", True),
    ("python-requests/2.32", True),
    ("", True),
])
def test_which_agents_are_machines(agent, machine):
    from newsletter.web.machines.clicks import MachineRules

    rules = MachineRules()
    assert rules.is_machine("GET", [(b"user-agent", agent.encode())]) is machine
    assert rules.is_machine("GET", [(b"user-agent", agent.encode())]) is machine, "the remembered verdict"
    assert rules.is_machine("HEAD", [(b"user-agent", agent.encode())]) is True
