"""The rendered email through the tools mail clients and spam filters are measured with.

SpamAssassin (Debian's, network tests off), tidy and html-validate, caniemail's data
(doiuse-email) and axe-core in Debian's Chromium, driven by Playwright. `make test` installs
them: the Debian packages with `make system-deps`, the npm packages pinned in
tests/email-tools/package-lock.json with `make email-tools`. Each tool starts once for this
module. Reports and screenshots go to test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from newsletter.config import PROJECT_DIR, SAMPLE_FEEDS_DIR, Settings
from newsletter.issue.feeds import read_feeds
from newsletter.issue.render import UNSUBSCRIBE_SLOT, RenderedIssue, Renderer, issue_from_selection
from newsletter.issue.selection import select_stories
from newsletter.mail.message import MessageTemplate, Recipient, transactional_message

from .test_browser import CHROMIUM, QUIET

TOOLS = Path(__file__).resolve().parent / "email-tools"
NODE_MODULES = TOOLS / "node_modules"
ARTIFACTS = PROJECT_DIR / "test-artifacts"
SAMPLE_DATE = dt.date(2017, 5, 9)
WIDTHS = (375, 600)
SCHEMES = ("light", "dark")


def require(path: Path | str, how: str) -> str:
    found = shutil.which(str(path)) if not Path(path).is_absolute() else (str(path) if Path(path).exists() else None)
    if not found:
        raise RuntimeError(f"{path} is not installed: {how}")
    return found


# --- the email under test ----------------------------------------------------


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(_env_file=None, base_url="https://news.example", from_address="morning@news.example",
                    secret_key="tests-only-key-0123456789-abcdefghijklmnop")


@pytest.fixture(scope="module")
def rendered(settings) -> RenderedIssue:
    """The sample feeds' issue (six stories, four pictures, a follow-up marker) with an editor's intro."""
    feeds = sorted(str(p) for p in SAMPLE_FEEDS_DIR.iterdir() if p.suffix in {".xml", ".atom"})
    selection = select_stories(read_feeds(feeds).stories, sections=settings.sections, max_stories=6,
                               window_end=dt.datetime(2017, 5, 9, 5, tzinfo=dt.timezone.utc))
    issue = issue_from_selection(selection, SAMPLE_DATE)
    issue = replace(issue, intro="صباح الخير. اجتماع التحالف في كوبنهاغن يتصدر أخبار اليوم.",
                    stories=[replace(issue.stories[1], follow_up=True) if i == 1 else s
                             for i, s in enumerate(issue.stories)])
    return Renderer(settings.templates_dir, settings.base_url).render(issue)


@pytest.fixture(scope="module")
def email_file(rendered) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "email.html"
    path.write_text(rendered.html.replace(UNSUBSCRIBE_SLOT, "MTIz.token"), encoding="utf-8")
    return path


WELCOME_UNSUBSCRIBE = "https://news.example/unsubscribe/u1-abcdefghijklmnop"


@pytest.fixture(scope="module")
def welcome(settings) -> tuple[str, str, str]:
    """The welcome email (subject, html, text) as a reader confirmed after the 2017-05-09 issue gets it."""
    renderer = Renderer(settings.templates_dir, settings.base_url)
    return renderer.render_welcome(renderer.edition_time_label(settings.edition_time, settings.timezone),
                                   "https://news.example/archive/2017-05-09", WELCOME_UNSUBSCRIBE,
                                   manage_url="https://news.example/manage/u1-abcdefghijklmnop")


@pytest.fixture(scope="module")
def welcome_file(welcome) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "welcome.html"
    path.write_text(welcome[1], encoding="utf-8")
    return path


# --- SpamAssassin ------------------------------------------------------------


def spamassassin(raw: bytes, home: Path) -> tuple[float, dict[str, float]]:
    """Score one message with local tests only (-L: no DNS blocklists, no Razor/Pyzor): (total, {rule: points})."""
    command = require("spamassassin", "`make test` installs Debian's spamassassin")
    result = subprocess.run([command, "-L", "-t", "-p", str(home / "user_prefs")], input=raw,
                            capture_output=True, timeout=120, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    report = result.stdout.decode("utf-8", "replace").split("Content analysis details:", 1)[1]
    total = float(re.search(r"\(\s*(-?[\d.]+) points", report).group(1))
    rules = {m.group(2): float(m.group(1)) for m in re.finditer(r"^\s*(-?[\d.]+)\s+([A-Z0-9_]+)\s", report, re.M)}
    (ARTIFACTS / "spamassassin.txt").write_text(report, encoding="utf-8")
    return total, rules


@pytest.fixture(scope="module")
def spam_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spamassassin")


# Rules that fire on any message handed over straight from the sender, before a relay adds
# Received headers: informational, scored 0. Nothing else may fire, with any score.
INFORMATIONAL = {"NO_RECEIVED", "NO_RELAYS", "HTML_MESSAGE"}


def test_spamassassin_scores_the_issue_zero(rendered, settings, spam_home):
    raw = bytes(MessageTemplate(rendered, settings).personalise(Recipient(22, "layla@example.com", "ليلى حداد")))

    total, rules = spamassassin(raw, spam_home)

    assert total == 0.0, rules
    assert set(rules) <= INFORMATIONAL, rules
    assert "HTML_FONT_LOW_CONTRAST" not in rules  # the hidden preheader used to be white on grey


def test_spamassassin_scores_the_confirmation_zero(settings, spam_home):
    subject, html, text = Renderer(settings.templates_dir, settings.base_url).render_confirmation(
        "https://news.example/confirm/MTIz.token", 7)
    raw = transactional_message(settings, Recipient(1, "new@example.com"), subject, html, text,
                                "<confirm.1.abc@news.example>")

    total, rules = spamassassin(raw, spam_home)

    assert total == 0.0, rules
    assert set(rules) <= INFORMATIONAL, rules


def test_spamassassin_scores_the_welcome_zero(settings, welcome, spam_home):
    subject, html, text = welcome
    raw = transactional_message(settings, Recipient(1, "new@example.com"), subject, html, text,
                                "<welcome.1.abc@news.example>", unsubscribe_url=WELCOME_UNSUBSCRIBE)

    total, rules = spamassassin(raw, spam_home)

    assert total == 0.0, rules
    assert set(rules) <= INFORMATIONAL, rules


# --- HTML validators ---------------------------------------------------------

# html-validate's recommended rules, less those that forbid what email needs, each for a reason:
HTML_VALIDATE_OFF = {
    # Outlook for Windows (Word's engine) lays the email out from MJML's <!--[if mso]> tables.
    "no-conditional-comment": "Outlook for Windows reads its layout from conditional comments",
    # Gmail drops <style> in some contexts (non-Gmail accounts in its apps): layout must be inline.
    "no-inline-style": "inline styles are how email keeps its layout where <style> is dropped",
    # cellpadding, width, align, bgcolor, valign: Word's engine ignores the CSS equivalents.
    "no-deprecated-attr": "presentational attributes are what Outlook for Windows reads",
    # <main>, <header>, <footer> are unknown to older clients and stripped by some webmails;
    # role="main" etc. on MJML's wrappers survive everywhere.
    "prefer-native-element": "ARIA landmark roles instead of HTML5 elements clients strip",
    # the <title> is the subject line: inboxes show it, no browser tab truncates it.
    "long-title": "the title is the subject line",
    # MJML writes `<!doctype html>`; HTML parsers ignore the case.
    "doctype-style": "MJML writes the doctype in lower case",
}


@pytest.mark.parametrize("email", ["email_file", "welcome_file"])
def test_html_validate_finds_no_errors(email, request, tmp_path):
    email_file = request.getfixturevalue(email)
    node = require("node", "`make test` installs Debian's nodejs")
    config = tmp_path / "htmlvalidate.json"
    config.write_text(json.dumps({"extends": ["html-validate:recommended"],
                                  "rules": {rule: "off" for rule in HTML_VALIDATE_OFF}}), encoding="utf-8")
    cli = require(NODE_MODULES / "html-validate" / "bin" / "html-validate.mjs", "run `make email-tools`")

    result = subprocess.run([node, cli, "--config", str(config), "--formatter", "text", str(email_file)],
                            capture_output=True, text=True, timeout=120)

    (ARTIFACTS / f"html-validate-{email_file.stem}.txt").write_text(result.stdout + result.stderr, encoding="utf-8")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


@pytest.mark.parametrize("email", ["email_file", "welcome_file"])
def test_tidy_finds_no_errors(email, request):
    email_file = request.getfixturevalue(email)
    tidy = require("tidy", "`make test` installs Debian's tidy")
    result = subprocess.run([tidy, "-errors", "-quiet", str(email_file)], capture_output=True, text=True, timeout=60)

    (ARTIFACTS / f"tidy-{email_file.stem}.txt").write_text(result.stderr, encoding="utf-8")
    assert result.returncode < 2, result.stderr  # 1: warnings only (e.g. <table> without summary)
    assert "Error:" not in result.stderr


# --- caniemail.com data (doiuse-email) -----------------------------------------

CLIENTS = ("gmail.*", "apple-mail.*", "outlook.*", "yahoo.*")

# Features caniemail lists as unsupported somewhere in these clients, and why each leaves the
# layout intact. Anything else unsupported fails the test.
CANIEMAIL_ALLOWED = {
    "@media": "MJML's columns are fluid inline-blocks that stack without media queries; Outlook for "
              "Windows lays out from the mso tables; only phone headline sizes and dark colours are lost",
    "Class selector": "selectors appear only in <style> (media queries, dark mode, MJML's reset); layout is inline",
    "Type selector": "as for class selectors",
    "ID selector": "MJML's `#outlook a` reset, for Outlook.com only",
    "Descendant combinator": "as for class selectors",
    "Chaining selectors": "as for class selectors",
    "display:none": "the hidden preheader is also collapsed by max-height:0, overflow:hidden and 1px type",
    "overflow": "one of the preheader's layered ways of hiding (mso-hide:all for Outlook for Windows)",
    "opacity": "one of the preheader's layered ways of hiding",
    "outline": "MJML's image reset (no focus outline on linked pictures): cosmetic",
    "border-radius": "the button's rounded corners are square in Outlook for Windows: cosmetic",
    "word-break": "breaks only unspaced strings longer than a line; Arabic text wraps at spaces",
    "<body> element": "replaced by a <div>; MJML repeats the background on its wrapper <div>",
    "aria-label attribute": "accessibility metadata, no layout",
    "role attribute": "accessibility metadata, no layout",
    "target attribute": "which window a link opens in, no layout",
}


@pytest.fixture(scope="module")
def caniemail(email_file) -> dict:
    node = require("node", "`make test` installs Debian's nodejs")
    require(NODE_MODULES / "doiuse-email", "run `make email-tools`")
    result = subprocess.run([node, str(TOOLS / "run-doiuse.mjs"), str(email_file), *CLIENTS],
                            capture_output=True, text=True, timeout=120, check=True, cwd=TOOLS)
    (ARTIFACTS / "caniemail.json").write_text(result.stdout, encoding="utf-8")
    return json.loads(result.stdout)


def test_no_layout_changing_feature_is_unsupported_in_gmail_apple_outlook_or_yahoo(caniemail):
    unsupported: dict[str, set[str]] = {}
    for error in caniemail["errors"]:
        feature, client = re.match(r"`(.+?)` is not supported by `(.+?)`", error).groups()
        unsupported.setdefault(feature, set()).add(client)

    assert (ARTIFACTS / "caniemail.json").stat().st_size > 0
    unexplained = {f: sorted(c) for f, c in unsupported.items() if f not in CANIEMAIL_ALLOWED}
    assert unexplained == {}, "caniemail: unsupported and not on the explained allow-list"


# --- in Chromium: axe-core, screenshots, and what the page itself says ------------


def png(width: int, height: int) -> bytes:
    """A grey picture of the given size, standing in for the feeds' images (the test network has none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x88" * width * 3 for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def views(browser, email_file):
    """The email at each width and colour scheme: {(width, scheme): what the page measured}."""
    picture = png(600, 338)
    axe = require(NODE_MODULES / "axe-core" / "axe.min.js", "run `make email-tools`")
    html = email_file.read_text(encoding="utf-8")
    measured = {}
    for width in WIDTHS:
        for scheme in SCHEMES:
            page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme, locale="ar")
            page.route("**/*", lambda route: route.fulfill(body=picture, content_type="image/png")
                       if route.request.resource_type == "image" else route.abort())
            page.set_content(html, wait_until="load")
            page.screenshot(path=str(ARTIFACTS / f"email-{width}-{scheme}.png"), full_page=True)
            page.add_script_tag(path=axe)
            measured[width, scheme] = {
                "axe": page.evaluate(f"axe.run(document, {json.dumps(AXE_OPTIONS)})"),
                **page.evaluate(MEASURE_JS),
            }
            page.close()
    return measured


# axe-core's rules all run (WCAG 2.0-2.2 A/AA and best practices) except:
AXE_OPTIONS = {
    "resultTypes": ["violations"],
    "rules": {
        # MJML names the email's role="article" wrapper after the subject (aria-label), so that a
        # screen-reader user in webmail can tell the email from the page around it; axe counts that
        # name as content outside the landmarks. Every visible text is inside banner, main or
        # contentinfo: test_the_email_reads_right_at_each_width_and_scheme checks that itself.
        "region": {"enabled": False},
    },
}

MEASURE_JS = """() => {
  const visible = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const background = (el) => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
    if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !visible(el)) continue;
    const s = getComputedStyle(el);
    texts.push({text: walker.currentNode.textContent.trim().slice(0, 40), color: s.color, background: background(el),
                size: parseFloat(s.fontSize), align: s.textAlign, direction: s.direction,
                landmark: !!el.closest('[role=banner],[role=main],[role=contentinfo]'),
                footer: !!el.closest('[role=contentinfo]'),
                button: !!(el.closest('a') && parseFloat(getComputedStyle(el.closest('a')).paddingTop) > 0)});
  }
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    body: getComputedStyle(document.body).backgroundColor,
    texts,
    links: [...document.querySelectorAll('a')].filter(visible).map(a => {
      const r = a.getBoundingClientRect(); return {text: a.textContent.trim().slice(0, 40), width: r.width, height: r.height}; }),
    images: [...document.images].map(i => i.getBoundingClientRect().width),
  };
}"""


def luminance(rgb: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_axe_core_finds_no_violations(views, width, scheme):
    violations = views[width, scheme]["axe"]["violations"]
    assert [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in violations] == []


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_the_email_reads_right_at_each_width_and_scheme(views, width, scheme):
    view = views[width, scheme]

    assert (ARTIFACTS / f"email-{width}-{scheme}.png").stat().st_size > 0
    assert view["scrollWidth"] <= view["innerWidth"], "no sideways scrolling"
    for text in view["texts"]:
        assert text["landmark"], f"outside banner/main/contentinfo: {text['text']}"
        assert text["direction"] == "rtl", text
        assert contrast(text["color"], text["background"]) >= 4.5, text  # WCAG AA body text
        if text["footer"]:
            assert text["size"] >= 14, text
    story_texts = [t for t in view["texts"] if not t["footer"] and not t["button"]]  # both centred
    assert story_texts and [t for t in story_texts if t["align"] not in {"right", "start"}] == []
    for link in view["links"]:
        assert link["width"] >= 24 and link["height"] >= 24, f"tap target under 24×24 px: {link}"
    lead, *secondary = view["images"]
    assert lead == pytest.approx(min(width, 600) - 48, abs=1), "inset 24 px each side, like the text"
    for image in secondary:
        if width == 600:
            assert image == pytest.approx(180, abs=2)  # the 34% column (204 px) less its 24 px padding
        else:
            assert image >= width - 48, "fluid on phones: the picture fills the column"


@pytest.mark.parametrize("width", WIDTHS)
def test_dark_mode_changes_the_background(views, width):
    light, dark = views[width, "light"], views[width, "dark"]

    assert light["body"] != dark["body"]
    assert luminance(dark["body"]) < 0.05 < luminance(light["body"])
    light_story = next(t for t in light["texts"] if t["landmark"] and t["background"] == "rgb(255, 255, 255)")
    dark_story = next(t for t in dark["texts"] if t["text"] == light_story["text"])
    assert dark_story["background"] != light_story["background"] and dark_story["color"] != light_story["color"]


# --- the welcome email in Chromium ----------------------------------------------


@pytest.fixture(scope="module")
def welcome_views(browser, welcome_file):
    """The welcome at each width and colour scheme, measured as the issue is (it has no pictures)."""
    axe = require(NODE_MODULES / "axe-core" / "axe.min.js", "run `make email-tools`")
    html = welcome_file.read_text(encoding="utf-8")
    measured = {}
    for width in WIDTHS:
        for scheme in SCHEMES:
            page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme, locale="ar")
            page.route("**/*", lambda route: route.abort())
            page.set_content(html, wait_until="load")
            page.screenshot(path=str(ARTIFACTS / f"welcome-{width}-{scheme}.png"), full_page=True)
            page.add_script_tag(path=axe)
            measured[width, scheme] = {"axe": page.evaluate(f"axe.run(document, {json.dumps(AXE_OPTIONS)})"),
                                       **page.evaluate(MEASURE_JS)}
            page.close()
    return measured


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_the_welcome_passes_axe_core_and_reads_right(welcome_views, width, scheme):
    view = welcome_views[width, scheme]

    assert [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in view["axe"]["violations"]] == []
    assert view["scrollWidth"] <= view["innerWidth"], "no sideways scrolling"
    assert view["texts"]
    for text in view["texts"]:
        assert text["landmark"], f"outside banner/main/contentinfo: {text['text']}"
        assert text["direction"] == "rtl", text
        assert contrast(text["color"], text["background"]) >= 4.5, text
        assert text["align"] in {"right", "start"} or text["footer"], text
    for link in view["links"]:
        assert link["width"] >= 24 and link["height"] >= 24, f"tap target under 24×24 px: {link}"
