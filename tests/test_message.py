"""Personalised messages, spliced into pre-encoded bytes, equal the slow obvious build."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage
from email.utils import formataddr

import pytest

from newsletter.mail.message import MessageTemplate, Recipient, ascii_address
from newsletter.config import Tracking
from newsletter.issue.render import LINK_SLOT, UNSUBSCRIBE_SLOT, Issue, IssueStory, Renderer
from newsletter.tokens import Tokens

from .conftest import PROJECT

RECIPIENTS = [
    Recipient(1, "a@example.com", ""),
    Recipient(22, "layla+morning@example.com", "ليلى حداد"),
    Recipient(333, "user@مثال.مصر", "قارئ من مصر"),
    Recipient(4444, "long@example.org", "عبد الرحمن بن محمد بن عبد الله آل الطويل " * 4),
    Recipient(987654321, "j.obrien@example.ie", 'O\'Brien, "Jack"'),
]


@pytest.fixture(scope="module")
def rendered():
    stories = [
        IssueStory(f"https://news.example/{i}?a=1&b=2", f'عنوان "الخبر" رقم {i} & ما بعده', "ملخّص الخبر. " * (i + 3),
                   ["فرانس 24"], f"https://news.example/{i}.jpg" if i % 2 else None, "")
        for i in range(7)
    ]
    return Renderer(PROJECT / "templates", "https://news.example").render(Issue(dt.date(2026, 11, 24), stories))


def reference_message(rendered, settings, recipient: Recipient) -> EmailMessage:
    """What the obvious code would build, one EmailMessage per subscriber."""
    tokens = Tokens(settings.secret_key)
    url = f"{settings.base_url}/unsubscribe/{tokens.unsubscribe_token(recipient.id)}"

    def links(text: str, escape: bool) -> str:
        if settings.tracking is Tracking.off:
            return rendered.with_outlet_links(text, escape)
        return LINK_SLOT.sub(lambda m: f"{settings.base_url}/c/"
                             + tokens.click_token("20261124", int(m.group(1)), recipient.id), text)

    message = EmailMessage()
    message["From"] = formataddr((settings.from_name, settings.from_address))
    message["To"] = formataddr((recipient.name, ascii_address(recipient.email)))
    message["Subject"] = rendered.subject
    message["List-Unsubscribe"] = f"<{url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(links(rendered.text, False).replace(UNSUBSCRIBE_SLOT, url.rsplit("/", 1)[1]))
    message.add_alternative(links(rendered.html, True).replace(UNSUBSCRIBE_SLOT, url.rsplit("/", 1)[1]),
                            subtype="html")
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


@pytest.mark.parametrize("tracking", list(Tracking), ids=lambda t: t.value)
@pytest.mark.parametrize("recipient", RECIPIENTS, ids=lambda r: r.email)
def test_fast_message_equals_the_reference(rendered, settings, recipient, tracking):
    settings = settings.model_copy(update={"tracking": tracking})
    template = MessageTemplate(rendered, settings)
    raw = template.personalise(recipient)
    fast = email.message_from_bytes(raw, policy=email.policy.default)
    slow = reference_message(rendered, settings, recipient)

    for header in ("From", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert str(fast[header]).strip() == str(slow[header]).strip(), header
    # Compared with the intended text, not the stdlib's build: its folder puts
    # spaces between encoded words, where decoders drop them.
    assert fast["Subject"] == rendered.subject
    # The stdlib's address parser (unlike mail clients) adds a space between
    # adjacent encoded words; the words themselves must all be intact.
    assert fast["To"].addresses[0].display_name.split() == recipient.name.split()
    assert fast["To"].addresses[0].addr_spec == ascii_address(recipient.email)
    assert fast.get_body(("plain",)).get_content() == slow.get_body(("plain",)).get_content()
    assert fast.get_body(("html",)).get_content() == slow.get_body(("html",)).get_content()
    assert fast.defects == [] and all(part.defects == [] for part in fast.walk())
    for part in ("plain", "html"):
        content = fast.get_body((part,)).get_content()
        assert "NLLINK" not in content and UNSUBSCRIBE_SLOT not in content
        assert ("/c/" in content) is (tracking is not Tracking.off), "tracking=off: no /c/ link at all"
        assert ("https://news.example/3?a=1" in content) is (tracking is Tracking.off)
    lines = raw.split(b"\r\n")
    assert raw.isascii(), "8-bit-clean: no relay needs 8BITMIME or SMTPUTF8"
    assert max(len(line) for line in lines) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b""), "CRLF line endings only"


def test_tokens_and_message_ids_are_distinct_per_subscriber(rendered, settings):
    template = MessageTemplate(rendered, settings)
    parsed = [email.message_from_bytes(template.personalise(r), policy=email.policy.default) for r in RECIPIENTS]
    assert len({m["List-Unsubscribe"] for m in parsed}) == len(RECIPIENTS)
    assert len({m["Message-ID"] for m in parsed}) == len(RECIPIENTS)
    assert all(m["Message-ID"].endswith("@news.example>") for m in parsed)


@pytest.mark.parametrize("length", range(0, 7))
def test_splicing_stays_valid_whatever_the_alignment(settings, length):
    """Slots right next to each other or at the edges still decode to the exact text."""
    from newsletter.mail.message import SplicedBody

    import base64

    from newsletter.issue.render import SLOTS

    slot, link = UNSUBSCRIBE_SLOT, "NLLINK02SLOT"
    text = "ا" * length + slot + "b" * length + link + slot + "ـ" * (length % 3) + link + slot
    body = SplicedBody(text, SLOTS)
    for value, url in ((b"", b"y"), (b"x", b""), (b"xy", b"https://n.example/c/1"), (b"MTIz.abcdefgh", b"zz")):
        encoded = body.fill({slot: value, link: url})
        expected = text.replace(slot, value.decode()).replace(link, url.decode()).encode()
        assert base64.b64decode(encoded.replace(b"\r\n", b"")) == expected


@pytest.mark.parametrize("text", [
    "أبرز الأحداث الدولية — اجتماع للتحالف الدولي ضد تنظيم \"داعش\" الثلاثاء في كوبنهاغن",
    "عبد الرحمن بن محمد بن عبد الله آل الطويل " * 4,
    "كلمةطويلةجدابلامسافات" * 5,
])
def test_encoded_words_decode_to_the_exact_text(text):
    """An RFC 2047 decoder (whitespace between encoded words dropped) gets every space back."""
    from email.header import decode_header, make_header

    from newsletter.mail.message import encoded_words

    encoded = encoded_words(text)
    assert str(make_header(decode_header(encoded))) == text
    assert all(len(line) <= 76 for line in encoded.split("\r\n"))
    assert all(len(line) <= 76 for line in ("Subject: " + encoded_words(text, used=9)).split("\r\n"))


def test_a_name_cannot_inject_headers_or_break_the_wire_form(rendered, settings):
    template = MessageTemplate(rendered, settings)
    raw = template.personalise(Recipient(5, "victim@example.com", "Eve\r\nBcc: all@example.com\r\n.\r\n"))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Bcc"] is None
    assert message["To"].addresses[0].addr_spec == "victim@example.com"
    assert not any(line.startswith(b".") for line in raw.split(b"\r\n")), "nothing to dot-stuff"
    assert raw.endswith(b"\r\n")


def header_lines(raw: bytes) -> list[str]:
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")


@pytest.mark.parametrize("recipient", RECIPIENTS, ids=lambda r: r.email)
def test_header_lines_with_encoded_words_are_at_most_76_characters(rendered, settings, recipient):
    # RFC 2047 section 2; a long Arabic sender name and subject exercise the first line of each header
    settings = settings.model_copy(update={"from_name": "الرسالة الإخبارية الصباحية لأبرز الأحداث الدولية"})
    raw = MessageTemplate(rendered, settings).personalise(recipient)
    message = email.message_from_bytes(raw, policy=email.policy.default)

    encoded = [line for line in header_lines(raw) if "=?" in line]
    assert encoded, "the subject at least is encoded"
    assert max(len(line) for line in encoded) <= 76, max(encoded, key=len)
    assert message["Subject"] == rendered.subject
    assert message["From"].addresses[0].display_name.split() == settings.from_name.split()
    assert message["From"].addresses[0].addr_spec == settings.from_address
    assert message["List-Id"]
    if recipient.name:
        assert message["To"].addresses[0].display_name.split() == recipient.name.split()
    assert message.defects == []


def test_test_sends_get_a_new_message_id_each_time(rendered, settings):
    template = MessageTemplate(rendered, settings, test_send=True)
    ids = [email.message_from_bytes(template.personalise(Recipient(0, "editor@example.com")),
                                    policy=email.policy.default)["Message-ID"] for _ in range(3)]

    assert len(set(ids)) == 3, "a mailbox that drops duplicates would hide the second test"
    assert all(i.startswith("<morning.20261124.test.") and i.endswith("@news.example>") for i in ids)
    # a real send stays deterministic: a retried delivery carries the same id
    assert MessageTemplate(rendered, settings).message_id(7) == MessageTemplate(rendered, settings).message_id(7)
