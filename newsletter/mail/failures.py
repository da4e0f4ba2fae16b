"""What a delivery report says about each failed recipient: who, what kind of failure, and why.

Detection only, as flufl.bounce's detectors are: the caller decides what it does to a reader.
Each recipient's status comes from the report's own words about that recipient: an RFC 3464
DSN's per-recipient fields (Action, Status, Diagnostic-Code), or else the lines of prose next to
that address. Never from a number elsewhere in the text: a relay's IP address (64.4.15.110), a
software version (4.1.5.31) or a quoted spam header (B=0.500) says nothing about the mailbox.
flufl's detectors decide what failed and whether for good (permanent) or for now (temporary, a
delay warning); the words only refine a permanent failure: a policy block, a full mailbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses
from enum import Enum

from flufl.bounce import all_failures


class FailureKind(str, Enum):
    hard = "hard"  # the address does not exist, or the relay gave up on it
    soft = "soft"  # the mailbox is full or over quota, the system is full: may clear
    blocked = "blocked"  # refused by policy (5.7.x: spam, authentication, reputation): about us, not the reader
    delayed = "delayed"  # delivery is late and still being tried: not a failure yet


@dataclass(frozen=True)
class Failure:
    address: str  # lowercased
    kind: FailureKind
    status: str  # the enhanced status code, 5.1.1, or ""
    reason: str  # the server's words about this recipient, one line


# An enhanced status code (RFC 3463) standing alone: not part of an IP address, a version or a number.
_STATUS = re.compile(r"(?<![\w.=/:])([245])\.(\d{1,3})\.(\d{1,3})(?![\w.]*\d)")
# A basic SMTP reply code standing alone (550, 452-…), not inside a number such as 0.500 or 2550.
_REPLY = re.compile(r"(?<![\w.=/:#-])([45][0-5]\d)(?=[ -]|$)", re.MULTILINE)
# A server's reply as relays quote it: a reply code then an enhanced status of the same class
# ("550 5.1.1", "smtp;550-5.7.26", "552 #5.2.2"); neither an address nor a version has that shape.
_REPLY_WITH_STATUS = re.compile(r"(?<![\w.])([45])\d\d[ -]#?(\1\.\d{1,3}\.\d{1,3})(?![\w.]*\d)")
# Enhanced statuses whose subject and detail say the mailbox or system is full: temporary, whatever the class.
FULL_STATUSES = frozenset({"2.2", "3.1", "4.5", "2.3", "3.4"})  # full, system full, congestion, too big ×2
_QUOTA_WORDS = re.compile(r"quota|(mail ?box|mail ?folder|inbox|disk)( is)? full|insufficient (system )?storage|"
                          r"mailbox size limit|too much mail", re.IGNORECASE)
# Words receivers use for refusing the sender rather than the address: spam filters, reputation,
# authentication (SPF, DKIM, DMARC), block lists.
_POLICY_WORDS = re.compile(
    r"unsolicited|\bspam|block ?list|black ?list|\bblocked\b|blocked using|reputation|\bpolicy\b|"
    r"\bspf\b|\bdkim\b|\bdmarc\b|unauthenticated|not authenticated|authentication|rbl\b|spamhaus|"
    r"content rejected|message content", re.IGNORECASE)
# A prose report's words about one recipient: the line naming it and the lines that follow it,
# up to a blank line or another recipient; more than this is somebody else's text.
_WINDOW_LINES = 6


def recipient_failures(message: Message) -> list[Failure]:
    """Every failed recipient of a report, each with its own kind and status. Raises only on a detector's bug."""
    failures = {f.address: f for f in _dsn_failures(message)}
    temporary, permanent = all_failures(message)
    text = _text(message)
    for raw, gave_up in [*((a, False) for a in temporary), *((a, True) for a in permanent)]:
        address = raw.decode("ascii", "replace").lower()
        if address in failures:
            continue  # the DSN's own fields for it take precedence over any detector
        words = _words_about(text, address)
        status = _status_in(words)
        failures[address] = Failure(address, _prose_kind(status, words, gave_up), status, one_line(words))
    return list(failures.values())


def quoted_reply(message: Message) -> Failure | None:
    """The failure in a report no detector understands, from the server's reply it quotes, if it quotes one.

    Only for a report whose return path names the reader (the reply must then be about them);
    its address is left empty for the caller to fill in.
    """
    text = _text(message)
    match = _REPLY_WITH_STATUS.search(text)
    if match is None:
        return None
    words = one_line(_line_around(text, match.start()))
    return Failure("", _final_kind(match.group(2), words), match.group(2), words)


def _line_around(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start:end if end >= 0 else None]


def _dsn_failures(message: Message) -> list[Failure]:
    """The failed recipients an RFC 3464 DSN lists, from each recipient's own fields."""
    found = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            address = _recipient_of(block)
            action = str(block.get("Action", "")).strip().lower()
            if not address or action in ("delivered", "relayed", "expanded"):
                continue
            status_field = str(block.get("Status", ""))
            reason = one_line(str(block.get("Diagnostic-Code", "")).partition(";")[2])
            status = _status_in(status_field)
            if status[1:] in ("", ".0.0"):  # 5.0.0 says only "failed": the remote server's own code says more
                status = _status_in(reason) or status
            words = f"{status_field} {reason}"
            if action == "delayed":
                found.append(Failure(address, FailureKind.delayed, status, reason))
            elif action == "failed" or status.startswith("5"):
                found.append(Failure(address, _final_kind(status, words), status, reason or one_line(status_field)))
    return found


def _recipient_of(block: Message) -> str:
    for name in ("Original-Recipient", "Final-Recipient"):  # the address we sent to, before any forwarding
        value = str(block.get(name, ""))
        _, _, address = value.partition(";")
        for _, found in getaddresses([address.strip() or value]):
            if "@" in found:
                return found.strip().lower()
    return ""


def _prose_kind(status: str, words: str, gave_up: bool) -> FailureKind:
    """A prose report's kind for one recipient: a warning stays a delay whatever its words."""
    if not gave_up:
        return FailureKind.delayed
    return _final_kind(status, words)


def reply_kind(reply: str) -> FailureKind:
    """The kind of a permanent refusal a server gave during the send ("550 5.1.1 User unknown": hard;
    "554 5.7.1 Relay access denied": blocked), read as a report's words about one recipient are."""
    return _final_kind(_status_in(reply), reply)


def _final_kind(status: str, words: str) -> FailureKind:
    """The kind of a failure the relay will not retry, from its status and the server's words."""
    reply = _REPLY.search(words)
    klass, subject, detail = status.split(".") if status else ((reply.group(1)[0] if reply else ""), "", "")
    if subject == "7" or _POLICY_WORDS.search(words):
        return FailureKind.blocked
    if f"{subject}.{detail}" in FULL_STATUSES or _QUOTA_WORDS.search(words):
        return FailureKind.soft
    # 4.x.x in a final report: the relay retried for days (4.4.7 expired, 4.4.1 no answer) and
    # gave up, as flufl reads it too: the address has been unreachable all that time.
    return FailureKind.hard


def _status_in(words: str) -> str:
    match = _STATUS.search(words)
    return match.group(0) if match else ""


def _words_about(text: str, address: str) -> str:
    """The lines of a prose report about one recipient: the line naming it and what follows."""
    lines = text.splitlines()
    lowered = [line.lower() for line in lines]
    for number, line in enumerate(lowered):
        if address not in line:
            continue
        window = [lines[number]]
        for following in lines[number + 1:number + _WINDOW_LINES]:
            if not following.strip() or ("@" in following and address not in following.lower()
                                         and not _REPLY.search(following)):
                break
            window.append(following)
        return " ".join(window)
    return ""


def _text(message: Message) -> str:
    """The report's human-readable part (text/plain, else any text), decoded whatever its charset claims."""
    parts = [p for p in message.walk() if p.get_content_maintype() == "text"]
    parts.sort(key=lambda p: p.get_content_type() != "text/plain")
    for part in parts:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return _decode_text(payload, part.get_content_charset())[:50_000]
    return ""


def _decode_text(payload: bytes, charset: str | None) -> str:
    """Bytes as text in the charset they claim; an unknown or wrong charset falls back without raising."""
    try:
        return payload.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):  # ansi_x3.110-1983 and other names Python does not know
        return payload.decode("utf-8", "replace")


def one_line(text: object) -> str:
    """A server's words as one line, cut to what is worth keeping."""
    return " ".join(str(text).split())[:500]
