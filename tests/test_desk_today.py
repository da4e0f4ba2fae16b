"""The desk's today page (/desk/today) and the send's live view (/desk/send), under uvicorn over real
HTTP: Chromium steers, approves and sends a test to a real SMTP server; the real `newsletter send`
is watched from the desk while a real SMTP server holds its messages.

The bundled sample feeds are of 9 May 2017; here they are moved in time (tmp copies) so that today's
edition window holds what that morning's held.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller

from newsletter import edition
from newsletter.config import SAMPLE_FEEDS_DIR
from newsletter.issue.editorial import editorial_path
from .ports import free_port
from newsletter.store.feedback import Feedback
from newsletter.store.schema import FeedbackKind

from .conftest import PROJECT, SAMPLE_DATE, RecordingHandler
from .test_desk import (EDITOR, EVIL, actions, add_editor, browser, browser_sign_in, check_page, cookie,  # noqa: F401
                        csrf_of, desk, editors, http, signed_in)

RSS_DATE = re.compile(r"<(pubDate|lastBuildDate)>([^<]+)</\1>")
ATOM_DATE = re.compile(r"<(published|updated)>([^<]+)</\1>")


def todays_feeds(folder: Path, settings) -> list[str]:
    """Copies of the sample feeds, every date moved by as much as today's edition is after 9 May 2017's."""
    sample_cutoff = dt.datetime.combine(SAMPLE_DATE, settings.edition_time, tzinfo=settings.zone)
    shift = edition.window_end(settings, edition.today(settings)) - sample_cutoff

    def rss(match: re.Match) -> str:
        moved = email.utils.parsedate_to_datetime(match.group(2)) + shift
        return f"<{match.group(1)}>{email.utils.format_datetime(moved)}</{match.group(1)}>"

    def atom(match: re.Match) -> str:
        moved = dt.datetime.fromisoformat(match.group(2).replace("Z", "+00:00")) + shift
        return f"<{match.group(1)}>{moved.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}</{match.group(1)}>"

    folder.mkdir(parents=True, exist_ok=True)
    feeds = []
    for sample in sorted([*SAMPLE_FEEDS_DIR.glob("*.xml"), *SAMPLE_FEEDS_DIR.glob("*.atom")]):
        text = ATOM_DATE.sub(atom, RSS_DATE.sub(rss, sample.read_text(encoding="utf-8")))
        (folder / sample.name).write_text(text, encoding="utf-8")
        feeds.append(str(folder / sample.name))
    return feeds


@pytest.fixture
def desk_settings(settings, tmp_path):
    """The desk's settings (as tests/test_desk.py's), with feeds of today."""
    port = free_port()
    return settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}", "desk_login_limit": 1000,
                                       "desk_login_client_limit": 1000,
                                       "feeds": todays_feeds(tmp_path / "feeds", settings)})


def today_of(settings) -> str:
    return edition.today(settings).isoformat()


def form_values(page: str, name: str) -> list[str]:
    return re.findall(rf'name="{name}" value="([^"]*)"', page)


def frame_text(page) -> str:
    return page.frame_locator("iframe.desk-email").locator("body").inner_text()


# --- Chromium steers, approves and sends a test ------------------------------------------------


def test_an_editor_steers_approves_and_tests_the_issue_from_a_phone(browser, desk, desk_settings, editors, store,
                                                                    smtp_server):
    add_editor(editors)
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)
    browser_sign_in(page, desk.url)
    page.goto(f"{desk.url}/desk/today")
    assert page.get_by_role("link", name="التحرير والموافقة").get_attribute("aria-current") == "page"
    check_page(page, "today")
    first = page.locator("#headline-1").inner_text()
    first_url = page.locator("#headline-1").get_attribute("href")
    assert first in frame_text(page), "the email shows the lead story"

    with page.expect_navigation():
        page.locator("#story-1").get_by_role("button", name="احذفه من الرسالة").click()
    assert first not in page.locator("#chosen ol").inner_text(), "the dropped story left the issue"
    assert first in page.locator("#left-out").inner_text()
    assert first not in frame_text(page), "the email changed with it"
    assert page.locator("#headline-1").inner_text() in frame_text(page)

    headline = "عنوان كتبه المحرّر على المكتب"
    page.locator("#story-1").get_by_text("عدّل العنوان والملخص").click()
    page.locator("#story-1").get_by_label("العنوان").fill(headline)
    with page.expect_navigation():
        page.locator("#story-1").get_by_role("button", name="احفظ التعديل").click()
    assert page.locator("#headline-1").inner_text() == headline
    assert headline in frame_text(page)

    # With the keyboard alone: the intro's field, then its button.
    intro = "صباح الخير: هذا ما جرى في العالم أمس."
    page.get_by_label("الافتتاحية").focus()
    page.keyboard.type(intro)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "احفظ الافتتاحية"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert intro in frame_text(page)

    with page.expect_navigation():
        page.get_by_role("button", name="وافق على هذه الرسالة للإرسال").click()
    assert "وافقتَ على هذه الرسالة" in page.inner_text("main")
    assert EDITOR in page.locator("#approved").inner_text()
    approval = store.approvals.of(today_of(desk_settings))
    assert approval is not None and approval.approved_by == EDITOR
    check_page(page, "today-approved")

    with page.expect_navigation():
        page.get_by_role("button", name="أرسلها إلى بريدي").click()
    assert "أُرسلت نسخة تجريبية" in page.inner_text("#test")
    [received] = smtp_server.handler.messages
    message = received.parsed()
    assert received.rcpt_to == EDITOR and EDITOR in message["To"]
    assert message["Subject"].startswith("[تجربة]")
    assert headline in message.get_body(("html",)).get_content(), "the test is the issue as approved"

    day = today_of(desk_settings)
    done = [(who, what, detail) for who, what, detail in actions(store) if what.startswith("issue-")]
    assert [(who, what) for who, what, _ in done] == [
        (EDITOR, "issue-drop"), (EDITOR, "issue-edit"), (EDITOR, "issue-intro"), (EDITOR, "issue-approve"),
        (EDITOR, "issue-test")]
    assert all(detail.startswith(day) for _, _, detail in done)
    assert done[0][2] == f"{day} {first_url}"
    assert done[4][2] == f"{day} {EDITOR}"

    page.goto(f"{desk.url}/desk/audit")
    assert "وافق على العدد" in page.inner_text("main") and "حذف خبرًا من العدد" in page.inner_text("main")

    # Under the page's own policy (axe-core needed it lifted above), the email is framed all the same.
    plain = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar")
    browser_sign_in(plain, desk.url)
    plain.goto(f"{desk.url}/desk/today")
    assert headline in frame_text(plain)


# --- Versions, CSRF, headers -------------------------------------------------------------------


def test_a_change_made_on_an_older_version_is_refused_with_the_fresh_page(http, desk_settings, editors, store):
    add_editor(editors)
    token = signed_in(http)
    page = http.get("/desk/today", headers=cookie(token)).text
    version, csrf, urls = form_values(page, "version")[0], form_values(page, "csrf")[0], form_values(page, "url")
    dropped = http.post("/desk/today/steer", headers=cookie(token),
                        data={"csrf": csrf, "version": version, "url": urls[0], "action": "drop"})
    assert dropped.status_code == 303 and dropped.headers["location"] == "/desk/today#chosen"
    path = editorial_path(desk_settings.editorial_dir, edition.today(desk_settings))
    written = path.read_text(encoding="utf-8")
    assert urls[0] in written

    stale = http.post("/desk/today/steer", headers=cookie(token),
                      data={"csrf": csrf, "version": version, "url": urls[1], "action": "drop"})
    assert stale.status_code == 409
    assert "غيّر محرّر آخر هذه الرسالة للتو" in stale.text
    assert form_values(stale.text, "version")[0] != version, "the page shows the latest version"
    assert path.read_text(encoding="utf-8") == written, "nothing was written"
    stale_approval = http.post("/desk/today/steer", headers=cookie(token),
                               data={"csrf": csrf, "version": version, "action": "approve"})
    assert stale_approval.status_code == 409 and store.approvals.of(today_of(desk_settings)) is None
    assert [a for _, a, _ in actions(store) if a.startswith("issue-")] == ["issue-drop"]


def test_an_approval_of_an_issue_the_page_no_longer_shows_is_refused(http, desk_settings, editors, store):
    """The approve form names the email it showed: when the rebuilt issue differs (the feeds brought news
    between the page and the click), nothing is approved and the page shows the issue as it is now."""
    add_editor(editors)
    token = signed_in(http)
    page = http.get("/desk/today", headers=cookie(token)).text
    version, csrf, [shown] = form_values(page, "version")[0], form_values(page, "csrf")[0], form_values(page, "shown")
    assert len(shown) == 64

    other = http.post("/desk/today/steer", headers=cookie(token),
                      data={"csrf": csrf, "version": version, "shown": "0" * 64, "action": "approve"})
    assert other.status_code == 409 and "تغيّرت الرسالة منذ فتحت الصفحة" in other.text
    assert form_values(other.text, "shown") == [shown], "the fresh page names the issue it shows"
    assert store.approvals.of(today_of(desk_settings)) is None and store.get_issue(today_of(desk_settings)) is None

    approved = http.post("/desk/today/steer", headers=cookie(token),
                         data={"csrf": csrf, "version": version, "shown": shown, "action": "approve"})
    assert approved.status_code == 303
    assert store.approvals.of(today_of(desk_settings)).html_sha256 == shown, "what was shown is what is frozen"


def test_posts_without_the_sessions_token_or_from_another_site_change_nothing(http, desk_settings, editors, store,
                                                                             smtp_server):
    add_editor(editors)
    token = signed_in(http)
    page = http.get("/desk/today", headers=cookie(token)).text
    version, csrf, urls = form_values(page, "version")[0], form_values(page, "csrf")[0], form_values(page, "url")
    change = {"version": version, "url": urls[0], "action": "drop"}
    for path, fields, headers in (("/desk/today/steer", change, {}),
                                  ("/desk/today/steer", {**change, "csrf": "0" * 64}, {}),
                                  ("/desk/today/steer", {**change, "csrf": csrf}, {"Origin": EVIL}),
                                  ("/desk/today/steer", {"version": version, "action": "approve"}, {}),
                                  ("/desk/today/test", {"no-token": ""}, {}),
                                  ("/desk/today/test", {"csrf": csrf}, {"Origin": EVIL})):
        refused = http.post(path, data=fields, headers={**cookie(token), **headers})
        assert refused.status_code == 403, (path, fields, headers)
    assert not editorial_path(desk_settings.editorial_dir, edition.today(desk_settings)).exists()
    assert store.approvals.of(today_of(desk_settings)) is None and smtp_server.handler.messages == []
    signed_out = http.post("/desk/today/steer", data={**change, "csrf": csrf})
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/desk/sign-in")


def test_the_pages_are_private_and_only_the_email_is_framed_by_the_desk_itself(http, editors):
    add_editor(editors)
    token = signed_in(http)
    for path in ("/desk/today", "/desk/send", "/desk/send.json", "/desk/send.js"):
        response = http.get(path, headers=cookie(token))
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        assert response.headers["x-frame-options"] == "DENY", path
        assert http.get(path).status_code == 303, "signed out: sent to sign in"
    framed = http.get("/desk/today/email.html", headers=cookie(token))
    assert framed.status_code == 200 and framed.headers["cache-control"] == "no-store"
    policy = framed.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy and "sandbox" in policy and "script-src" not in policy
    assert framed.headers["x-frame-options"] == "SAMEORIGIN"
    assert "script-src 'self'" in http.get("/desk/send", headers=cookie(token)).headers["content-security-policy"]
    today_policy = http.get("/desk/today", headers=cookie(token)).headers["content-security-policy"]
    assert "script-src" not in today_policy and "frame-src 'self'" in today_policy


def test_a_broken_feed_is_a_line_on_the_page(desk_settings, editors, store):
    from .test_web import live_site

    broken = desk_settings.model_copy(update={"feeds": [*desk_settings.feeds, "http://127.0.0.1:9/gone.xml"],
                                              "feed_timeout": 2})
    with live_site(broken, urlsplit(broken.base_url).port) as server, \
            httpx.Client(base_url=server.url, timeout=20, headers={"Origin": server.url}) as client:
        add_editor(editors)
        token = signed_in(client)
        page = client.get("/desk/today", headers=cookie(token))
    assert page.status_code == 200
    assert "gone.xml" in page.text.split('id="failed-feeds"')[1]
    assert 'id="headline-1"' in page.text, "the other feeds make the issue"


# --- The morning's send, watched from the desk ----------------------------------------------------


@dataclass
class HeldHandler(RecordingHandler):
    """Takes the first `let_through` messages at once, then holds each one until `release` is set."""

    let_through: int = 3
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            held = len(self.messages) >= self.let_through
        while held and not self.release.is_set():
            await asyncio.sleep(0.05)
        return await super().handle_DATA(server, session, envelope)


def figure(page, name: str) -> str:
    return page.locator(f'dd[data-figure="{name}"]').inner_text()


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"the desk never showed {what}"
        time.sleep(0.1)


def test_the_morning_send_is_watched_on_the_desk_until_it_is_done(browser, desk, desk_settings, editors, store, env,
                                                                   http):
    add_editor(editors)
    for n in range(10):
        store.add_subscriber(f"reader{n}@example.org")
    handler = HeldHandler(refuse={"reader9@example.org": "550 5.1.1 no such mailbox here"})
    relay = Controller(handler, hostname="127.0.0.1", port=free_port(), decode_data=False)
    relay.start()
    # The page the editor watches keeps the site's policy (its own script, nothing else); axe-core
    # needs a page without it.
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar")
    checked = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)
    for each in (page, checked):
        browser_sign_in(each, desk.url)
        each.goto(f"{desk.url}/desk/send")
    assert page.locator('[data-state="none"]').is_visible(), "no issue yet"
    check_page(checked, "send-none")
    page.evaluate("window.stillTheSamePage = true")
    send_env = {**env, "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(relay.port),
                "NEWSLETTER_SMTP_CONNECTIONS": "2", "NEWSLETTER_FEEDS": ",".join(desk_settings.feeds)}
    sending = subprocess.Popen([sys.executable, "-m", "newsletter", "send"], env=send_env, cwd=PROJECT / "tests",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: figure(page, "delivered") == "3" and page.locator('[data-state="running"]').is_visible(),
                   "3 delivered while the relay holds the rest")
        assert int(figure(page, "pending")) > 0 and int(page.locator('span[data-figure="percent"]').inner_text()) < 100
        assert page.locator("#send-progress").get_attribute("value") is not None
        assert page.evaluate("document.getElementById('send-progress').value") >= 3
        checked.reload()
        check_page(checked, "send-running")

        handler.release.set()
        wait_until(lambda: page.locator('[data-state="complete"]').is_visible(), "the send complete")
        assert (figure(page, "delivered"), figure(page, "refused"), figure(page, "pending"),
                figure(page, "retrying")) == ("9", "1", "0", "0")
        assert page.locator('span[data-figure="percent"]').inner_text() == "100"
        assert page.locator('span[data-figure="total"]').inner_text() == "10"
        _, stderr = sending.communicate(timeout=60)
        assert sending.returncode == 0, stderr
        # Reports read after the send (`newsletter bounces`): a hard bounce and a complaint.
        day = today_of(desk_settings)
        for n, kind in ((0, FeedbackKind.hard), (1, FeedbackKind.complaint)):
            reader = store.get_subscriber(f"reader{n}@example.org")
            store.feedback.record(Feedback(reader.id, kind, f"report-{n}", day, "5.1.1"), 3, 7)
        wait_until(lambda: (figure(page, "bounced"), figure(page, "complained")) == ("1", "1"), "the reports")
        assert page.evaluate("window.stillTheSamePage"), "the figures changed in place, without a reload"
    finally:
        handler.release.set()
        if sending.poll() is None:
            sending.kill()
            sending.communicate()
        relay.stop()
    checked.reload()
    check_page(checked, "send-done")

    page.goto(f"{desk.url}/desk/today")  # frozen now: read only, with the way to the send
    assert store.get_issue(today_of(desk_settings)).subject[:20] in frame_text(page)
    frozen = page.frame_locator("iframe.desk-email").locator("body").inner_html()
    assert "NLUNSUBSCRIBE" not in frozen and "/unsubscribe\"" in frozen, "the shared copy: no reader's token"
    assert page.locator("#started").is_visible()
    assert page.locator("#subject").inner_text() == store.get_issue(today_of(desk_settings)).subject
    assert page.get_by_role("button", name="احذفه من الرسالة").count() == 0
    with page.expect_navigation():
        page.get_by_role("link", name="تابع الإرسال").click()
    assert page.locator('[data-state="complete"]').is_visible()
    checked.goto(f"{desk.url}/desk/today")
    check_page(checked, "today-sent")

    token = signed_in(http)  # a change posted from a page loaded before the send started
    refused = http.post("/desk/today/steer", headers=cookie(token), data={
        "csrf": csrf_of(http, token), "version": "none", "url": "https://example.org/x", "action": "drop"})
    assert refused.status_code == 409 and "بدأ إرسال هذا العدد، فلا يتغيّر بعد الآن" in refused.text
    assert not editorial_path(desk_settings.editorial_dir, edition.today(desk_settings)).exists()


def test_an_issue_that_cannot_be_built_is_neither_approved_nor_sent_as_a_test(desk_settings, editors, store,
                                                                               smtp_server):
    from .test_web import live_site

    nothing = desk_settings.model_copy(update={"feeds": ["http://127.0.0.1:9/gone.xml"], "feed_timeout": 2})
    with live_site(nothing, urlsplit(nothing.base_url).port) as server, \
            httpx.Client(base_url=server.url, timeout=20, headers={"Origin": server.url}) as client:
        add_editor(editors)
        token = signed_in(client)
        page = client.get("/desk/today", headers=cookie(token))
        assert page.status_code == 200 and 'id="build-error"' in page.text and "nothing to send" in page.text
        version, csrf = form_values(page.text, "version")[0], form_values(page.text, "csrf")[0]
        approve = client.post("/desk/today/steer", headers=cookie(token),
                              data={"csrf": csrf, "version": version, "action": "approve"})
        test = client.post("/desk/today/test", headers=cookie(token), data={"csrf": csrf})
    assert approve.status_code == 400 and "the issue cannot be built" in approve.text
    assert test.status_code == 409 and "تعذّر بناء الرسالة: أصلح ما تعرضه الصفحة أولًا" in test.text
    assert store.approvals.of(today_of(desk_settings)) is None and store.get_issue(today_of(desk_settings)) is None
    assert smtp_server.handler.messages == [] and not [a for _, a, _ in actions(store) if a.startswith("issue-")]


def test_an_editorial_file_broken_by_hand_is_undone_from_the_desk(http, desk_settings, editors, store):
    add_editor(editors)
    token = signed_in(http)
    page = http.get("/desk/today", headers=cookie(token)).text
    version, csrf, urls = form_values(page, "version")[0], form_values(page, "csrf")[0], form_values(page, "url")
    assert http.post("/desk/today/steer", headers=cookie(token),
                     data={"csrf": csrf, "version": version, "url": urls[0], "action": "drop"}).status_code == 303
    path = editorial_path(desk_settings.editorial_dir, edition.today(desk_settings))
    path.write_text(path.read_text(encoding="utf-8") + "lead = [\n", encoding="utf-8")  # a slip in an editor
    broken = http.get("/desk/today", headers=cookie(token)).text
    assert "invalid TOML" in broken and 'id="headline-1"' not in broken
    undone = http.post("/desk/today/steer", headers=cookie(token),
                       data={"csrf": csrf, "version": form_values(broken, "version")[0], "action": "undo"})
    assert undone.status_code == 303 and not path.exists(), "back to the day before any change"
    assert 'id="headline-1"' in http.get("/desk/today", headers=cookie(token)).text
    assert [a for _, a, _ in actions(store) if a.startswith("issue-")] == ["issue-drop", "issue-undo"]


def test_a_test_the_relay_refuses_says_why_on_the_page(http, desk_settings, editors, store, smtp_server):
    add_editor(editors)
    smtp_server.handler.refuse[EDITOR] = "550 5.7.1 relaying denied for this sender"
    token = signed_in(http)
    refused = http.post("/desk/today/test", headers=cookie(token), data={"csrf": csrf_of(http, token)})
    assert refused.status_code == 502
    assert "لم تُرسل النسخة التجريبية" in refused.text and "relaying denied" in refused.text
    assert smtp_server.handler.messages == [] and store.get_issue(today_of(desk_settings)) is None
    assert not [a for _, a, _ in actions(store) if a.startswith("issue-")]
