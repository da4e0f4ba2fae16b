"""A real headless Chromium (Debian's) fills in the signup form on the RTL page, at phone width, confirms, and
opens the welcome that follows."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from .ports import free_port
from newsletter.store.database import Status

from .test_web import live_site, wait_for_mail

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Without these, Chromium keeps trying to reach Google's services, which this closed network refuses.
QUIET = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield browser
        browser.close()


@pytest.fixture
def site(settings):
    port = free_port()
    local = settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}", "signup_rate_limit": 100})
    with live_site(local, port) as server:
        yield server


def test_reader_signs_up_from_a_phone(browser, site, store, smtp_server):
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar")
    page.goto(site.url + "/")

    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    assert page.evaluate("document.documentElement.lang") == "ar"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"
    email = page.get_by_label("بريدك الإلكتروني")
    assert email.is_visible()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "signup-375.png"), full_page=True)

    email.fill("reader@example.com")
    with page.expect_navigation():
        page.get_by_role("button", name="اشترك").click()

    assert "تحقق من بريدك" in page.get_by_role("heading", level=2).inner_text()
    assert page.evaluate("getComputedStyle(document.querySelector('main')).direction") == "rtl"
    page.screenshot(path=str(SCREENSHOTS / "thanks-375.png"), full_page=True)
    assert store.get_subscriber("reader@example.com").status == Status.pending.value
    wait_for_mail(smtp_server.handler, 1)


def test_the_form_is_usable_with_the_keyboard_alone(browser, site, store):
    page = browser.new_page(viewport={"width": 375, "height": 740})
    page.goto(site.url + "/")
    page.keyboard.press("Tab")  # the masthead link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "email", "the honeypot is never reached by Tab"
    page.keyboard.type("keys@example.com")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert store.get_subscriber("keys@example.com") is not None


def test_the_emailed_link_shows_a_button_the_reader_clicks_to_confirm(browser, site, store, smtp_server):
    """The confirmation link opened as a reader opens it: a page (scanners stop there), then a click."""
    import json
    import re

    from .test_email_tools import NODE_MODULES, require

    signup = browser.new_page()
    signup.goto(site.url + "/")
    signup.get_by_label("بريدك الإلكتروني").fill("clicks@example.com")
    with signup.expect_navigation():
        signup.get_by_role("button", name="اشترك").click()
    wait_for_mail(smtp_server.handler, 1)
    text = smtp_server.handler.messages[0].parsed().get_body(("plain",)).get_content()
    link = re.search(re.escape(site.url) + r"/confirm/\S+", text).group(0)

    # bypass_csp: the page's policy (rightly) refuses the script axe-core is injected as.
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)
    page.goto(link)
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"
    page.add_script_tag(path=require(NODE_MODULES / "axe-core" / "axe.min.js", "run `make email-tools`"))
    violations = page.evaluate(f"axe.run(document, {json.dumps({'resultTypes': ['violations']})})")["violations"]
    assert [(v["id"], [n["target"] for n in v["nodes"]]) for v in violations] == []
    page.screenshot(path=str(SCREENSHOTS / "confirm-375.png"), full_page=True)
    assert store.get_subscriber("clicks@example.com").status == Status.pending.value, "showing the page confirms nothing"

    with page.expect_navigation():
        page.get_by_role("button", name="أكّد اشتراكي").click()
    assert "تم تأكيد اشتراكك" in page.get_by_role("heading", level=2).inner_text()
    assert store.get_subscriber("clicks@example.com").status == Status.active.value

    # The welcome follows, once; the reader opens it and follows its link to the archive.
    wait_for_mail(smtp_server.handler, 2)
    welcome = smtp_server.handler.messages[1]
    assert welcome.rcpt_to == "clicks@example.com" and welcome.parsed()["Subject"] == "أهلًا بك في الرسالة الإخبارية"
    mail = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar")
    mail.set_content(welcome.parsed().get_body(("html",)).get_content())
    assert mail.evaluate("getComputedStyle(document.querySelector('[role=main] div')).direction") == "rtl"
    assert "بتوقيت باريس" in mail.get_by_role("main").inner_text()
    mail.screenshot(path=str(SCREENSHOTS / "welcome-375.png"), full_page=True)
    with mail.expect_navigation():
        mail.get_by_role("link", name="أرشيف الرسائل").click()  # no issue yet: the archive itself
    assert mail.url == site.url + "/archive" and mail.evaluate("document.documentElement.lang") == "ar"


def test_the_confirm_button_is_reached_and_pressed_with_the_keyboard(browser, site, store, settings):
    from newsletter.tokens import Tokens

    store.add_subscriber("keys@example.com", "", Status.pending)
    token = Tokens(settings.secret_key).confirm_token(store.get_subscriber("keys@example.com").id)
    page = browser.new_page(viewport={"width": 375, "height": 740})
    page.goto(f"{site.url}/confirm/{token}")
    page.keyboard.press("Tab")  # the masthead link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "أكّد اشتراكي"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert store.get_subscriber("keys@example.com").status == Status.active.value
