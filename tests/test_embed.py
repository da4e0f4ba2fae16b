"""The signup box on the newsroom's article pages: another origin, in Debian's Chromium and over HTTP.

The article page is the France 24 story the project grew from (headline with double quotes), served by
a second local web server; the box is the snippet `newsletter serve` gives at /embed/snippet.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import feedparser
import httpx
import markupsafe
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from newsletter.config import SAMPLE_FEEDS_DIR
from .ports import free_port
from newsletter.store.database import Status

from .conftest import LiveApp
from .test_browser import SCREENSHOTS, browser  # noqa: F401  (browser is a fixture)
from .test_web import live_site, wait_for_mail

ARTICLE_PATH = "/ar/20170509-coalition-copenhague"


def article_app(snippet: str, cms_fills_return_to: bool) -> FastAPI:
    """A newsroom's article page with the signup box in its footer, as in the seed."""
    story = feedparser.parse(str(SAMPLE_FEEDS_DIR / "france24.xml")).entries[0]
    app = FastAPI()

    @app.get(ARTICLE_PATH)
    def article(request_url: str = "") -> HTMLResponse:
        box = snippet
        if cms_fills_return_to:
            box = box.replace('name="return_to" value=""', f'name="return_to" value="{escape(url_of(app))}"')
        return HTMLResponse(
            f'<!doctype html><html lang="ar" dir="rtl"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(story.title)}</title></head><body><article><h1>{escape(story.title)}</h1>"
            f"<p>{escape(story.summary)}</p></article><footer>{box}</footer></body></html>"
        )

    return app


def url_of(app: FastAPI) -> str:
    return app.state.url


@pytest.fixture
def newsletter_site(settings):
    """`newsletter serve` at its own origin, allowing the newsroom's (another port of 127.0.0.1)."""
    port, newsroom_port = free_port(), free_port()
    site_settings = settings.model_copy(update={
        "base_url": f"http://127.0.0.1:{port}", "signup_rate_limit": 100,
        "allowed_origins": [f"http://127.0.0.1:{newsroom_port}"],
    })
    with live_site(site_settings, port) as site:
        site.newsroom_port = newsroom_port
        yield site


def serve_article(snippet: str, host: str, port: int, cms_fills_return_to: bool) -> LiveApp:
    app = article_app(snippet, cms_fills_return_to)
    app.state.url = f"http://{host}:{port}{ARTICLE_PATH}"
    return LiveApp(app, port)


@pytest.fixture
def snippet(newsletter_site) -> str:
    return httpx.get(newsletter_site.url + "/embed/snippet").text


def test_without_javascript_the_box_posts_and_brings_the_reader_back_to_the_article(
        browser, newsletter_site, snippet, store, smtp_server):
    with serve_article(snippet, "127.0.0.1", newsletter_site.newsroom_port, cms_fills_return_to=True) as article:
        context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 740})
        page = context.new_page()
        article_url = f"http://127.0.0.1:{article.port}{ARTICLE_PATH}"
        page.goto(article_url)
        assert 'داعش' in page.title() and '"' in page.title(), "the seed's headline, quotes and all"
        assert not page.locator("#nl-thanks").is_visible()

        page.get_by_label("بريدك الإلكتروني").fill("reader@example.com")
        with page.expect_navigation():
            page.get_by_role("button", name="اشترك").click()

        assert page.url == article_url + "#nl-thanks"
        assert page.locator("#nl-thanks").is_visible() and "تحقق من بريدك" in page.locator("#nl-thanks").inner_text()
        assert not page.locator("#nl-invalid").is_visible()
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "embed-nojs-375.png"), full_page=True)

        page.get_by_label("بريدك الإلكتروني").fill("a@b")  # the browser lets it through; we do not
        with page.expect_navigation():
            page.get_by_role("button", name="اشترك").click()
        assert page.url == article_url + "#nl-invalid"
        assert page.locator("#nl-invalid").is_visible()
        context.close()

    assert store.get_subscriber("reader@example.com").status == Status.pending.value
    assert store.count_subscribers() == 1
    wait_for_mail(smtp_server.handler, 1)


def test_with_the_script_the_box_answers_in_place(browser, newsletter_site, snippet, store, smtp_server):
    with serve_article(snippet, "127.0.0.1", newsletter_site.newsroom_port, cms_fills_return_to=False) as article:
        page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar")
        article_url = f"http://127.0.0.1:{article.port}{ARTICLE_PATH}"
        page.goto(article_url)
        box = page.locator(".nl-box")
        assert box.evaluate("el => getComputedStyle(el).direction") == "rtl"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"
        button = page.get_by_role("button", name="اشترك").bounding_box()
        assert button["height"] >= 44 and button["width"] >= 44, "a thumb-sized button"

        page.get_by_label("بريدك الإلكتروني").fill("scripted@example.com")
        page.get_by_role("button", name="اشترك").click()
        page.locator("#nl-thanks").wait_for(state="visible")

        assert page.url == article_url, "the reader never left the article"
        assert page.get_by_label("بريدك الإلكتروني").input_value() == ""
        page.screenshot(path=str(SCREENSHOTS / "embed-script-375.png"), full_page=True)

        page.get_by_label("بريدك الإلكتروني").fill("a@b")
        page.get_by_role("button", name="اشترك").click()
        page.locator("#nl-invalid").wait_for(state="visible")
        assert not page.locator("#nl-thanks").is_visible()

    assert store.get_subscriber("scripted@example.com").status == Status.pending.value
    wait_for_mail(smtp_server.handler, 1)


@pytest.mark.parametrize("javascript", [True, False], ids=["script", "plain-form"])
def test_a_site_that_is_not_allowed_cannot_sign_readers_up(browser, newsletter_site, snippet, store, javascript):
    # localhost is another site than 127.0.0.1 to the browser, and not in NEWSLETTER_ALLOWED_ORIGINS.
    port = free_port()
    with serve_article(snippet, "localhost", port, cms_fills_return_to=False):
        context = browser.new_context(java_script_enabled=javascript)
        page = context.new_page()
        page.goto(f"http://localhost:{port}{ARTICLE_PATH}")
        page.get_by_label("بريدك الإلكتروني").fill("victim@example.com")
        with page.expect_navigation():  # the script falls back to the plain form when CORS says no
            page.get_by_role("button", name="اشترك").click()
        assert "طلب غير مسموح" in page.content()
        context.close()
    assert store.count_subscribers() == 0


# Over plain HTTP: what browsers send, spelled out.

def post(site, headers: dict[str, str], **kwargs) -> httpx.Response:
    return httpx.post(site.url + "/subscribe", headers=headers, **kwargs)


def test_posts_from_other_sites_get_403_and_change_nothing(newsletter_site, store):
    allowed = f"http://127.0.0.1:{newsletter_site.newsroom_port}"
    refused = [
        post(newsletter_site, {"Origin": "https://evil.example"}, json={"email": "a@example.com"}),
        post(newsletter_site, {"Origin": "https://evil.example"}, data={"email": "a@example.com"}),
        post(newsletter_site, {"Sec-Fetch-Site": "cross-site"}, data={"email": "a@example.com"}),
        post(newsletter_site, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, data={"email": "a@example.com"}),
        post(newsletter_site, {"Origin": allowed + ".evil.example"}, json={"email": "a@example.com"}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert "access-control-allow-origin" not in refused[0].headers
    assert store.count_subscribers() == 0

    accepted = [
        post(newsletter_site, {"Origin": allowed, "Sec-Fetch-Site": "same-site"}, json={"email": "b@example.com"}),
        post(newsletter_site, {"Origin": newsletter_site.url, "Sec-Fetch-Site": "same-origin"},
             data={"email": "c@example.com"}),
        post(newsletter_site, {"Origin": "null", "Sec-Fetch-Site": "same-origin"}, data={"email": "d@example.com"}),
        post(newsletter_site, {}, json={"email": "e@example.com"}),  # a program, not a browser
    ]
    assert [r.status_code for r in accepted] == [202, 200, 200, 202]
    assert accepted[0].headers["access-control-allow-origin"] == allowed
    assert store.count_subscribers() == 4


def test_cors_preflight_answers_the_allowed_sites_only(newsletter_site):
    allowed = f"http://127.0.0.1:{newsletter_site.newsroom_port}"
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(newsletter_site.url + "/subscribe", headers={"Origin": allowed, **ask})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
    no = httpx.options(newsletter_site.url + "/subscribe", headers={"Origin": "https://evil.example", **ask})
    assert no.status_code >= 400 and "access-control-allow-origin" not in no.headers


def test_return_to_never_leads_off_the_allowed_sites(newsletter_site, store):
    allowed = f"http://127.0.0.1:{newsletter_site.newsroom_port}"
    home = post(newsletter_site, {"Origin": allowed},
                data={"email": "f@example.com", "return_to": allowed + "/article?id=1#x"})
    assert home.status_code == 303 and home.headers["location"] == allowed + "/article?id=1#nl-thanks"
    away = post(newsletter_site, {"Origin": allowed},
                data={"email": "g@example.com", "return_to": "https://evil.example/phish"})
    assert away.status_code == 200 and "تحقق من بريدك" in away.text
    sneaky = post(newsletter_site, {"Origin": allowed},
                  data={"email": "h@example.com", "return_to": "javascript:alert(1)//" + allowed})
    assert sneaky.status_code == 200


def test_the_embed_page_shows_the_snippet_to_copy_and_the_box_working(newsletter_site, snippet):
    assert f'action="{newsletter_site.url}/subscribe"' in snippet
    assert f'href="{newsletter_site.url}/embed.css"' in snippet and f'src="{newsletter_site.url}/embed.js"' in snippet
    assert "الرسالة الإخبارية" in snippet and "أبرز الأحداث الدولية صباح كل يوم" in snippet and "اشترك" in snippet
    page = httpx.get(newsletter_site.url + "/embed")
    assert page.status_code == 200
    assert str(markupsafe.escape(snippet.strip())) in page.text, "the code to copy, escaped"
    assert '<form class="nl-form"' in page.text, "and the box itself, working"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(newsletter_site.url + "/embed.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cross-origin-resource-policy"] == "cross-origin"
    assert httpx.get(newsletter_site.url + "/embed.css").headers["content-type"].startswith("text/css")


def test_allowed_origins_are_written_as_browsers_write_origin(settings):
    site = settings.model_validate({**settings.model_dump(), "allowed_origins": [
        "https://www.Newsroom.example:443/", "http://news.example:80", "http://127.0.0.1:8080"]})
    assert site.allowed_origins == ["https://www.newsroom.example", "http://news.example", "http://127.0.0.1:8080"]
