"""Attacks and odd requests against `newsletter serve`, under uvicorn over real HTTP: clean 4xx, never a 500
or a stall, the security headers on every answer, HEAD and Allow as HTTP wants."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from newsletter.store.database import Status
from newsletter.web.app import create_app

from .conftest import PROJECT, SAMPLE_DATE, LiveApp, run_cli
from .test_web import live_site, wait_for_mail
from .test_webhooks import POSTMARK_SECRET, TOPIC, Internet, notification, ses_bounce, signed


def assert_security_headers(response: httpx.Response) -> None:
    assert "frame-ancestors" in response.headers.get("content-security-policy", ""), response.status_code
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


@pytest.fixture
def web_settings(settings):
    return settings.model_copy(update={"signup_rate_limit": 1000})


@pytest.fixture
def client(web_settings):
    with live_site(web_settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_json_nested_a_thousand_levels_is_a_400_not_a_crash(client, store, caplog):
    deep = "[" * 1000 + "]" * 1000
    with caplog.at_level(logging.ERROR):
        for body in (deep, '{"email": ' + deep + "}", "{" + '"a":{' * 1000 + "}" * 1001):
            answer = client.post("/subscribe", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400
            assert_security_headers(answer)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback in the log"
    assert store.count_subscribers() == 0


@pytest.mark.parametrize(("content", "content_type"), [
    (b"email=%FF%FE@example.com", "application/x-www-form-urlencoded"),
    (b"email=\xff\xfe@example.com", "application/x-www-form-urlencoded"),
    (b'{"email": "\xff@example.com"}', "application/json"),
    (b"--x\r\nContent-Disposition: form-data; name=email\r\n\r\na@example.com", "multipart/form-data; boundary=x"),
    (b"--x--", "multipart/form-data"),
], ids=["percent-encoded-bad-utf8", "raw-bad-utf8", "json-bad-utf8", "multipart-unterminated", "multipart-no-boundary"])
def test_bodies_that_cannot_be_decoded_are_4xx(client, store, content, content_type):
    answer = client.post("/subscribe", content=content, headers={"Content-Type": content_type})
    assert 400 <= answer.status_code < 500
    assert_security_headers(answer)
    assert store.count_subscribers() == 0
    if "json" not in content_type:  # a form's reader gets the page in Arabic, not the framework's English
        assert 'dir="rtl"' in answer.text and "Missing boundary" not in answer.text, answer.text


def test_oversized_content_length_and_405_carry_the_security_headers_and_allow(client):
    big = client.post("/subscribe", content=b"x" * 20_000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert_security_headers(big)

    wrong = client.post("/archive")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert_security_headers(wrong)
    assert client.get("/subscribe").headers["allow"] == "POST"


def test_a_server_error_is_an_arabic_page_with_the_security_headers(web_settings, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT / "templates", templates)
    (templates / "pages" / "archive.html.j2").write_text("{{ 1 // 0 }}", encoding="utf-8")
    broken = web_settings.model_copy(update={"templates_dir": templates})
    with live_site(broken) as server, httpx.Client(base_url=server.url) as client:
        answer = client.get("/archive")
    assert answer.status_code == 500
    assert 'dir="rtl"' in answer.text and "حدث خطأ" in answer.text
    assert "ZeroDivisionError" not in answer.text and "Traceback" not in answer.text
    assert_security_headers(answer)


def test_head_answers_every_page_without_a_body(client, env, store):
    store.add_subscriber("reader@example.com")
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    for path in ("/", "/healthz", "/archive", f"/archive/{SAMPLE_DATE.isoformat()}", "/static/site.css",
                 "/unsubscribe"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert_security_headers(head)


def test_archive_dates_are_normalised(client, env, store):
    store.add_subscriber("reader@example.com")
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    answer = client.get("/archive/20170509")
    assert answer.status_code == 308 and answer.headers["location"] == "/archive/2017-05-09"
    followed = client.get("/archive/20170509", follow_redirects=True)
    assert followed.status_code == 200 and "كوبنهاغن" in followed.text


def test_the_web_ignores_names_so_nothing_a_stranger_types_reaches_a_header(client, store, smtp_server):
    answer = client.post("/subscribe", json={"email": "target@example.com",
                                             "name": "Boss\x00\r\nBcc: everyone@example.com"})
    assert answer.status_code == 202
    wait_for_mail(smtp_server.handler, 1)
    assert store.get_subscriber("target@example.com").name == ""
    confirmation = smtp_server.handler.messages[0]
    assert confirmation.parsed()["To"] == "target@example.com"
    assert b"Boss" not in confirmation.raw and b"Bcc" not in confirmation.raw


def test_control_characters_in_names_never_reach_a_header(env, store, smtp_server, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text('email,name\nfrom-csv@example.com,"ليلى\x00\x1b[31m\r\nBcc: x@example.com"\n',
                       encoding="utf-8")
    assert run_cli("subscribers", "import", str(listing), env=env).returncode == 0
    added = run_cli("subscribers", "add", "from-cli@example.com", "--name", "Omar\x07\x7f\x85 Ali", env=env)
    assert added.returncode == 0, added.stderr
    assert store.get_subscriber("from-cli@example.com").name == "Omar Ali"

    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    for received in smtp_server.handler.messages:
        headers = received.raw.split(b"\r\n\r\n", 1)[0]
        assert not any(b < 0x20 and b not in b"\r\n\t" for b in headers)
        assert all(line.startswith((b" ", b"\t")) or b":" in line for line in headers.split(b"\r\n"))
        assert "Bcc" not in received.parsed()
    names = {m.rcpt_to: m.parsed()["To"].addresses[0].display_name for m in smtp_server.handler.messages}
    assert names == {"from-cli@example.com": "Omar Ali", "from-csv@example.com": "ليلى [31m Bcc: x@example.com"}


def _hold_write_lock(database_url: str, release: threading.Event, held: threading.Event) -> None:
    """Another process's long write: SQLite's write lock, or a lock on PostgreSQL's subscribers table."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("LOCK TABLE subscribers IN EXCLUSIVE MODE"))
        held.set()
        release.wait(30)
        conn.rollback()
    engine.dispose()


def test_a_locked_database_stalls_nothing_and_answers_503_with_retry_after(web_settings, store):
    patient = web_settings.model_copy(update={"web_db_wait_seconds": 1.5})
    release, held = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(web_settings.database_url, release, held))
    with live_site(patient) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        locker.start()
        held.wait(10)
        try:
            waiting = []
            signups = [threading.Thread(target=lambda i=i: waiting.append(
                client.post("/subscribe", json={"email": f"w{i}@example.com"}))) for i in range(3)]
            for thread in signups:
                thread.start()
            # While signups wait for the lock, pages that need no write still answer at once.
            with httpx.Client(base_url=server.url, timeout=1.0) as impatient:
                assert impatient.get("/").status_code == 200
                assert impatient.get("/healthz").status_code == 200
            for thread in signups:
                thread.join()
            assert [a.status_code for a in waiting] == [503] * 3
            assert all(int(a.headers["retry-after"]) >= 1 for a in waiting)
            form = client.post("/subscribe", data={"email": "form@example.com"})
            assert form.status_code == 503 and "أعد المحاولة" in form.text
            assert_security_headers(form)
        finally:
            release.set()
            locker.join()
        assert client.post("/subscribe", json={"email": "later@example.com"}).status_code == 202
    assert store.get_subscriber("later@example.com").status == Status.pending.value


# The webhooks under fuzzing: whatever JSON, bytes or credentials arrive, the answer is a 4xx or a
# 200, never a 500, and nothing lands in the log as an error. A few hundred examples a run, each a
# real request to the app under uvicorn; on failure hypothesis prints the smallest body it found.
FUZZ = hypothesis.settings(max_examples=60, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Any character, and the ones that broke things: NUL, lone surrogates, controls, Arabic-Indic digits.
FUZZ_TEXT = st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff", "\x07", "\n", "\u0661"]),
                    max_size=20)
FUZZ_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | FUZZ_TEXT,  # floats: NaN and Infinity too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(FUZZ_TEXT, inner, max_size=4), max_leaves=10)
DELETE = object()


def fuzzed(value: dict, keys: list, kinds: list[str]) -> st.SearchStrategy[dict]:
    """`value` with a few of its fields (or new ones) replaced by any JSON, by a plausible word, or removed."""
    change = st.tuples(st.sampled_from(keys) | FUZZ_TEXT, st.just(DELETE) | st.sampled_from(kinds) | FUZZ_JSON)

    def apply(changes: list) -> dict:
        result = json.loads(json.dumps(value))
        for key, new in changes:
            if new is DELETE:
                result.pop(key, None)
            else:
                result[key] = new
        return result

    return st.lists(change, min_size=1, max_size=3).map(apply)


@pytest.fixture
def webhooks(settings, store, caplog):
    web = settings.model_copy(update={"ses_topic_arns": [TOPIC], "postmark_webhook_secret": POSTMARK_SECRET,
                                      "bounce_address": "bounces@news.example"})
    store.add_subscriber("layla@example.com", "")
    with LiveApp(create_app(web, store, fetch=Internet())) as live, \
            httpx.Client(base_url=live.url, timeout=10) as client, caplog.at_level(logging.WARNING):
        yield client
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "no traceback in the log"


SNS_KEYS = ["Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp", "SignatureVersion", "Signature",
            "SigningCertURL", "SubscribeURL", "Token"]
SNS_WORDS = ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation", "1", "2", TOPIC,
             "2026-12-06T05:22:16.123Z", "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem"]
SES_KEYS = ["notificationType", "eventType", "mail", "bounce", "complaint", "deliveryDelay"]
SES_WORDS = ["Bounce", "Complaint", "DeliveryDelay", "Delivery", "Permanent", "Transient"]
RECIPIENT_KEYS = ["emailAddress", "status", "diagnosticCode", "action"]
POSTMARK_KEYS = ["RecordType", "ID", "Type", "TypeCode", "Email", "Details", "Description", "MessageID", "Inactive"]
POSTMARK_WORDS = ["Bounce", "SpamComplaint", "HardBounce", "SoftBounce", "Blocked", "SpamNotification", "Transient"]


@hypothesis.given(body=FUZZ_JSON, raw=st.binary(max_size=200))
@FUZZ
def test_fuzz_any_json_or_bytes_to_the_webhooks_is_never_a_500(webhooks, body, raw):
    for content in (json.dumps(body).encode(), raw):
        assert webhooks.post("/webhooks/ses", content=content).status_code < 500
        assert webhooks.post("/webhooks/postmark", content=content,
                             auth=("postmark", POSTMARK_SECRET)).status_code < 500


@hypothesis.given(st.data())
@FUZZ
def test_fuzz_sns_envelopes_are_never_a_500(webhooks, data):
    message = signed(notification(ses_bounce("bounces@news.example", "layla@example.com")))
    body = data.draw(fuzzed(message, SNS_KEYS, SNS_WORDS))
    assert webhooks.post("/webhooks/ses", content=json.dumps(body)).status_code < 500


@hypothesis.given(st.data())
@FUZZ
def test_fuzz_signed_ses_events_are_a_200_or_a_400(webhooks, data):
    """Signed by "Amazon", from the right topic: the SES event inside is all that is odd."""
    event = ses_bounce("bounces@news.example", "layla@example.com")
    recipient = data.draw(fuzzed(event["bounce"]["bouncedRecipients"][0], RECIPIENT_KEYS, SES_WORDS))
    event["bounce"] = data.draw(fuzzed({**event["bounce"], "bouncedRecipients": [recipient]},
                                       ["bounceType", "bounceSubType", "bouncedRecipients"], SES_WORDS))
    event = data.draw(fuzzed(event, SES_KEYS, SES_WORDS))
    response = webhooks.post("/webhooks/ses", content=json.dumps(signed(notification(event))))
    assert response.status_code in (200, 400), response.text


@hypothesis.given(st.data())
@FUZZ
def test_fuzz_postmark_payloads_with_the_right_password_are_a_200_or_a_400(webhooks, data):
    payload = {"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1, "Email": "layla@example.com",
               "Details": "smtp;550 5.1.1 unknown", "Inactive": True}
    body = data.draw(fuzzed(payload, POSTMARK_KEYS, POSTMARK_WORDS))
    response = webhooks.post("/webhooks/postmark", content=json.dumps(body), auth=("postmark", POSTMARK_SECRET))
    assert response.status_code in (200, 400), response.text


# Header bytes h11 will send: no controls, no leading or trailing space.
HEADER_BYTES = st.binary(max_size=40).map(lambda raw: bytes(b for b in raw if b > 0x20 and b != 0x7F))


@hypothesis.given(authorization=st.one_of(
    HEADER_BYTES,
    HEADER_BYTES.map(lambda raw: b"Basic " + raw),
    st.binary(max_size=40).map(lambda raw: b"Basic " + base64.b64encode(raw)),
    FUZZ_TEXT.map(lambda password: b"Basic " + base64.b64encode(
        f"postmark:{password}".encode("utf-8", "surrogatepass")))).map(bytes.strip))  # h11 sends no edge spaces
@FUZZ
def test_fuzz_postmark_credentials_are_a_401(webhooks, authorization):
    response = webhooks.post("/webhooks/postmark", content=b"{}", headers={"Authorization": authorization})
    assert response.status_code == 401
