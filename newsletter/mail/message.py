"""One MIME message per subscriber, personalised by splicing into pre-encoded bytes.

The issue is encoded once (headers folded, bodies base64 with CRLF lines); per
subscriber only To, Message-ID, List-Unsubscribe and the unsubscribe token in
both bodies change. Base64 encodes 3 bytes at a time, so each body is cut at
the token slots into segments whose encoded forms are precomputed for the three
possible alignments; a subscriber costs a few small base64 calls and a join,
never a re-scan of the 60 KB issue.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from email.utils import format_datetime, formataddr

import idna

from ..config import Settings
from ..config import Tracking
from ..issue.render import SLOTS, UNSUBSCRIBE_SLOT, RenderedIssue, link_slot
from ..store.subscribers import clean_name
from ..tokens import Tokens
from .transaction import PreparedMessage

if TYPE_CHECKING:
    from .dkim import DkimSigner

CRLF = b"\r\n"


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


# RFC 2047 (section 2): a header line holding an encoded word is at most 76 characters.
MAX_ENCODED_LINE = 76
_ENCODED_WORD_OVERHEAD = len("=?utf-8?b??=")


def _chunk_bytes(room: int) -> int:
    """The most UTF-8 bytes whose encoded word fits in `room` characters (base64: 4 per 3 bytes)."""
    return max(6, (room - _ENCODED_WORD_OVERHEAD) // 4 * 3)  # 6: room for any one UTF-8 character


def encoded_words(text: str, used: int = 0) -> str:
    """RFC 2047 base64 encoded-words, folded onto continuation lines of at most 76 characters.

    `used` is how many characters the first line already holds ("Subject: "); each
    continuation line starts with one space. Every space stays inside an encoded word,
    since decoders drop whitespace between two encoded words (the stdlib's own folder
    loses spaces that way: «الأحداث — عنوان» comes out «الأحداث —عنوان»). Words are cut
    at spaces where possible, so no Arabic word is split across two encoded words.
    """
    limit = _chunk_bytes(MAX_ENCODED_LINE - used)
    chunks, chunk = [], b""
    for word in re.findall(r"\S+\s*|\s+", text):
        encoded = word.encode("utf-8")
        if chunk and len(chunk) + len(encoded) > limit:
            chunks.append(chunk)
            chunk, limit = b"", _chunk_bytes(MAX_ENCODED_LINE - 1)
        while len(chunk) + len(encoded) > limit:  # a very long word: cut between characters
            cut = limit - len(chunk)
            while cut and (encoded[cut] & 0xC0) == 0x80:
                cut -= 1
            chunks.append(chunk + encoded[:cut])
            chunk, encoded, limit = b"", encoded[cut:], _chunk_bytes(MAX_ENCODED_LINE - 1)
        chunk += encoded
    chunks.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks)


def _header(name: str, value: str) -> bytes:
    """A header line; unstructured text that is not ASCII becomes encoded words."""
    if not value.isascii():
        value = encoded_words(value, used=len(name) + 2)
    return f"{name}: {value}".encode("ascii") + CRLF


def ascii_address(email: str) -> str:
    """The address with an IDN domain in its ASCII (punycode) form, as SMTP wants it."""
    if email.isascii():
        return email
    local, _, domain = email.rpartition("@")
    return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"


def _mailbox(header: str, name: str, email: str) -> str:
    """A display name and address for `header`; an encoded name ends its line, the address goes on the next."""
    name = clean_name(name)  # names come from CSVs and the CLI: checked again where they meet a header
    if name and not name.isascii():
        return f"{encoded_words(name, used=len(header) + 2)}\r\n <{ascii_address(email)}>"
    return formataddr((name, ascii_address(email)))


def _alternative_parts() -> tuple[bytes, bytes, bytes]:
    """Content-Type header and the part boundaries of a text + HTML multipart/alternative.

    The first piece ends the message headers; the boundary contains "=_",
    which can never occur in base64.
    """
    boundary = f"=_morning_{secrets.token_hex(12)}"
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    text_head = (f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                 f"--{boundary}\r\n" + part.format("plain"))
    html_head = f"\r\n--{boundary}\r\n" + part.format("html")
    return text_head.encode("ascii"), html_head.encode("ascii"), f"\r\n--{boundary}--\r\n".encode("ascii")


class SplicedBody:
    """A base64 body with slots, precomputed so that filling the slots is cheap.

    `slots` matches every slot; fill() takes a value for each slot name (the matched text).
    """

    def __init__(self, text: str, slots: re.Pattern[str]) -> None:
        if slots.groups:  # split() would interleave the captured groups with the segments
            raise ValueError("the slot pattern must not capture")
        pieces = slots.split(text)
        self.names = [match.group(0) for match in slots.finditer(text)]
        self.segments = [p.encode("utf-8") for p in pieces]
        # encoded[i][h]: segment i without its first h bytes, cut to whole
        # 3-byte groups and encoded, plus the 0-2 bytes left over.
        self.encoded = [[self._aligned(segment, h) for h in range(3)] for segment in self.segments]

    @staticmethod
    def _aligned(segment: bytes, skip: int) -> tuple[bytes, bytes]:
        rest = segment[skip:]
        whole = len(rest) - len(rest) % 3
        return _b64_lines(rest[:whole]), rest[whole:]

    def fill(self, values: dict[str, bytes]) -> bytes:
        out = []
        encoded, carry = self.encoded[0][0]
        out.append(encoded)
        for index in range(1, len(self.segments)):
            segment = self.segments[index]
            piece = carry + values[self.names[index - 1]]
            take = -len(piece) % 3
            if take > len(segment):  # a tiny segment: keep gathering bytes
                carry = piece + segment
                continue
            out.append(_b64_lines(piece + segment[:take]))
            encoded, carry = self.encoded[index][take]
            out.append(encoded)
        out.append(_b64_lines(carry))
        return b"".join(out)


@dataclass(frozen=True)
class Recipient:
    id: int
    email: str
    name: str = ""


class MessageTemplate:
    """The issue's message, encoded once, ready to be personalised per subscriber."""

    def __init__(self, issue: RenderedIssue, settings: Settings, now: dt.datetime | None = None,
                 test_send: bool = False) -> None:
        self.settings = settings
        self.test_send = test_send
        self.tokens = Tokens(settings.secret_key)
        self.issue_tag = issue.date.strftime("%Y%m%d")
        self.envelope_from = ascii_address(settings.from_address)
        bounce_local, _, bounce_domain = settings.bounce_address.rpartition("@")
        self._verp = (bounce_local + "+", "@" + bounce_domain) if settings.bounce_address else None
        now = now or dt.datetime.now(dt.timezone.utc)
        static = [
            _header("From", _mailbox("From", settings.from_name, settings.from_address)),
            _header("Subject", issue.subject),
            _header("Date", format_datetime(now)),
            b"MIME-Version: 1.0\r\n",
            _header("List-Id", _mailbox("List-Id", settings.from_name, settings.effective_list_id)),
            # Gmail's feedback loop reports complaint rates per value of this header: one a day's issue.
            _header("Feedback-ID", f"{self.issue_tag}:morning:{settings.sender_domain}"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
        if settings.reply_to:
            static.append(_header("Reply-To", settings.reply_to))
        self.static_headers = b"".join(static)
        self.text_part_head, self.html_part_head, self.closing = _alternative_parts()
        # The Content-Type header ends the message's headers; the rest of the text part's head is body.
        content_type, _, self.body_head = self.text_part_head.partition(CRLF + CRLF)
        self.content_type = content_type + CRLF
        self.dkim = _dkim_signer(settings, self.static_headers + self.content_type, now)
        self.text_body = SplicedBody(issue.text, SLOTS)
        self.html_body = SplicedBody(issue.html, SLOTS)
        self.unsubscribe_base = f"{settings.base_url}/unsubscribe/"
        self.click_base = f"{settings.base_url}/c/"
        self.tracked = settings.tracking is not Tracking.off
        self.places = range(1, len(issue.stories) + 1)
        # Untracked, every reader's story links are the outlets' own; tracked, they are filled per reader.
        self.text_links = {link_slot(p): issue.story_url(p).encode("utf-8") for p in self.places}
        self.html_links = {link_slot(p): html.escape(issue.story_url(p)).encode("utf-8") for p in self.places}

    def envelope_sender(self, subscriber_id: int) -> str:
        """MAIL FROM for one reader: with a bounce address, a return path naming the issue and the reader."""
        if self._verp is None:
            return self.envelope_from
        prefix, domain = self._verp
        return prefix + self.tokens.return_path_token(self.issue_tag, subscriber_id) + domain

    def unsubscribe_url(self, subscriber_id: int) -> str:
        return self.unsubscribe_base + self.tokens.unsubscribe_token(subscriber_id)

    def message_id(self, subscriber_id: int) -> str:
        if self.test_send:
            # Each test is a new message: with one fixed id a mailbox that drops duplicates hides the second.
            return f"<morning.{self.issue_tag}.test.{secrets.token_hex(8)}@{self.settings.sender_domain}>"
        # Deterministic per (issue, subscriber): a retried delivery carries the
        # same Message-ID, so receiving systems can drop a duplicate.
        return f"<morning.{self.issue_tag}.{subscriber_id}@{self.settings.sender_domain}>"

    def personalise(self, recipient: Recipient) -> bytes:
        token = self.tokens.unsubscribe_token(recipient.id)
        url = self.unsubscribe_base + token
        list_unsubscribe = f"<{url}>"
        if self.settings.unsubscribe_mailto:
            list_unsubscribe += f", <mailto:{self.settings.unsubscribe_mailto}?subject=unsubscribe-{token}>"
        token_bytes = token.encode("ascii")
        reader_headers = b"".join((
            _header("To", _mailbox("To", recipient.name, recipient.email)),
            b"Message-ID: ", self.message_id(recipient.id).encode("ascii"), CRLF,
            b"List-Unsubscribe: ", list_unsubscribe.encode("ascii"), CRLF,
        ))
        if self.tracked:
            links = {link_slot(place): (self.click_base + self.tokens.click_token(self.issue_tag, place, recipient.id))
                     .encode("ascii") for place in self.places}
            text_values = html_values = {UNSUBSCRIBE_SLOT: token_bytes, **links}
        else:
            text_values = {UNSUBSCRIBE_SLOT: token_bytes, **self.text_links}
            html_values = {UNSUBSCRIBE_SLOT: token_bytes, **self.html_links}
        body = (self.body_head, self.text_body.fill(text_values), self.html_part_head,
                self.html_body.fill(html_values), self.closing)
        if self.dkim is None:
            return PreparedMessage(b"".join((reader_headers, self.static_headers, self.content_type, CRLF, *body)))
        body_bytes = b"".join(body)
        return PreparedMessage(b"".join((self.dkim.signatures(reader_headers, body_bytes), reader_headers,
                                         self.static_headers, self.content_type, CRLF, body_bytes)))


def _dkim_signer(settings: Settings, static_headers: bytes, now: dt.datetime) -> DkimSigner | None:
    if not settings.signs_dkim:
        return None
    from .dkim import DkimSigner, dkim_keys  # cryptography costs ~20 ms to import: only where DKIM is on

    return DkimSigner(settings.dkim_domain or settings.sender_domain, dkim_keys(settings), static_headers,
                      int(now.timestamp()))


def reader_return_path(settings: Settings, tokens: Tokens, subscriber_id: int) -> str:
    """MAIL FROM of a reader's own message (confirmation, welcome): VERP naming the reader and no issue."""
    return _verp(settings, tokens.return_path_token("", subscriber_id))


def change_return_path(settings: Settings, tokens: Tokens, change_id: int) -> str:
    """MAIL FROM of the email to a reader's new address: VERP naming the change (a bounce cancels it)."""
    return _verp(settings, tokens.change_return_path_token(change_id))


def _verp(settings: Settings, token: str) -> str:
    if not settings.bounce_address:
        return ascii_address(settings.from_address)
    local, _, domain = settings.bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def transactional_message(settings: Settings, recipient: Recipient, subject: str, html: str, text: str,
                          message_id: str, unsubscribe_url: str = "", now: dt.datetime | None = None) -> bytes:
    """A one-off message to one reader (confirmation, welcome): the issue's encoding and DKIM signature.

    With `unsubscribe_url` (a message to a subscribed reader) it carries the list headers and RFC 8058
    one-click List-Unsubscribe as the issue does; without (the confirmation, to an address not yet on
    the list) it has none: there is nothing to leave yet.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    text_head, html_head, closing = _alternative_parts()
    content_type, _, body_head = text_head.partition(CRLF + CRLF)
    headers = [
        _header("From", _mailbox("From", settings.from_name, settings.from_address)),
        _header("To", _mailbox("To", recipient.name, recipient.email)),
        _header("Subject", subject),
        _header("Date", format_datetime(now)),
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n".encode("ascii"),
    ]
    if unsubscribe_url:
        headers += [
            _header("List-Id", _mailbox("List-Id", settings.from_name, settings.effective_list_id)),
            f"List-Unsubscribe: <{unsubscribe_url}>\r\n".encode("ascii"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
    if settings.reply_to:
        headers.append(_header("Reply-To", settings.reply_to))
    head = b"".join(headers) + content_type + CRLF
    body = b"".join((body_head, _b64_lines(text.encode("utf-8")), html_head, _b64_lines(html.encode("utf-8")),
                     closing))
    signer = _dkim_signer(settings, head, now)
    signatures = signer.signatures(b"", body) if signer is not None else b""
    return b"".join((signatures, head, CRLF, body))
