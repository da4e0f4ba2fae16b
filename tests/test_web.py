"""The reader's web flow, under uvicorn over real HTTP, with a real SMTP server catching mail."""

from __future__ import annotations

import concurrent.futures
import re
import time
from urllib.parse import urlparse

import httpx
import pytest

from newsletter.config import Settings
from .ports import free_port
from newsletter.store.database import Status
from newsletter.tokens import Tokens
from newsletter.web.app import create_app

from .conftest import SAMPLE_DATE, LiveApp, run_cli


def live_site(settings: Settings, port: int | None = None) -> LiveApp:
    """The reader-facing app under uvicorn."""
    return LiveApp(create_app(settings), port)


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"signup_rate_limit": 1000})


@pytest.fixture
def live(web_settings):
    with live_site(web_settings) as server:
        yield server


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


def wait_for_mail(handler, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(handler.messages) < count:
        assert time.monotonic() < deadline, f"expected {count} message(s), got {len(handler.messages)}"
        time.sleep(0.02)


def confirm_link(received) -> str:
    text = received.parsed().get_body(("plain",)).get_content()
    return re.search(r"https://news\.example/confirm/\S+", text).group(0)


def local(url: str) -> str:
    """The path of a public BASE_URL link, to request it from the test server."""
    return urlparse(url).path


def test_signup_confirm_send_and_one_click_unsubscribe(client, env, store, smtp_server):
    page = client.get("/")
    assert page.status_code == 200
    assert 'dir="rtl"' in page.text and "اشترك" in page.text

    answer = client.post("/subscribe", data={"email": "Layla@Example.com", "website": ""})
    assert answer.status_code == 200 and "تحقق من بريدك" in answer.text
    assert store.get_subscriber("layla@example.com").status == Status.pending.value

    wait_for_mail(smtp_server.handler, 1)
    confirmation = smtp_server.handler.messages[0]
    assert confirmation.rcpt_to == "layla@example.com"
    assert confirmation.parsed()["Subject"] == "أكّد اشتراكك في الرسالة الإخبارية"
    shown = client.get(local(confirm_link(confirmation)))
    assert shown.status_code == 200 and "أكّد اشتراكي" in shown.text, "the link shows a button"
    assert store.get_subscriber("layla@example.com").status == Status.pending.value
    confirmed = client.post(local(confirm_link(confirmation)))
    assert confirmed.status_code == 200 and "تم تأكيد اشتراكك" in confirmed.text
    assert client.post(local(confirm_link(confirmation))).status_code == 200, "pressing twice is fine"
    assert store.get_subscriber("layla@example.com").status == Status.active.value

    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    issue = smtp_server.handler.messages[-1]
    assert issue.rcpt_to == "layla@example.com" and issue.parsed()["List-Id"]

    unsubscribe_url = issue.parsed()["List-Unsubscribe"].strip("<>")
    one_click = client.post(local(unsubscribe_url), content="List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status_code == 200
    assert "set-cookie" not in one_click.headers
    assert store.get_subscriber("layla@example.com").status == Status.unsubscribed.value
    assert client.post(local(unsubscribe_url), content="List-Unsubscribe=One-Click").status_code == 200

    before = len(smtp_server.handler.messages)
    next_day = SAMPLE_DATE.replace(day=SAMPLE_DATE.day + 1)
    run_cli("send", "--date", next_day.isoformat(), env={**env, "NEWSLETTER_WINDOW_HOURS": "48"})
    assert len(smtp_server.handler.messages) == before, "an unsubscribed reader gets nothing more"


def test_json_clients_get_json_and_the_same_answer_for_anyone(client, store):
    store.add_subscriber("active@example.com", "", Status.active)
    answers = [client.post("/subscribe", json={"email": address})
               for address in ("new@example.com", "new@example.com", "active@example.com")]
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1, "no way to learn who subscribes"
    assert store.get_subscriber("active@example.com").status == Status.active.value


def test_unsubscribed_reader_who_signs_up_again_goes_through_confirmation(client, store, smtp_server):
    store.add_subscriber("back@example.com", "", Status.unsubscribed)
    client.post("/subscribe", json={"email": "back@example.com"})
    assert store.get_subscriber("back@example.com").status == Status.pending.value
    wait_for_mail(smtp_server.handler, 1)


def test_idn_addresses_are_accepted(client, store):
    assert client.post("/subscribe", json={"email": "قارئ@example.com"}).status_code == 422, "no SMTPUTF8 locals"
    assert client.post("/subscribe", json={"email": "reader@مثال.مصر"}).status_code == 202
    assert store.get_subscriber("reader@مثال.مصر") is not None


def test_many_signups_of_one_address_at_once_end_as_one_row_and_one_email(client, live, store, smtp_server):
    def sign_up(_):
        with httpx.Client(base_url=live.url, timeout=10) as c:
            return c.post("/subscribe", json={"email": "same@example.com"}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(sign_up, range(24)))
    assert set(codes) == {202}
    assert store.count_subscribers() == 1
    time.sleep(0.5)
    assert smtp_server.handler.recipients() == ["same@example.com"]


def test_honeypot_is_answered_politely_and_stores_nothing(client, store, smtp_server):
    answer = client.post("/subscribe", data={"email": "bot@example.com", "website": "http://spam.example"})
    assert answer.status_code == 200 and "تحقق من بريدك" in answer.text
    assert store.count_subscribers() == 0


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b", "x" * 400 + "@example.com", "<script>@x.com",
                                   "a@example..com", "سلام"])
def test_invalid_addresses_get_4xx_and_nothing_is_stored(client, store, email):
    form = client.post("/subscribe", data={"email": email})
    as_json = client.post("/subscribe", json={"email": email})
    assert form.status_code == 422 and as_json.status_code == 422
    assert "هذا العنوان لا يبدو بريدًا إلكترونيًا صحيحًا" in form.text
    assert "<script>@" not in form.text, "input is never reflected unescaped"
    assert store.count_subscribers() == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        ("x" * 1_000_000, "application/x-www-form-urlencoded", 413),
        ("{not json", "application/json", 400),
        ('{"email": ["a@example.com"]}', "application/json", 400),
        ('["a@example.com"]', "application/json", 400),
        ("email=a@example.com", "text/plain", 415),
        ("<xml/>", "application/xml", 415),
    ],
    ids=["1MB-body", "broken-json", "email-not-a-string", "json-array", "text-plain", "xml"],
)
def test_bad_requests_get_clean_4xx(client, store, content, content_type, status):
    answer = client.post("/subscribe", content=content, headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert store.count_subscribers() == 0


def test_a_chunked_oversized_body_is_refused_too(client, store):
    def chunks():
        for _ in range(100):
            yield b"email=a%40example.com&pad=" + b"x" * 10_000

    answer = client.post("/subscribe", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    assert store.count_subscribers() == 0


def test_forged_and_expired_tokens_get_a_clear_arabic_page(client, store, web_settings):
    subscriber_id = store.add_subscriber("p@example.com", "", Status.pending) and store.get_subscriber("p@example.com").id
    good = Tokens(web_settings.secret_key).confirm_token(subscriber_id)
    for forged in (client.get(f"/confirm/{good[:-2]}xx"), client.post(f"/confirm/{good[:-2]}xx")):
        assert forged.status_code == 400 and "رابط التأكيد غير صالح" in forged.text
        assert 'action="https://news.example/subscribe"' in forged.text, "a way to ask for a new link"
    expired = Tokens(web_settings.secret_key, confirm_max_age_seconds=-1).check_confirm(good)
    assert expired.expired and expired.subscriber_id == subscriber_id
    bad_unsubscribe = client.post("/unsubscribe/MQ.forged", content="List-Unsubscribe=One-Click")
    assert bad_unsubscribe.status_code == 400
    assert client.get("/unsubscribe/MQ.forged").status_code == 400
    assert store.get_subscriber("p@example.com").status == Status.pending.value


def test_head_and_get_on_a_confirmation_link_confirm_nothing(client, store, web_settings):
    # Link checkers and mail scanners open links with HEAD and GET; only the reader's button confirms.
    store.add_subscriber("probe@example.com", "", Status.pending)
    token = Tokens(web_settings.secret_key).confirm_token(store.get_subscriber("probe@example.com").id)
    assert client.head(f"/confirm/{token}").status_code == 200
    assert client.get(f"/confirm/{token}").status_code == 200
    assert store.get_subscriber("probe@example.com").status == Status.pending.value
    assert client.post(f"/confirm/{token}").status_code == 200
    assert store.get_subscriber("probe@example.com").status == Status.active.value


def test_an_expired_confirmation_link_offers_a_new_one(settings, store):
    store.add_subscriber("late@example.com", "", Status.pending)
    token = Tokens(settings.secret_key).confirm_token(store.get_subscriber("late@example.com").id)
    time.sleep(1.1)
    strict = settings.model_copy(update={"confirm_max_age_days": 0.5 / 86400})
    with live_site(strict) as server, httpx.Client(base_url=server.url) as client:
        pressed = client.post(f"/confirm/{token}")
        answer = client.get(f"/confirm/{token}")
    assert answer.status_code == pressed.status_code == 400
    assert "انتهت صلاحية رابط التأكيد" in answer.text and "انتهت صلاحية رابط التأكيد" in pressed.text
    assert 'value="late@example.com"' in answer.text
    assert store.get_subscriber("late@example.com").status == Status.pending.value


def test_a_flood_of_signups_from_one_address_gets_429_with_retry_after(settings, store):
    limited = settings.model_copy(update={"signup_rate_limit": 3})
    with live_site(limited) as server, httpx.Client(base_url=server.url) as client:
        codes = [client.post("/subscribe", json={"email": f"r{i}@example.com"}).status_code for i in range(6)]
        last = client.post("/subscribe", json={"email": "r9@example.com"})
    assert codes == [202, 202, 202, 429, 429, 429]
    assert int(last.headers["Retry-After"]) >= 1
    assert store.count_subscribers() == 3


def test_security_headers_on_every_page(client):
    for path in ("/", "/archive", "/unsubscribe/x", "/nope"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_archive_shows_every_sent_issue_without_a_personal_token(client, env, store, smtp_server):
    store.add_subscriber("reader@example.com")
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    listing = client.get("/archive")
    assert "الثلاثاء 9 أيار/مايو 2017" in listing.text
    issue = client.get(f"/archive/{SAMPLE_DATE.isoformat()}")
    assert issue.status_code == 200 and "كوبنهاغن" in issue.text
    assert "NLUNSUBSCRIBE" not in issue.text
    email_html = smtp_server.handler.messages[0].parsed().get_body(("html",)).get_content()
    view_link = re.search(r'href="(https://news\.example/archive/[^"]+)"', email_html).group(1)
    assert client.get(local(view_link)).status_code == 200, "the email's view-in-browser link works"
    assert client.get("/archive/2001-01-01").status_code == 404
    assert client.get("/archive/not-a-date").status_code == 404


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_smtp_down_at_signup_keeps_the_reader_and_retries_later(web_settings, store, env, smtp_server):
    down = web_settings.model_copy(update={"smtp_port": free_port()})
    with live_site(down) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/subscribe", json={"email": "patient@example.com"}).status_code == 202
        time.sleep(4)  # the background send gives up after its connection attempts
    assert store.get_subscriber("patient@example.com").status == Status.pending.value
    assert smtp_server.handler.messages == []

    retry = run_cli("confirmations", env=env)

    assert retry.returncode == 0, retry.stderr
    assert "sent 1" in retry.stdout
    assert smtp_server.handler.recipients() == ["patient@example.com"]
    assert run_cli("confirmations", env=env).stdout.strip().endswith("sent 0, failed 0.")


def test_forget_erases_but_keeps_an_unsubscribed_reader_unsubscribed(env, store, tmp_path):
    store.add_subscriber("gone@example.com", "غائب", Status.unsubscribed)
    store.add_subscriber("other@example.com", "", Status.active)
    assert run_cli("subscribers", "forget", "gone@example.com", env=env).returncode == 0
    assert store.get_subscriber("gone@example.com") is None
    export = run_cli("subscribers", "export", env=env).stdout
    assert "gone@example.com" not in export and "غائب" not in export
    old_list = tmp_path / "old.csv"
    old_list.write_text("gone@example.com\nnew@example.com\n", encoding="utf-8")
    imported = run_cli("subscribers", "import", str(old_list), env=env)
    assert "1 previously unsubscribed" in imported.stdout
    assert store.get_subscriber("gone@example.com") is None
    by_hand = run_cli("subscribers", "add", "Gone@Example.com", env=env)
    assert by_hand.returncode == 1 and "forgotten at their request" in by_hand.stderr, by_hand.stderr
    assert store.get_subscriber("gone@example.com") is None, "nor by hand"


@pytest.mark.sqlite_only
def test_serve_on_another_port_makes_pages_whose_links_and_form_reach_it(env):
    import subprocess
    import sys

    from .conftest import PROJECT

    port = free_port()
    local = {**env, "NEWSLETTER_BASE_URL": "http://127.0.0.1:8000"}  # a local address on another port
    server = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)], env=local,
                              cwd=PROJECT / "tests", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert f'action="http://127.0.0.1:{port}/subscribe"' in page
    assert f'href="http://127.0.0.1:{port}/static/site.css"' in page and ":8000" not in page
