"""Readers manage their own subscription (issue 26, items 2 and 5): from the manage link in the footer of
their issue they pause, change address, download their data, leave or are forgotten; readers who left
come back only by confirming. A real Chromium on the pages, the app under uvicorn over real HTTP,
real sends to the tests' SMTP server, on both stores.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import httpx
import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import func, select, update

from newsletter.config import Tracking
from .ports import free_port
from newsletter.store.clicks import Click
from newsletter.store.database import Status
from newsletter.store.feedback import Feedback, FeedbackKind
from newsletter.store.schema import address_changes, subscribers
from newsletter.tokens import Tokens
from newsletter.web.readers.manage import CHANGES_PER_HOUR
from newsletter.web.security import redact_token

from .conftest import SAMPLE_DATE, run_cli
from .test_browser import CHROMIUM, QUIET
from .test_desk import check_page
from .test_reader_links import SCANNER
from .test_web import live_site, wait_for_mail

ARABIC = re.compile(r"[\u0600-\u06FF]{3,}")


@pytest.fixture
def site(settings, env):
    port = free_port()
    local = settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}", "signup_rate_limit": 1000,
                                        "tracking": Tracking.individual})
    with live_site(local, port) as server:
        yield server, local, {**env, "NEWSLETTER_BASE_URL": server.url, "NEWSLETTER_TRACKING": "individual"}


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield browser
        browser.close()


def send(env: dict[str, str], day: dt.date) -> str:
    """The real `newsletter send` (Playwright's sync API keeps an event loop running in this process); its summary."""
    done = run_cli("send", "--date", day.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def issue_to(smtp, email: str):
    """The latest issue (a message with List-Id) delivered to `email`."""
    return [m for m in smtp.handler.messages if m.rcpt_to == email and m.parsed()["List-Id"]][-1].parsed()


def manage_link(message) -> str:
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    link = re.search(r'href="([^"]+/manage/[^"]+)"[^>]*>إدارة اشتراكك</a>', html).group(1)
    assert link in text, "the plain-text part has the same link"
    return link


def freeze_issue_on(store, day: dt.date) -> None:
    """The sample issue again, frozen for another day (the sample feeds have one morning)."""
    sample = store.get_issue(SAMPLE_DATE.isoformat())
    store.save_issue(day.isoformat(), sample.subject, sample.preheader, sample.html, sample.text, sample.stories)


def sent_to(smtp, day_count: int) -> list[str]:
    return [m.rcpt_to for m in smtp.handler.messages if m.parsed()["List-Id"]][day_count:]


def arabic_refusal(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert 'dir="rtl"' in response.text and ARABIC.search(response.text)


def test_a_reader_pauses_changes_address_downloads_leaves_and_is_forgotten(browser, site, store, smtp_server):
    server, settings, env = site
    for address, name in [("layla@example.com", "ليلى"), ("omar@example.org", "عمر"), ("rana@example.net", "")]:
        store.add_subscriber(address, name, Status.active)
    send(env, SAMPLE_DATE)
    link = manage_link(issue_to(smtp_server, "layla@example.com"))
    layla = store.get_subscriber("layla@example.com").id
    store.clicks.record([Click(store.get_issue(SAMPLE_DATE.isoformat()).id, 1, layla, False,
                               dt.datetime.now(dt.timezone.utc))], 2, individual=True)

    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True,
                            accept_downloads=True)
    page.goto(link)
    check_page(page, "manage")

    # Pause for two weeks, by keyboard alone: the first choice, the arrow to the second, Enter on the button.
    page.get_by_label("أسبوع", exact=True).focus()
    page.keyboard.press("ArrowDown")
    assert page.get_by_label("أسبوعان").is_checked()
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "تعود إليك" in page.get_by_role("status").inner_text()
    check_page(page, "manage-paused")
    with store.engine.connect() as conn:
        today = dt.date.fromisoformat(str(conn.execute(select(func.current_date())).scalar())[:10])
        until = conn.execute(select(subscribers.c.paused_until).where(subscribers.c.id == layla)).scalar()
    assert until == (today + dt.timedelta(weeks=2)).isoformat(), "two weeks from the database's date"

    before = len(sent_to(smtp_server, 0))
    freeze_issue_on(store, dt.date.fromisoformat(until) - dt.timedelta(days=1))
    assert "paused 1;" in send(env, dt.date.fromisoformat(until) - dt.timedelta(days=1))
    assert sorted(sent_to(smtp_server, before)) == ["omar@example.org", "rana@example.net"], "the pause is kept"
    shown = run_cli("status", "--date", (dt.date.fromisoformat(until) - dt.timedelta(days=1)).isoformat(), env=env)
    assert "paused 1 " in shown.stdout
    before = len(sent_to(smtp_server, 0))
    freeze_issue_on(store, dt.date.fromisoformat(until))
    assert "paused 0;" in send(env, dt.date.fromisoformat(until))
    assert "layla@example.com" in sent_to(smtp_server, before), "back on the date"

    # A new address: confirmed by its owner; until then, and after, the old one gets nothing more.
    page.get_by_label("عنوانك الجديد").fill("layla.new@example.com")
    with page.expect_navigation():
        page.get_by_role("button", name="غيّر العنوان").click()
    assert "أرسلنا رابط تأكيد" in page.get_by_role("status").inner_text()
    confirmation = _wait_for(smtp_server, "layla.new@example.com")
    change = re.search(r"http://127\.0\.0\.1:\d+/change/\S+", confirmation.get_body(("plain",)).get_content()).group(0)
    assert store.get_subscriber("layla@example.com").id == layla, "nothing changes before the new owner confirms"
    second = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)
    second.goto(change)
    check_page(second, "change")
    with second.expect_navigation():
        second.get_by_role("button", name="أكّد العنوان الجديد").click()
    assert "layla.new@example.com" in second.get_by_role("heading", level=2).evaluate("h => h.parentElement.innerText")
    assert store.get_subscriber("layla@example.com") is None
    assert store.get_subscriber("layla.new@example.com").id == layla
    before = len(sent_to(smtp_server, 0))
    next_day = dt.date.fromisoformat(until) + dt.timedelta(days=1)
    freeze_issue_on(store, next_day)
    send(env, next_day)
    assert "layla.new@example.com" in sent_to(smtp_server, before)
    assert "layla@example.com" not in sent_to(smtp_server, before), "the old address gets nothing"

    # Download: the address, the name, the history, the deliveries and (individual tracking) the clicks.
    page.goto(link)
    with page.expect_download() as download:
        page.get_by_role("button", name="نزّل بياناتي").click()
    data = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert data["email"] == "layla.new@example.com" and data["name"] == "ليلى"
    assert [e["status"] for e in data["status_history"]][0] == "signed_up"
    assert {d["issue"] for d in data["deliveries"]} == {SAMPLE_DATE.isoformat(), until, next_day.isoformat()}
    assert [(c["issue"], c["story"]) for c in data["clicks"]] == [(SAMPLE_DATE.isoformat(), 1)]

    # Leave, the same as one-click unsubscribe.
    page.goto(link)
    with page.expect_navigation():
        page.get_by_role("button", name="ألغِ اشتراكي").click()
    check_page(page, "manage-left")
    assert store.get_subscriber("layla.new@example.com").status == Status.unsubscribed.value

    # Forget another reader: erased, as `subscribers forget` does.
    page.goto(manage_link(issue_to(smtp_server, "omar@example.org")))
    with page.expect_navigation():
        page.get_by_role("button", name="احذف بياناتي").click()
    assert "حُذفت بياناتك" in page.get_by_role("heading", level=2).inner_text()
    assert store.get_subscriber("omar@example.org") is None
    assert store.suppressed_hashes([Tokens(settings.secret_key).email_hash("omar@example.org")]), \
        "no import brings them back"

    # A forged manage link, and an expired address link: a clear Arabic page each.
    response = page.goto(link[:-3] + "aaa")
    assert response.status == 400 and "غير صالح" in page.get_by_role("heading", level=2).inner_text()
    check_page(page, "manage-forged")
    expired = _expired_change_link(server, store, settings, "rana@example.net", "rana.new@example.net")
    response = page.goto(expired)
    assert response.status == 400 and "انتهت صلاحية" in page.get_by_role("heading", level=2).inner_text()


def _wait_for(smtp, email: str, timeout: float = 10, subject: str = ""):
    """The latest message to `email` (whose subject has `subject`), waiting for it to arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in smtp.handler.messages if m.rcpt_to == email and subject in m.parsed()["Subject"]]
        if found:
            return found[-1].parsed()
        time.sleep(0.02)
    raise AssertionError(f"no message to {email}")


def _expired_change_link(server, store, settings, email: str, new_email: str) -> str:
    change_id = store.choices.request_change(store.get_subscriber(email).id, new_email)
    with store.engine.begin() as conn:
        conn.execute(update(address_changes).where(address_changes.c.id == change_id).values(
            created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=settings.confirm_max_age_days + 1)))
    return f"{server.url}/change/{Tokens(settings.secret_key).change_token(change_id)}"


@pytest.fixture
def client(site):
    server, _, _ = site
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def snapshot(store) -> list[tuple]:
    """Every reader and every waiting address change, as they stand."""
    with store.engine.connect() as conn:
        readers = conn.execute(select(subscribers.c.id, subscribers.c.email, subscribers.c.status,
                                      subscribers.c.paused_until).order_by(subscribers.c.id)).all()
        changes = conn.execute(select(address_changes.c.id, address_changes.c.new_email)).all()
    return [tuple(r) for r in readers] + [("change", *c) for c in changes]


def test_scanners_change_nothing_and_bad_input_is_refused_in_arabic(client, site, store, smtp_server):
    server, settings, _ = site
    tokens = Tokens(settings.secret_key)
    store.add_subscriber("reader@example.com", "قارئ", Status.active)
    store.add_subscriber("taken@example.com", "", Status.unsubscribed)
    reader = store.get_subscriber("reader@example.com").id
    manage = f"/manage/{tokens.manage_token(reader)}"
    change_id = store.choices.request_change(reader, "next@example.com")
    change = f"/change/{tokens.change_token(change_id)}"
    before = snapshot(store)

    for _ in range(2):  # a scanner opens every link, more than once
        for path in (manage, change):
            assert client.head(path, headers=SCANNER).status_code == 200
            shown = client.get(path, headers=SCANNER)
            assert shown.status_code == 200 and 'dir="rtl"' in shown.text
            assert shown.headers["cache-control"] == "no-store"
            assert f'action="{server.url}{path}"' in shown.text, "the page's button posts back to the link"
    assert snapshot(store) == before, "GET and HEAD changed nothing"
    assert (redact_token(manage), redact_token(change)) == ("/manage/<token>", "/change/<token>"), \
        "the access log keeps no token"

    forged_manage = manage[:-4] + ("aaaa" if not manage.endswith("aaaa") else "bbbb")
    forged_change = change[:-4] + ("aaaa" if not change.endswith("aaaa") else "bbbb")
    for path in (forged_manage, forged_change, "/manage/u1-" + "a" * 16, "/change/not-a-token"):
        arabic_refusal(client.get(path), 400)
        arabic_refusal(client.post(path, data={"action": "leave"}), 400)
    arabic_refusal(client.post(manage, data={"action": "address", "email": "not an address"}), 422)
    arabic_refusal(client.post(manage, data={"action": "address", "email": "reader@example.com"}), 400)
    arabic_refusal(client.post(manage, data={"action": "pause", "weeks": "3"}), 400)
    arabic_refusal(client.post(manage, data={"action": "pause", "weeks": "-1"}), 400)
    arabic_refusal(client.post(manage, data={"action": "drop tables"}), 400)
    arabic_refusal(client.post(manage, content=b"\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"}), 400)
    oversized = {"action": "leave", "padding": "x" * (settings.max_request_bytes + 1)}
    assert client.post(manage, data=oversized).status_code == 413
    assert client.post(change, data={"padding": "x" * (settings.max_request_bytes + 1)}).status_code == 413
    assert snapshot(store) == before, "no refused request changed anything"

    # A taken address gets the same answer as a free one, and no mail goes to it.
    mails = len(smtp_server.handler.messages)
    taken = client.post(manage, data={"action": "address", "email": "Taken@Example.com"})
    assert taken.status_code == 200 and "أرسلنا رابط تأكيد" in taken.text
    assert snapshot(store) == before and len(smtp_server.handler.messages) == mails

    # At most CHANGES_PER_HOUR requests an hour (the taken one counted): each would mail an address of their choosing.
    for n in range(1, CHANGES_PER_HOUR):
        assert client.post(manage, data={"action": "address", "email": f"try{n}@example.com"}).status_code == 200
    _wait_for(smtp_server, f"try{CHANGES_PER_HOUR - 1}@example.com")
    mails = len(smtp_server.handler.messages)
    arabic_refusal(client.post(manage, data={"action": "address", "email": "one.more@example.com"}), 429)
    time.sleep(0.3)
    assert len(smtp_server.handler.messages) == mails
    assert not [c for c in snapshot(store) if c[0] == "change" and c[2] == "one.more@example.com"]
    change_id = store.choices.request_change(reader, "next@example.com")  # the latest request wins
    change = f"/change/{tokens.change_token(change_id)}"

    # The address link: the button acts once; a replay, or a link replaced by a later request, is refused.
    done = client.post(change)
    assert done.status_code == 200 and "next@example.com" in done.text
    assert store.get_subscriber("next@example.com").id == reader
    after = snapshot(store)
    arabic_refusal(client.post(change), 400)
    arabic_refusal(client.get(change), 400)
    first = store.choices.request_change(reader, "third@example.com")
    store.choices.request_change(reader, "fourth@example.com")
    arabic_refusal(client.post(f"/change/{tokens.change_token(first)}"), 400)
    # An address that came onto the list after the request: nothing changes.
    late = store.choices.request_change(reader, "late@example.com")
    store.add_subscriber("late@example.com", "", Status.pending)
    arabic_refusal(client.post(f"/change/{tokens.change_token(late)}"), 409)
    assert store.get_subscriber("next@example.com").id == reader
    assert [r for r in snapshot(store) if r[0] != "change" and r[1] != "late@example.com"] == \
        [r for r in after if r[0] != "change"]


def test_readers_who_left_come_back_only_by_confirming(client, site, store, smtp_server):
    tokens = Tokens(site[1].secret_key)
    store.add_subscriber("left@example.com", "", Status.unsubscribed)
    store.add_subscriber("bounced@example.com", "", Status.bounced)
    store.add_subscriber("complained@example.com", "", Status.active)
    complainer = store.get_subscriber("complained@example.com").id
    store.feedback.record(Feedback(complainer, FeedbackKind.complaint, "arf-1"), soft_limit=3, soft_days=30)
    assert store.get_subscriber("complained@example.com").status == Status.unsubscribed.value

    # An import or `subscribers add` never brings them back silently.
    assert store.add_subscribers([("left@example.com", ""), ("bounced@example.com", ""),
                                  ("complained@example.com", "")], Status.active) == 0
    for address in ("left@example.com", "bounced@example.com", "complained@example.com"):
        assert store.get_subscriber(address).status != Status.active.value
        assert client.post("/subscribe", data={"email": address}).status_code == 200
        received = _wait_for(smtp_server, address)
        assert store.get_subscriber(address).status == Status.pending.value, "pending until confirmed"
        link = re.search(r"https?://[^/\s]+(/confirm/\S+)", received.get_body(("plain",)).get_content()).group(1)
        assert client.get(link).status_code == 200
        assert store.get_subscriber(address).status == Status.pending.value, "a scanner's GET confirms nothing"
        assert client.post(link).status_code == 200
        assert store.get_subscriber(address).status == Status.active.value
    welcome = _wait_for(smtp_server, "complained@example.com", subject="أهلًا بك")
    assert f"/manage/{tokens.manage_token(complainer)}" in welcome.get_body(("plain",)).get_content(), \
        "the welcome links the manage page too"
