"""Links from readers' emails, opened by robots and by readers, under uvicorn over real HTTP.

Mail scanners (Safe Links, Proofpoint, Mimecast) open every link of a message with GET and
HEAD: that must change nothing; only the reader's press of the page's button (a POST) acts.
"""

from __future__ import annotations

import re

import httpx
import pytest

from newsletter.store.database import Status
from newsletter.tokens import Tokens

from .conftest import ServeProcess
from .test_web import live_site, wait_for_mail

# What Microsoft's Safe Links sends (as logged by newsrooms' servers), more or less.
SCANNER = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0 Safari/537.36 Edg/120.0", "Accept": "*/*"}
ALLOWED_SITE = "https://www.newsroom.example"


@pytest.fixture
def site(settings):
    local = settings.model_copy(update={"signup_rate_limit": 1000, "allowed_origins": [ALLOWED_SITE]})
    with live_site(local) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def links_of(store, settings, email: str) -> dict[str, str]:
    subscriber_id = store.get_subscriber(email).id
    tokens = Tokens(settings.secret_key)
    return {"confirm": f"/confirm/{tokens.confirm_token(subscriber_id)}",
            "unsubscribe": f"/unsubscribe/{tokens.unsubscribe_token(subscriber_id)}"}


def test_a_scanner_opening_every_link_changes_nothing_and_the_button_does(site, store, settings, smtp_server):
    assert site.post("/subscribe", data={"email": "work@example.com"}).status_code == 200
    wait_for_mail(smtp_server.handler, 1)
    text = smtp_server.handler.messages[0].parsed().get_body(("plain",)).get_content()
    emailed = re.search(r"https://news\.example(/confirm/\S+)", text).group(1)
    store.add_subscriber("active@example.com")
    unsubscribe = links_of(store, settings, "active@example.com")["unsubscribe"]

    for _ in range(3):  # scanners open a link more than once, from several machines
        for path in (emailed, unsubscribe):
            assert site.head(path, headers=SCANNER).status_code == 200
            shown = site.get(path, headers=SCANNER, follow_redirects=True)
            assert shown.status_code == 200 and 'dir="rtl"' in shown.text
            assert f'<form method="post" action="https://news.example{path}">' in shown.text
    assert store.get_subscriber("work@example.com").status == Status.pending.value
    assert store.get_subscriber("active@example.com").status == Status.active.value

    confirmed = site.post(emailed)
    assert confirmed.status_code == 200 and "تم تأكيد اشتراكك" in confirmed.text
    assert store.get_subscriber("work@example.com").status == Status.active.value
    assert "تم تأكيد اشتراكك" in site.get(emailed).text, "a confirmed reader's link says so"
    one_click = site.post(unsubscribe, content="List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status_code == 200 and "تم إلغاء اشتراكك" in one_click.text
    assert store.get_subscriber("active@example.com").status == Status.unsubscribed.value


def test_pages_reached_by_a_token_are_never_stored(site, store, settings):
    store.add_subscriber("p@example.com", "", Status.pending)
    links = links_of(store, settings, "p@example.com")
    answers = [site.get(links["confirm"]), site.head(links["confirm"]), site.get(links["unsubscribe"]),
               site.get("/confirm/forged.token"), site.get("/unsubscribe/forged"),
               site.put(links["unsubscribe"]), site.post(links["confirm"]), site.post(links["unsubscribe"])]
    assert [a.headers.get("cache-control") for a in answers] == ["no-store"] * len(answers)
    assert "no-store" not in site.get("/").headers.get("cache-control", ""), "other pages may be cached"


def test_allow_lists_the_readers_post_on_both_links(site, store, settings):
    store.add_subscriber("a@example.com", "", Status.pending)
    for path in links_of(store, settings, "a@example.com").values():
        wrong = site.put(path)
        assert wrong.status_code == 405 and 'dir="rtl"' in wrong.text
        assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}, path
    assert store.get_subscriber("a@example.com").status == Status.pending.value


def test_cors_answers_only_the_signup(site, store, settings):
    store.add_subscriber("c@example.com", "", Status.pending)
    preflight = {"Origin": ALLOWED_SITE, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    signup = site.options("/subscribe", headers=preflight)
    assert signup.status_code == 200 and signup.headers["access-control-allow-origin"] == ALLOWED_SITE
    for path in [*links_of(store, settings, "c@example.com").values(), "/", "/archive"]:
        assert "access-control-allow-origin" not in site.options(path, headers=preflight).headers, path
        assert "access-control-allow-origin" not in site.get(path, headers={"Origin": ALLOWED_SITE}).headers, path
    # A page of another site may still post a form (no CORS needed for that): it must hold the token.
    assert "access-control-allow-origin" not in site.post("/archive", headers={"Origin": ALLOWED_SITE}).headers


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_to_the_buttons_are_an_arabic_413_and_change_nothing(site, store, settings, chunked):
    store.add_subscriber("big@example.com", "", Status.pending)
    store.add_subscriber("stays@example.com")
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * (settings.max_request_bytes + 1)
    content = iter([body[:1000], body[1000:]]) if chunked else body
    for path in (links_of(store, settings, "big@example.com")["confirm"],
                 links_of(store, settings, "stays@example.com")["unsubscribe"]):
        answer = site.post(path, content=content, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 413, path
        assert 'dir="rtl"' in answer.text and "الطلب كبير جدًا" in answer.text
        assert answer.headers["cache-control"] == "no-store"
        content = iter([body[:1000], body[1000:]]) if chunked else body
    assert store.get_subscriber("big@example.com").status == Status.pending.value
    assert store.get_subscriber("stays@example.com").status == Status.active.value
    json_client = site.post("/subscribe", content=b'{"email": "' + b"x" * 20_000 + b'"}',
                            headers={"Content-Type": "application/json"})
    assert json_client.status_code == 413 and json_client.json() == {"error": "the body is too large"}


def test_tokens_stay_out_of_the_access_log_of_newsletter_serve(env, store, settings):
    store.add_subscriber("logged@example.com", "", Status.pending)
    links = links_of(store, settings, "logged@example.com")
    click = "/c/20170509-1-1-abcdefghijklmnop"
    serve = ServeProcess(env)
    with serve as client:
        for path in (*links.values(), click):
            client.get(path)
            client.get(path + "?utm_source=x")
        client.post(links["unsubscribe"])
    output = serve.stdout + serve.stderr
    assert '"GET /confirm/<token> HTTP/1.1" 200' in output, output
    assert '"POST /unsubscribe/<token> HTTP/1.1" 200' in output and '"GET /c/<token> HTTP/1.1"' in output
    assert '"GET /healthz HTTP/1.1" 200' in output, "the rest of the log is as it was"
    for token in (*(link.rsplit("/", 1)[1] for link in links.values()), click[3:]):
        assert token not in output
