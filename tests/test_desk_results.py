"""The desk's results (issue 25): the issue history, one issue's clicks and the list's growth, on both
stores. The figures are made through the real paths (signups and confirmations on the live site, a
real send to aiosmtpd by the CLI, clicks through /c/, a one-click unsubscribe, a bounce report read by
the bounce reader, a refusal at send time) and read by Chromium from the pages, charts included.

The growth charts run right to left: the oldest day at the right edge, the newest (today) at the left.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import httpx
import pytest
from sqlalchemy import func, insert, select

from newsletter.mail.bounce_reader import read_bounces
from newsletter.store.list_changes import QUARTER_SECONDS, Change, count_change
from newsletter.store.schema import list_changes
from newsletter.tokens import Tokens
from newsletter.web.machines.clicks import BURST_SECONDS

from .conftest import SAMPLE_DATE, run_cli
from .test_bounces import report
from .test_clicks import READER_AGENT, _links, _wait_for_clicks
from .test_desk import (  # noqa: F401  (fixtures)
    add_editor,
    browser,
    browser_sign_in,
    check_page,
    cookie,
    desk,
    desk_settings,
    editors,
    http,
    signed_in,
)
from .test_web import wait_for_mail

BOUNCES = "bounces@news.example"
READERS = ["amal@example.com", "basel@example.com", "carim@example.com", "dalia@example.com",
           "elias@example.com"]


def _confirm_link(received) -> str:
    text = received.parsed().get_body(("plain",)).get_content()
    return re.search(r"https?://\S+/confirm/\S+", text).group(0)


def _today(store, settings) -> dt.date:
    return store.changes.today(settings.zone)


@pytest.fixture
def results_site(desk, desk_settings, editors, store, env, smtp_server, tmp_path):
    """An issue's whole life on the live site: five sign up, four confirm, the CLI sends (one refused),
    two readers click, one unsubscribes, one bounces. Returns (site, issue)."""
    add_editor(editors)
    site_env = {**env, "NEWSLETTER_BASE_URL": desk_settings.base_url}
    with httpx.Client(base_url=desk.url, timeout=10) as client:
        for address in READERS:
            assert client.post("/subscribe", data={"email": address, "website": ""}).status_code == 200
        wait_for_mail(smtp_server.handler, len(READERS))
        links = {m.rcpt_to: _confirm_link(m) for m in smtp_server.handler.messages}
        for address in READERS[:4]:  # elias stays pending
            assert client.post(links[address]).status_code == 200
        wait_for_mail(smtp_server.handler, len(READERS) + 4)  # and a welcome each
    smtp_server.handler.messages.clear()

    smtp_server.handler.refuse["dalia@example.com"] = "550 5.1.1 <dalia@example.com>: no such user"
    sent = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=site_env)
    assert sent.returncode == 0, sent.stderr
    assert sorted(smtp_server.handler.recipients()) == READERS[:3]
    issue = store.get_issue(SAMPLE_DATE.isoformat())
    messages = {m.rcpt_to: m for m in smtp_server.handler.messages}

    with httpx.Client(timeout=10, headers={"User-Agent": READER_AGENT}) as client:
        amal, basel = _links(messages["amal@example.com"])[1], _links(messages["basel@example.com"])[1]
        assert client.get(amal[0]).status_code == 302
        assert client.get(basel[0]).status_code == 302
        time.sleep(BURST_SECONDS + 0.3)  # one reader's links followed within the burst: a scanner
        assert client.get(basel[1]).status_code == 302
        unsubscribe = messages["carim@example.com"].parsed()["List-Unsubscribe"].strip("<>")
        assert client.post(unsubscribe, content="List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
    _wait_for_clicks(store, issue.id, 1, clicks=2)
    _wait_for_clicks(store, issue.id, 2, clicks=1)

    basel_id = store.get_subscriber("basel@example.com").id
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(report("postfix_hard_5.1.1.eml", Tokens(desk_settings.secret_key), basel_id,
                              "basel@example.com", SAMPLE_DATE))
    bounce_settings = desk_settings.model_copy(update={"bounce_address": BOUNCES})
    run = read_bounces(bounce_settings, store, [str(bounce)], None, tmp_path / "kept", False, lambda *_: None)
    assert run.complete
    assert [store.get_subscriber(a).status for a in READERS] == ["active", "bounced", "unsubscribed", "bounced",
                                                                  "pending"]
    return desk, issue


def test_the_history_the_issue_and_the_growth_read_in_chromium_from_a_phone(results_site, browser, store,
                                                                           desk_settings, env):
    site, issue = results_site
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)
    browser_sign_in(page, site.url)

    with page.expect_navigation():
        page.get_by_role("link", name="الأعداد ونتائجها").click()
    assert page.url == f"{site.url}/desk/issues"
    assert page.locator(".desk-parts a[aria-current=page]").inner_text() == "الأعداد ونتائجها"
    check_page(page, "issues")
    row = page.locator(f"tr[data-issue='{SAMPLE_DATE.isoformat()}']")
    figures = {cell.get_attribute("data-figure"): cell.inner_text() for cell in row.locator("td").all()}
    # Of the 3 delivered: basel's bounce report, carim's unsubscribe, amal and basel clicked.
    assert figures == {"delivered": "3", "bounces": "33.3%", "complaints": "0.0%", "unsubscribes": "33.3%",
                       "clicked": "66.7%"}
    assert issue.subject in row.inner_text()
    stats = run_cli("stats", "--from", SAMPLE_DATE.isoformat(), "--to", SAMPLE_DATE.isoformat(), "--csv",
                    env={**env, "NEWSLETTER_BASE_URL": desk_settings.base_url})
    assert stats.stdout.splitlines()[1].startswith(f"{SAMPLE_DATE.isoformat()},") and \
        ",3,0.3333,0.0000,0.3333,0.6667," in stats.stdout, "the same figures as `newsletter stats`"

    with page.expect_navigation():
        row.get_by_role("link").click()
    assert page.url == f"{site.url}/desk/issues/{SAMPLE_DATE.isoformat()}"
    assert page.locator("script").count() == 0, "charts drawn on the server: no script, no CDN"
    check_page(page, "issue")
    chart = page.locator("svg[data-series=stories]")
    assert chart.get_attribute("role") == "img" and chart.locator("title").first.text_content()
    bars = {int(b.get_attribute("data-place")): int(b.get_attribute("data-value"))
            for b in chart.locator("rect").all()}
    assert bars == {place: {1: 2, 2: 1}.get(place, 0) for place in range(1, len(issue.stories) + 1)}
    lead, second = (page.locator(f"rect[data-place='{n}']").bounding_box() for n in (1, 2))
    assert lead["y"] < second["y"], "the lead at the top"
    assert abs((lead["x"] + lead["width"]) - (second["x"] + second["width"])) < 1, "bars grow from the right"
    assert lead["width"] > second["width"] * 1.9
    lead_row = page.locator("tr[data-place='1']")
    assert {c.get_attribute("data-figure"): c.inner_text() for c in lead_row.locator("td").all()} == \
        {"clicks": "2", "readers": "2", "machines": "0"}
    assert issue.stories[0]["title"] in lead_row.inner_text()

    with page.expect_navigation():
        page.get_by_role("link", name="نموّ القائمة").click()
    check_page(page, "growth")
    today = store.changes.today(desk_settings.zone)
    wanted = {"signups": 5, "confirmations": 4, "unsubscribes": 1, "bounces": 2, "net": 1}
    for series, value in wanted.items():
        chart = page.locator(f"svg[data-series={series}]")
        assert chart.get_attribute("aria-labelledby") == f"{series}-title {series}-desc"
        days = [b.get_attribute("data-day") for b in chart.locator("rect").all()]
        assert days == [(today - dt.timedelta(days=29 - n)).isoformat() for n in range(30)], "a bar a day, oldest first"
        assert chart.locator(f"rect[data-day='{today.isoformat()}']").get_attribute("data-value") == str(value)
        oldest = chart.locator("rect").first.bounding_box()
        newest = chart.locator("rect").last.bounding_box()
        assert newest["x"] < oldest["x"], f"{series}: time runs right to left, today at the left"
        assert oldest["x"] + oldest["width"] > page.viewport_size["width"] * 0.7
    today_row = page.locator(f"tbody tr[data-day='{today.isoformat()}']")
    assert {c.get_attribute("data-figure"): int(c.inner_text()) for c in today_row.locator("td").all()} == wanted
    assert page.locator("tbody tr").count() == 30
    assert page.locator("tbody tr").first.get_attribute("data-day") == today.isoformat(), "newest first"
    assert {t.get_attribute("data-total"): int(t.inner_text()) for t in page.locator("[data-total]").all()} == wanted

    # With the keyboard alone: from the period shown to the other one.
    page.get_by_role("link", name="آخر 30 يومًا").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "آخر 90 يومًا"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{site.url}/desk/growth?days=90"
    check_page(page, "growth-90")
    assert page.locator("svg[data-series=net] rect").count() == 90
    assert page.locator("tbody tr").count() == 90


def test_the_history_is_paged_by_keyset_newest_first(desk, http, editors, store):
    add_editor(editors)
    token = signed_in(http)
    first = dt.date(2026, 10, 1)
    for n in range(25):
        day = (first + dt.timedelta(days=n)).isoformat()
        store.save_issue(day, f"عدد {day}", "", "<p>عدد</p>", "عدد", [])
    newest = http.get("/desk/issues", headers=cookie(token))
    shown = re.findall(r'data-issue="([0-9-]+)"', newest.text)
    assert shown == [(first + dt.timedelta(days=24 - n)).isoformat() for n in range(20)]
    older = re.search(r'href="[^"]*/desk/issues\?before=([0-9-]+)"', newest.text).group(1)
    assert older == shown[-1]
    rest = http.get(f"/desk/issues?before={older}", headers=cookie(token))
    assert re.findall(r'data-issue="([0-9-]+)"', rest.text) == \
        [(first + dt.timedelta(days=4 - n)).isoformat() for n in range(5)]
    assert "?before=" not in rest.text, "the last page links to no older one"
    for path in ("/desk/issues?before=yesterday", "/desk/issues/2026-13-01", "/desk/issues/1999-01-01",
                 "/desk/growth?days=7"):
        missing = http.get(path, headers=cookie(token))
        assert missing.status_code == 404 and "لم نجد" in missing.text, path
    for path in ("/desk/issues", "/desk/issues/2026-10-01", "/desk/growth"):
        answer = http.get(path, headers=cookie(token))
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"
        assert http.get(path).status_code == 303, "signed-in editors only"


def test_the_list_changes_count_each_change_once_and_outlive_the_readers(store, settings):
    assert store.request_subscription("rana@example.com") is not None
    assert store.request_subscription("rana@example.com") is None, "asking again is not another signup"
    rana = store.get_subscriber("rana@example.com")
    store.unsubscribe(rana.id)  # pending: never among the readers
    store.request_subscription("rana@example.com")  # back after leaving: a signup
    assert store.confirm(rana.id) and store.confirm(rana.id), "confirmed once, pressed twice"
    store.unsubscribe(rana.id)
    store.unsubscribe(rana.id)
    assert store.forget("rana@example.com", "0" * 64)
    today = _today(store, settings)
    [day] = store.changes.per_day(today, today, settings.zone)
    assert (day.signups, day.confirmations, day.unsubscribes, day.bounces, day.net) == (2, 1, 1, 0, 0), \
        "the counts stay when the reader is forgotten"


def test_days_are_the_newsrooms_days(store, settings):
    """A quarter hour belongs to the day of the newsroom's time zone it falls in (UTC+5:45 and −3:30 too)."""
    from zoneinfo import ZoneInfo

    for name in ("Asia/Kathmandu", "America/St_Johns", "Asia/Riyadh"):
        zone = ZoneInfo(name)
        day = dt.date(2026, 3, 1)
        midnight = dt.datetime.combine(day, dt.time(), zone).timestamp()
        with store.engine.begin() as conn:
            conn.execute(list_changes.delete())
            conn.execute(insert(list_changes), [
                {"quarter": int(midnight // QUARTER_SECONDS) - 1, "kind": "signup", "count": 7},  # 23:45 the day before
                {"quarter": int(midnight // QUARTER_SECONDS), "kind": "signup", "count": 1},  # 00:00
                {"quarter": int(midnight // QUARTER_SECONDS) + 95, "kind": "bounce", "count": 2},  # 23:45
                {"quarter": int(midnight // QUARTER_SECONDS) + 96, "kind": "bounce", "count": 5},  # the next day
            ])
        before, on, after = store.changes.per_day(day - dt.timedelta(days=1), day + dt.timedelta(days=1), zone)
        assert (before.signups, on.signups, on.bounces, after.bounces) == (7, 1, 2, 5), name


def test_counts_made_in_one_quarter_hour_add_up(store):
    with store.engine.begin() as conn:
        count_change(conn, Change.signup, 3)
        count_change(conn, Change.signup)
        count_change(conn, Change.bounce, 0)
    with store.engine.connect() as conn:
        rows = conn.execute(select(list_changes.c.kind, func.sum(list_changes.c.count))
                            .group_by(list_changes.c.kind)).all()
    assert dict(rows) == {"signup": 4}


def test_a_database_at_0009_is_upgraded_and_counts_from_then_on(database_url, env, settings):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from newsletter.store.database import Store

    from .test_migrations import alembic_config

    engine = create_engine(database_url)
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "0009")
        conn.commit()
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0 and "to 0010" in upgraded.stdout, upgraded.stderr
    store = Store(database_url)
    try:
        store.request_subscription("first@example.com")
        today = _today(store, settings)
        assert store.changes.per_day(today, today, settings.zone)[0].signups == 1
    finally:
        store.close()
    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0009")
        conn.commit()
        assert "list_changes" not in inspect(conn).get_table_names()
    engine.dispose()
