"""A reader's own emails (confirmation, welcome) are first-class messages: VERP return path naming the
reader and no issue, DKIM signatures dkimpy verifies, list headers on the welcome only; the welcome
goes out once, right after the reader confirms over real HTTP, to the real SMTP server of the tests;
and a report about a confirmation bounces its address."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.mail.bounces import FeedbackPolicy, handle_report
from newsletter.mail.confirmations import ConfirmationMailer
from newsletter.store.database import Status
from newsletter.tokens import Tokens

from .test_bounces import BOUNCES, report
from .test_dkim import write_key
from .test_web import confirm_link, live_site, local, wait_for_mail

WELCOME_SUBJECT = "أهلًا بك في الرسالة الإخبارية"


@pytest.fixture
def mail_settings(settings, tmp_path):
    return settings.model_copy(update={
        "bounce_address": BOUNCES, "signup_rate_limit": 1000,
        "dkim_rsa_selector": "morning2026",
        "dkim_rsa_key_file": Path(write_key(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048))),
        "dkim_ed25519_selector": "morning2026e",
        "dkim_ed25519_key_file": Path(write_key(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate())),
    })


def dns_of(settings):
    from newsletter.mail.dkim import dkim_keys

    records = {}
    for key in dkim_keys(settings):
        kind, public = key.public_tags
        records[f"{key.selector}._domainkey.news.example.".encode()] = f"v=DKIM1; k={kind}; p={public}".encode()
    return lambda name, timeout=5: records.get(name if name.endswith(b".") else name + b".")


def reader_token(received, tokens: Tokens):
    local_part, _, domain = received.mail_from.rpartition("@")
    assert domain == "news.example" and local_part.startswith("bounces+"), received.mail_from
    return tokens.read_return_path_token(local_part.removeprefix("bounces+"))


def test_confirmation_and_welcome_are_verped_signed_and_only_the_welcome_has_list_headers(
        mail_settings, store, smtp_server):
    subscriber = store.request_subscription("layla@example.com")
    mailer = ConfirmationMailer(mail_settings, store)
    assert asyncio.run(mailer.send(subscriber))
    assert store.confirm(subscriber.id) is not None
    assert asyncio.run(mailer.send_welcome(store.subscriber_by_id(subscriber.id)))

    confirmation, welcome = smtp_server.handler.messages
    tokens, dns = Tokens(mail_settings.secret_key), dns_of(mail_settings)
    for received in (confirmation, welcome):
        token = reader_token(received, tokens)
        assert token is not None and (token.issue_tag, token.subscriber_id) == ("", subscriber.id)
        for index in range(2):
            assert dkim.DKIM(received.raw).verify(idx=index, dnsfunc=dns), f"signature {index}"
    assert "List-Unsubscribe" not in confirmation.parsed(), "nothing to leave before confirming"
    parsed = welcome.parsed()
    assert parsed["Subject"] == WELCOME_SUBJECT
    unsubscribe = parsed["List-Unsubscribe"].strip("<>")
    assert tokens.subscriber_from_unsubscribe(unsubscribe.rsplit("/", 1)[1]) == subscriber.id
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and parsed["List-Id"]
    text = parsed.get_body(("plain",)).get_content()
    assert "كل يوم عند السابعة صباحًا بتوقيت باريس" in text
    assert "https://news.example/archive\n" in text and unsubscribe in text
    html = parsed.get_body(("html",)).get_content()
    assert 'dir="rtl"' in html and 'lang="ar"' in html


def test_the_welcome_links_the_latest_issue_and_says_the_edition_time(mail_settings, store, smtp_server):
    from newsletter.edition import send_edition

    settings = mail_settings.model_copy(update={"edition_time": dt.time(6, 30), "timezone": "Asia/Beirut"})
    assert send_edition(settings, store, dt.date(2017, 5, 9)).report.sent == 0  # freezes the issue, nobody yet
    store.add_subscriber("omar@example.org", "")
    asyncio.run(ConfirmationMailer(settings, store).send_welcome(store.get_subscriber("omar@example.org")))

    text = smtp_server.handler.messages[-1].parsed().get_body(("plain",)).get_content()
    assert "عند السادسة والنصف صباحًا بتوقيت بيروت" in text
    assert "https://news.example/archive/2017-05-09" in text


def test_confirming_over_http_sends_one_welcome_and_none_when_off(mail_settings, store, smtp_server):
    for welcome in (True, False):
        address = f"reader-{welcome}@example.com".lower()
        with live_site(mail_settings.model_copy(update={"welcome": welcome})) as live, \
                httpx.Client(base_url=live.url, timeout=10) as client:
            before = len(smtp_server.handler.messages)
            assert client.post("/subscribe", data={"email": address}).status_code == 200
            wait_for_mail(smtp_server.handler, before + 1)
            link = local(confirm_link(smtp_server.handler.messages[-1]))
            assert client.get(link).status_code == 200  # a mail scanner's GET: no welcome
            pressed = [client.post(link) for _ in range(3)]  # a double press: one welcome
            assert all(p.status_code == 200 for p in pressed)
            if welcome:
                wait_for_mail(smtp_server.handler, before + 2)
            else:
                time.sleep(0.5)  # what a welcome takes to arrive when it does: ~20 ms
        to_reader = [m for m in smtp_server.handler.messages if m.rcpt_to == address]
        subjects = [m.parsed()["Subject"] for m in to_reader]
        assert subjects.count(WELCOME_SUBJECT) == (1 if welcome else 0), subjects
        assert store.get_subscriber(address).status == Status.active.value


def test_a_hard_bounce_of_a_confirmation_bounces_the_address_with_no_issue(mail_settings, store, smtp_server):
    subscriber = store.request_subscription("gone@example.org")
    assert asyncio.run(ConfirmationMailer(mail_settings, store).send(subscriber))
    return_path = smtp_server.handler.messages[0].mail_from
    raw = report("postfix_hard_5.1.1.eml", Tokens(mail_settings.secret_key), subscriber.id, "gone@example.org",
                 dt.date.today(), return_path=return_path)
    assert re.search(rb"bounces\+m-[0-9a-z]+-[a-z2-7]{16}@news\.example", raw)

    handled = handle_report(raw, store, Tokens(mail_settings.secret_key), BOUNCES, FeedbackPolicy(3, 14))

    assert [h.report.issue_date for h in handled] == [None]
    assert store.get_subscriber("gone@example.org").status == Status.bounced.value


def test_a_bounce_from_a_new_address_cancels_the_change_and_never_touches_the_reader(
        mail_settings, store, smtp_server):
    from newsletter.issue.render import Renderer
    from newsletter.mail.address_change import AddressChangeMailer

    tokens = Tokens(mail_settings.secret_key)
    store.add_subscriber("layla@example.com", "ليلى")
    reader = store.get_subscriber("layla@example.com")
    change = store.choices.request_change(reader.id, "layla@typo.example")
    mailer = AddressChangeMailer(mail_settings, Renderer(mail_settings.templates_dir, mail_settings.base_url), tokens)
    assert asyncio.run(mailer.send(change, reader.id, reader.name, "layla@typo.example", "https://news.example/c"))
    sent = smtp_server.handler.messages[0]
    token = reader_token(sent, tokens)
    assert (token.change_id, token.subscriber_id) == (change, 0), "the return path names the change, not the reader"
    assert "DKIM-Signature" in sent.parsed()
    raw = report("postfix_hard_5.1.1.eml", tokens, reader.id, "layla@typo.example", dt.date.today(),
                 return_path=sent.mail_from)

    handled = handle_report(raw, store, tokens, BOUNCES, FeedbackPolicy(3, 14))
    again = handle_report(raw, store, tokens, BOUNCES, FeedbackPolicy(3, 14))

    assert "cancelled" in handled[0].change and "no longer waiting" in again[0].change
    assert store.choices.pending_change(change, dt.timedelta(days=7)) is None, "the mistyped address is dropped"
    assert store.get_subscriber("layla@example.com").status == Status.active.value, "the reader keeps receiving"
    assert store.feedback.counts_by_issue(dt.date.today().isoformat()) == {}


def test_a_welcome_template_gmail_would_clip_is_refused_in_one_line(settings, tmp_path):
    import shutil

    from newsletter.errors import TemplateError
    from newsletter.issue.render import Renderer

    templates = shutil.copytree(settings.templates_dir, tmp_path / "templates")
    mjml = templates / "welcome.mjml.j2"
    filler = "          <mj-text>" + "أبرز الأحداث الدولية " * 40 + "</mj-text>\n"
    mjml.write_text(mjml.read_text(encoding="utf-8").replace("        </mj-column>\n", filler * 60 + "        </mj-column>\n", 1),
                    encoding="utf-8")
    renderer = Renderer(templates, "https://news.example")

    with pytest.raises(TemplateError, match=r"welcome\.mjml\.j2 makes \d+\.\d KB of HTML, over Gmail's 102 KB"):
        renderer.render_welcome("السابعة صباحًا بتوقيت باريس", "", "https://news.example/unsubscribe/u1-x")
