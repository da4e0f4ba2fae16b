"""The sent issue read in a real webmail: Debian's Roundcube, its HTML sanitiser, in Chromium.

A real send goes to the in-process SMTP server; the message it received is delivered to a test
Dovecot and opened in Roundcube (elastic skin) by clicking it in the inbox, at a phone's 375 px
and a desktop's 1000 px, with Roundcube in English and in Arabic, as most of our readers would
have it (Arabic labels only: Roundcube 1.6's elastic skin has no right-to-left layout, so in both
the right-to-left must come from the email itself).
Roundcube blocks remote pictures by default: that is the blocked-images case too. Each check
is also run on a broken copy of the issue, which it must catch. Screenshots go to
test-artifacts/webmail/.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Page, sync_playwright

from newsletter.config import Settings
from newsletter.edition import send_edition
from .ports import free_port
from newsletter.store.database import Store

from .conftest import SAMPLE_DATE, RecordingHandler
from .dovecot import DovecotServer
from .roundcube import RoundcubeServer
from .test_browser import CHROMIUM, QUIET
from .test_email_tools import ARTIFACTS, AXE_OPTIONS, NODE_MODULES, require

SHOTS = ARTIFACTS / "webmail"
WIDTHS = (375, 1000)
# Roundcube takes each reader's interface language from the browser at the first login.
READERS = {"en": ("layla@example.com", "en-US"), "ar": ("omar@example.com", "ar")}
BROKEN_READER, PASSWORD = "broken@example.com", "webmail-test-password"
VIEWS = [(ui, width) for ui in READERS for width in WIDTHS]
READ_MORE, UNSUBSCRIBE = "اقرأ المزيد", "إلغاء الاشتراك"


# --- the email under test: a real send ------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the sent email promises, read from the message itself before any webmail touches it."""

    titles: list[str]  # story headings, in order
    story_links: list[str]  # each story's tracked link, in order
    unsubscribe_url: str  # the List-Unsubscribe header's URL, which the footer link must carry


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self.links: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._in_h2 = True
            self.titles.append("")
        elif tag == "a" and self._in_h2:
            self.links.append(dict(attrs)["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
            self.titles[-1] = self.titles[-1].strip()

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.titles[-1] += data


def expected_from(message: EmailMessage) -> Expected:
    parser = _Headings()
    parser.feed(message.get_body(("html",)).get_content())
    return Expected(parser.titles, parser.links, message["List-Unsubscribe"].strip("<>"))


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> EmailMessage:
    """The morning issue as the SMTP server received it: the same send and settings as conftest's fixtures,
    once for the module (conftest's are per test)."""
    folder = tmp_path_factory.mktemp("send")
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{folder / 'subscribers.sqlite3'}",
                            smtp_host="127.0.0.1", smtp_port=port, from_address="morning@news.example",
                            base_url="https://news.example", secret_key="tests-only-key-0123456789-abcdefghijklmnop",
                            editorial_dir=str(folder / "editorial"))
        store = Store(settings.database_url)
        try:
            store.add_subscriber(READERS["en"][0], "ليلى حداد")
            assert send_edition(settings, store, SAMPLE_DATE).report.sent == 1
        finally:
            store.close()
    finally:
        controller.stop()
    (received,) = handler.messages
    return received.parsed()


def broken_copy(message: EmailMessage) -> EmailMessage:
    """The issue with what the checks guard taken out: right-to-left and lang, bold headings, a story
    link, the button's colour, the unsubscribe link, pictures' alt text, readable type sizes, and a
    fixed width wider than a phone."""
    html = message.get_body(("html",)).get_content()
    html = html.replace('dir="rtl"', "").replace('lang="ar"', "")
    html = re.sub(r"direction:\s*rtl", "direction:ltr", html)
    html = re.sub(r"text-align:\s*right", "text-align:left", html).replace('align="right"', 'align="left"')
    html = re.sub(r"</?h2[^>]*>", "", html).replace("font-weight:bold", "font-weight:normal")
    html = re.sub(rf'<a [^>]*>{UNSUBSCRIBE}</a>', "", html)
    html = re.sub(r'\salt="[^"]*"', "", html)
    html = re.sub(r"font-size:\s*1[4-9]px", "font-size:9px", html)
    first_link = expected_from(message).story_links[0]
    html = html.replace(f'href="{first_link}" target="_blank" style="display:inline-block;background',
                        'href="https://elsewhere.example/" target="_blank" style="display:inline-block;background', 1)
    html = html.replace("background:#b3001b", "background:transparent")  # the button's colour
    html = html.replace('<div class="nl-contentinfo', '<div style="width:900px">x</div><div class="nl-contentinfo', 1)
    broken = email.message_from_bytes(bytes(message), policy=email.policy.default)
    broken.get_body(("html",)).set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return broken


# --- Dovecot, Roundcube, Chromium: once for the module ---------------------------------


@pytest.fixture(scope="module")
def webmail(sent):
    dovecot = DovecotServer(users={**{user: PASSWORD for user, _ in READERS.values()}, BROKEN_READER: PASSWORD})
    try:
        for user, _ in READERS.values():
            dovecot.deliver(user, bytes(sent))
        dovecot.deliver(BROKEN_READER, bytes(broken_copy(sent)))
        with RoundcubeServer(dovecot.port) as roundcube:
            yield roundcube
    finally:
        dovecot.stop()


@pytest.fixture(scope="module")
def browser(sent):
    # After the send: it runs an event loop of its own, which cannot start inside Playwright's.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield browser
        browser.close()


# Measured inside the message frame, on Roundcube's washed copy of the email only (.message-htmlpart):
# every visible text with its direction, alignment, language, size and weight, the links, the
# pictures and whether anything is wider than the frame.
# Roundcube's sanitiser (rcube_washtml's allow-list) drops every role and aria-* attribute: the
# email's landmarks (banner, main, contentinfo), role="presentation" on MJML's layout tables and
# the article's aria-label do not reach the reader here. It keeps lang, dir, class, h1/h2 and
# inline styles, so the checks rely on those.
MEASURE_JS = """(part) => {
  const visible = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const texts = [];
  const walker = document.createTreeWalker(part, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    const text = walker.currentNode.textContent.trim();
    if (!text || el.closest('style') || !visible(el)) continue;
    const s = getComputedStyle(el);
    const link = el.closest('a');
    texts.push({text, arabic: /[\\u0600-\\u06FF]/.test(text), direction: s.direction, align: s.textAlign,
                lang: (el.closest('[lang]') || {}).lang || '', size: parseFloat(s.fontSize),
                weight: parseInt(s.fontWeight), heading: !!el.closest('h1, h2, h3'),
                // the footer (Roundcube prefixes our classes with v1) and the button: centred on purpose
                centred: !!el.closest('[class*="nl-contentinfo"]')
                         || !!(link && parseFloat(getComputedStyle(link).paddingTop) > 0)});
  }
  return {
    direction: getComputedStyle(part.querySelector('.rcmBody') || part).direction,
    texts,
    links: [...part.querySelectorAll('a[href]')].map(a => ({text: a.textContent.trim(), href: a.getAttribute('href'),
      visible: visible(a), background: getComputedStyle(a).backgroundColor,
      padding: parseFloat(getComputedStyle(a).paddingTop)})),
    pictures: [...part.querySelectorAll('img')].map(i => i.getAttribute('src')),
    partWidth: part.clientWidth, partScrollWidth: part.scrollWidth,
    frameWidth: window.innerWidth, frameScrollWidth: document.documentElement.scrollWidth,
  };
}"""


def open_message(page: Page, roundcube: RoundcubeServer) -> None:
    """The inbox, then a click on its one message, as a reader would: Roundcube shows it in #messagecontframe."""
    page.goto(roundcube.url + "?_task=mail&_mbox=INBOX")
    page.locator("#messagelist tbody tr").first.click()
    page.frame_locator("#messagecontframe").locator(".message-htmlpart").wait_for()


def read_in_webmail(browser, roundcube: RoundcubeServer, user: str, locale: str, name: str) -> dict[int, dict]:
    """{width: what the message frame measured, axe-core's findings included} for one reader's message;
    screenshots named after `name`."""
    axe = require(NODE_MODULES / "axe-core" / "axe.min.js", "run `make email-tools`")
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": WIDTHS[0], "height": 900}, locale=locale)
    try:
        page = context.new_page()
        page.goto(roundcube.url)
        page.fill("#rcmloginuser", user)
        page.fill("#rcmloginpwd", PASSWORD)
        with page.expect_navigation():
            page.click("#rcmloginsubmit")
        assert "_task=mail" in page.url, f"Roundcube refused the login: {roundcube.log()}"
        measured = {}
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            open_message(page, roundcube)
            frame = page.frame(name="messagecontframe")
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"))  # the first screen the reader sees
            frame.add_script_tag(path=axe)
            # Only the email: Roundcube's own toolbar, headers and notices are not ours to fix.
            axe_result = frame.evaluate(f"axe.run({{include: ['.message-htmlpart']}}, {json.dumps(AXE_OPTIONS)})")
            measured[width] = {"axe": axe_result, "ui_language": page.evaluate("document.documentElement.lang"),
                               **frame.locator(".message-htmlpart").evaluate(MEASURE_JS)}
            # The whole message in one picture: a window tall enough that the frame need not scroll
            # (an element screenshot leaves what is scrolled out of the frame blank).
            frame_top = page.locator("#messagecontframe").evaluate("f => f.getBoundingClientRect().top")
            bottom = frame.locator(".message-htmlpart").evaluate("p => p.getBoundingClientRect().top + p.scrollHeight")
            page.set_viewport_size({"width": width, "height": min(int(frame_top + bottom) + 200, 10000)})
            page.screenshot(path=str(SHOTS / f"{name}-{width}-whole.png"))
        return measured
    finally:
        context.close()


@pytest.fixture(scope="module")
def views(browser, webmail) -> dict[tuple[str, int], dict]:
    """{(interface language, width): what was measured}."""
    return {(ui, width): view for ui, (user, locale) in READERS.items()
            for width, view in read_in_webmail(browser, webmail, user, locale, ui).items()}


@pytest.fixture(scope="module")
def broken_views(browser, webmail) -> dict[int, dict]:
    return read_in_webmail(browser, webmail, BROKEN_READER, "en-US", "broken")


# --- the checks: each returns what is wrong, so the broken copy can show it catches it ------


def direction_problems(view: dict) -> list[str]:
    problems = [] if view["direction"] == "rtl" else [f"the message body is {view['direction']}"]
    arabic = [t for t in view["texts"] if t["arabic"]]
    if not arabic:
        problems.append("no Arabic text shown")
    problems += [f"not right-to-left: {t}" for t in arabic if t["direction"] != "rtl"]
    problems += [f"not marked Arabic (lang): {t}" for t in arabic if t["lang"] != "ar"]
    # The footer and the button are centred on purpose; every other Arabic text starts at the right.
    problems += [f"not right-aligned: {t}" for t in arabic
                 if not t["centred"] and t["align"] not in {"right", "start"}]
    return problems


def size_problems(view: dict) -> list[str]:
    # 14 px: the smallest our template uses (sources, footer); webmails do not scale email text up.
    return [f"text under 14 px: {t}" for t in view["texts"] if t["arabic"] and t["size"] < 14]


def heading_problems(view: dict, expected: Expected) -> list[str]:
    """Each story's title shown, and told apart from the text: a heading or, where a sanitiser
    drops heading tags, at least bold."""
    shown = {t["text"] for t in view["texts"] if t["heading"] or t["weight"] >= 700}
    return [f"story title missing or not a heading: {title}" for title in expected.titles if title not in shown]


def link_problems(view: dict, expected: Expected) -> list[str]:
    problems = []
    read_more = [link for link in view["links"] if link["text"] == READ_MORE]
    if [link["href"] for link in read_more] != expected.story_links:
        problems.append(f"'read more' links {[link['href'] for link in read_more]} != {expected.story_links}")
    problems += [f"'read more' not shown: {link}" for link in read_more if not link["visible"]]
    buttons = [link for link in read_more if link["padding"] > 0]
    if len(buttons) != 1 or buttons[0]["background"] != "rgb(179, 0, 27)":
        problems.append(f"the lead story's button lost its look: {buttons}")
    unsubscribe = [link for link in view["links"] if link["text"] == UNSUBSCRIBE]
    if [link["href"] for link in unsubscribe] != [expected.unsubscribe_url] or not unsubscribe[0]["visible"]:
        problems.append(f"unsubscribe link {unsubscribe} should be shown and lead to {expected.unsubscribe_url}")
    return problems


def overflow_problems(view: dict) -> list[str]:
    problems = []
    if view["partScrollWidth"] > view["partWidth"]:
        problems.append(f"the message is {view['partScrollWidth']} px wide in a {view['partWidth']} px frame")
    if view["frameScrollWidth"] > view["frameWidth"]:
        problems.append(f"the frame scrolls sideways: {view['frameScrollWidth']} > {view['frameWidth']}")
    return problems


def axe_problems(view: dict) -> list[tuple[str, list]]:
    return [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in view["axe"]["violations"]]


# --- the issue as a reader sees it in Roundcube ----------------------------------------------

each_view = pytest.mark.parametrize("view", VIEWS, ids=lambda v: f"{v[0]}-{v[1]}")


@pytest.fixture(scope="module")
def expected(sent) -> Expected:
    found = expected_from(sent)
    assert len(found.titles) == len(found.story_links) == 6, "the sample feeds' issue has six stories"
    assert all(link.startswith("https://news.example/c/") for link in found.story_links), "tracked links"
    assert found.unsubscribe_url.startswith("https://news.example/unsubscribe/")
    return found


@each_view
def test_the_issue_reads_right_to_left(views, view):
    assert views[view]["ui_language"] == view[0], "Roundcube's own language"
    assert direction_problems(views[view]) == []
    assert (SHOTS / f"{view[0]}-{view[1]}-whole.png").stat().st_size > 0


@each_view
def test_the_text_stays_readable(views, view):
    assert size_problems(views[view]) == []


@each_view
def test_story_headings_survive_the_sanitiser(views, expected, view):
    assert heading_problems(views[view], expected) == []


@each_view
def test_read_more_buttons_and_the_unsubscribe_link_keep_their_addresses(views, expected, view):
    assert link_problems(views[view], expected) == []


@each_view
def test_nothing_is_wider_than_the_message_frame(views, view):
    assert overflow_problems(views[view]) == []


@each_view
def test_remote_pictures_are_blocked_and_the_issue_still_reads(views, view):
    # Roundcube's default: pictures replaced by a placeholder until the reader allows them.
    pictures = views[view]["pictures"]
    assert len(pictures) == 4 and [src for src in pictures if src.startswith("http")] == []
    assert [t for t in views[view]["texts"] if t["arabic"]], "the stories are text, not pictures"


@each_view
def test_axe_core_finds_no_violations_in_the_message(views, view):
    assert axe_problems(views[view]) == []


def test_roundcube_reads_the_issue_without_errors(views, webmail):
    assert webmail.errors() == ""


def test_each_check_catches_a_broken_issue(broken_views, expected):
    for width in WIDTHS:
        view = broken_views[width]
        assert any("not right-to-left" in p for p in direction_problems(view))
        assert any("not right-aligned" in p for p in direction_problems(view))
        assert any("not marked Arabic" in p for p in direction_problems(view))
        assert size_problems(view) != []
        assert len(heading_problems(view, expected)) == len(expected.titles)
        problems = link_problems(view, expected)
        assert any("read more" in p for p in problems) and any("unsubscribe" in p for p in problems)
        assert any("button lost its look" in p for p in problems)
        assert "image-alt" in {rule for rule, _ in axe_problems(view)}
    assert overflow_problems(broken_views[375]) != []
