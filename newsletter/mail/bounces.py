"""Delivery reports read: what a bounce, a complaint or an auto-reply says, and about whom.

Detection only; what that does to a reader is the store's policy (store/feedback.py).
Failed recipients come from GNU Mailman's detectors (`flufl.bounce`: RFC 3464 DSNs and the
formats of Exim, Exchange, Yahoo, qmail …), complaints from ARF reports (RFC 5965). Who it is
about comes first from the return path (VERP: bounces+<signed token>@…), which names the reader
even when the report's text is useless; without one, from the addresses the report names.
"""

from __future__ import annotations

import email
import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from ..store.database import Store
from ..store.feedback import Feedback, Recorded, blocked_warning
from ..store.schema import FeedbackKind
from ..tokens import ReturnPathToken, Tokens
from .failures import FailureKind, one_line, quoted_reply, recipient_failures

log = logging.getLogger(__name__)
# flufl.bounce logs a traceback before re-raising when a detector trips over a malformed
# report; parse_report catches that and the report is listed in one line instead.
_detector_log = logging.getLogger("flufl.bounce")
_detector_log.addHandler(logging.NullHandler())
_detector_log.propagate = False

# Headers naming the address a report was delivered to, most trustworthy first: those the
# receiving MTA adds (Postfix: Delivered-To, X-Original-To; Exim: Envelope-To) before To.
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_MESSAGE_ID = re.compile(r"<morning\.(\d{8})\.(\d+)@")
_AUTO_SUBJECT = re.compile(r"^(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|vacation|"
                           r"abwesenheit|absence|réponse automatique|رد تلقائي)", re.IGNORECASE)


class ReportKind(str, Enum):
    hard = "hard"
    soft = "soft"
    blocked = "blocked"  # refused by policy (5.7.x: spam, authentication, reputation): about us, not the reader
    delayed = "delayed"  # a warning that delivery is late (Action: delayed): not a bounce
    complaint = "complaint"
    auto_reply = "auto-reply"  # out of office and the like: nothing to do
    unknown = "unknown"  # neither a bounce nor a complaint we can read: kept for a person
    unreadable = "unreadable"  # damaged past reading (structure, charset, a detector failing): kept for a person


@dataclass(frozen=True)
class Report:
    """What one incoming report says, before anyone acts on it."""

    report_id: str
    kind: ReportKind
    addresses: frozenset[str]  # the failed recipients it names, lowercased
    token: ReturnPathToken | None  # the reader and issue its return path names, when it has one
    forged_token: bool  # it carries a return-path token that does not verify
    complained_id: int | None  # for a complaint: the reader its copy of our message names (signed link)
    original_issue_tag: str | None  # for a complaint: the issue its copy of our message is from
    status: str  # the enhanced status code, 5.1.1, or ""
    reason: str  # the server's words, one line
    # Whether the addresses it names may be believed without a token: yes from an authenticated
    # relay's webhook, and from mail when there is no VERP; with VERP every genuine report to the
    # bounce mailbox carries a token, and one without could be anybody's.
    addresses_believed: bool = True

    @property
    def issue_date(self) -> str | None:
        tag = self.token.issue_tag if self.token else self.original_issue_tag
        return f"{tag[:4]}-{tag[4:6]}-{tag[6:]}" if tag else None


def parse_report(raw: bytes, tokens: Tokens, bounce_address: str = "") -> list[Report]:
    """Read one report: one `Report` per outcome it names (a report may list several recipients,
    each failed its own way). Never raises: a report that cannot be understood is `unreadable`."""
    try:
        reports = _read_report(raw, tokens, bounce_address)
    except Exception as exc:  # noqa: BLE001 (one damaged report must never stop a run over a mailbox)
        log.debug("report could not be read", exc_info=True)
        return [Report(_report_id_of_bytes(raw), ReportKind.unreadable, frozenset(), None, False, None, None, "",
                       f"cannot be read ({type(exc).__name__}: {one_line(exc)[:200]})")]
    return [replace(r, addresses_believed=not bounce_address) for r in reports]


def _read_report(raw: bytes, tokens: Tokens, bounce_address: str) -> list[Report]:
    message = email.message_from_bytes(raw)
    report_id = _report_id(message, raw)
    token, forged = _return_path_token(message, tokens, bounce_address)
    if _is_feedback_report(message):
        original = _original_headers(message)
        complained = _unsubscribe_id(original, tokens) if original is not None else None
        issue_tag = _issue_tag_of(original, complained) if original is not None else None
        return [Report(report_id, ReportKind.complaint, frozenset(_complaint_recipients(message)), token, forged,
                       complained, issue_tag, "", _feedback_type(message))]
    failures = recipient_failures(message)
    if failures:
        groups: dict[tuple[FailureKind, str, str], set[str]] = {}
        for failure in failures:
            groups.setdefault((failure.kind, failure.status, failure.reason), set()).add(failure.address)
        return [Report(report_id, ReportKind(kind.value), frozenset(addresses), token, forged, None, None, status,
                       reason) for (kind, status, reason), addresses in groups.items()]
    if _is_auto_reply(message):
        return [Report(report_id, ReportKind.auto_reply, frozenset(), token, forged, None, None, "",
                       _subject(message))]
    quoted = quoted_reply(message) if token is not None else None
    if quoted is not None:
        return [Report(report_id, ReportKind(quoted.kind.value), frozenset(), token, forged, None, None,
                       quoted.status, quoted.reason)]
    return [Report(report_id, ReportKind.unknown, frozenset(), token, forged, None, None, "", _subject(message))]


def _report_id(message: Message, raw: bytes) -> str:
    message_id = (message.get("Message-ID") or "").strip()
    if message_id and len(message_id) <= 200:
        return message_id
    return _report_id_of_bytes(raw)


def _report_id_of_bytes(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _return_path_token(message: Message, tokens: Tokens, bounce_address: str) -> tuple[ReturnPathToken | None, bool]:
    """The verified token in the address the report was sent to; and whether a token failed to verify."""
    addresses = [a for h in DELIVERY_HEADERS for _, a in getaddresses([str(v) for v in message.get_all(h, [])])]
    return return_path_token(addresses, tokens, bounce_address)


def return_path_token(addresses: list[str], tokens: Tokens,
                      bounce_address: str) -> tuple[ReturnPathToken | None, bool]:
    """The first return-path token among `addresses` that verifies; and whether one failed to verify.

    Only the configured bounce address carries tokens (bounces+<token>@ its domain), and only
    what has a token's shape is one: without NEWSLETTER_BOUNCE_ADDRESS, or for a plus address of
    another mailbox (news+morning@…), the report is an ordinary one, read by what it names.
    """
    local, _, domain = bounce_address.lower().rpartition("@")
    if not local:
        return None, False
    forged = False
    for address in addresses:
        mailbox, _, host = address.lower().rpartition("@")
        base, plus, candidate = mailbox.partition("+")
        if not plus or base != local or host != domain or not tokens.has_return_path_shape(candidate):
            continue
        token = tokens.read_return_path_token(candidate)
        if token is not None:
            return token, False
        forged = True
    return None, forged


def _is_feedback_report(message: Message) -> bool:
    return (message.get_content_type() == "multipart/report"
            and (message.get_param("report-type") or "").lower() == "feedback-report")


def _feedback_report_fields(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            return email.message_from_string(payload if isinstance(payload, str) else "")
    return None


def _feedback_type(message: Message) -> str:
    fields = _feedback_report_fields(message)
    kind = str(fields.get("Feedback-Type", "abuse")).strip() if fields is not None else "abuse"
    return f"complaint ({kind})"


def _complaint_recipients(message: Message) -> list[str]:
    fields = _feedback_report_fields(message)
    if fields is None:
        return []
    values = [str(v) for v in fields.get_all("Original-Rcpt-To", [])]
    return [address.lower() for _, address in getaddresses(values) if "@" in address]


def _original_headers(message: Message) -> Message | None:
    """The copy of our message a complaint carries (whole, or its headers only)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            return inner if isinstance(inner, Message) else None
        if kind == "text/rfc822-headers":
            return email.message_from_bytes(part.get_payload(decode=True) or b"")
    return None


def _unsubscribe_id(original: Message, tokens: Tokens) -> int | None:
    """The reader our message was for, from its signed List-Unsubscribe link."""
    for value in original.get_all("List-Unsubscribe", []):
        for url in re.findall(r"<([^>]+)>", str(value)):
            path = urlsplit(url).path
            if "/unsubscribe/" in path:
                subscriber = tokens.subscriber_from_unsubscribe(path.rsplit("/", 1)[1])
                if subscriber is not None:
                    return subscriber
    return None


def _issue_tag_of(original: Message, subscriber_id: int | None) -> str | None:
    """The issue of our message, from its Message-ID, when that names the same reader as its signed link."""
    match = _MESSAGE_ID.search(str(original.get("Message-ID", "")))
    return match.group(1) if match and subscriber_id is not None and int(match.group(2)) == subscriber_id else None


def _is_auto_reply(message: Message) -> bool:
    """An out-of-office and the like; not a delivery report, which is auto-submitted too."""
    sender = parseaddr(str(message.get("From", "")))[1].lower().partition("@")[0]
    if (message.get_content_type() == "multipart/report" or sender in ("mailer-daemon", "postmaster")
            or str(message.get("Return-Path", "")).strip() == "<>"):
        return False
    auto = str(message.get("Auto-Submitted", "")).lower()
    return (auto.startswith("auto-") or any(h in message for h in ("X-Autoreply", "X-Autorespond"))
            or str(message.get("Precedence", "")).lower() == "auto_reply"
            or bool(_AUTO_SUBJECT.match(_subject(message))))


def _subject(message: Message) -> str:
    try:
        return one_line(str(make_header(decode_header(str(message.get("Subject", ""))))))
    except (ValueError, LookupError):  # a damaged encoded word: the raw header will do
        return one_line(str(message.get("Subject", "")))


@dataclass(frozen=True)
class Handled:
    """What became of one report: the readers it changed or counted, or why it changed nobody."""

    report: Report
    readers: tuple[tuple[str, Recorded], ...] = ()  # (address, what recording did)
    unattributed: str = ""  # why a bounce or complaint could not be put on a reader
    change: str = ""  # what became of the address change whose email this report is about


@dataclass(frozen=True)
class FeedbackPolicy:
    soft_limit: int
    soft_days: int


def handle_report(raw: bytes, store: Store, tokens: Tokens, bounce_address: str,
                  policy: FeedbackPolicy) -> list[Handled]:
    """Read one report and record each of its outcomes against the readers it is about."""
    reports = parse_report(raw, tokens, bounce_address)
    token = reports[0].token
    if token is not None and len(reports) > 1:  # the return path names one reader: keep what it says of them
        reports = [_about_reader(reports, store, token.subscriber_id)]
    return [apply_report(report, store, policy) for report in reports]


def _about_reader(reports: list[Report], store: Store, subscriber_id: int) -> Report:
    subscriber = store.subscriber_by_id(subscriber_id)
    email_address = subscriber.email.lower() if subscriber is not None else ""
    return next((r for r in reports if email_address in r.addresses), reports[0])


def apply_report(report: Report, store: Store, policy: FeedbackPolicy) -> Handled:
    """Record a report (from mail or a relay's webhook) against the readers it is about."""
    if report.kind is ReportKind.auto_reply:
        return Handled(report)
    if report.kind is ReportKind.unknown:
        return Handled(report, unattributed="neither a delivery report nor a complaint that can be read")
    if report.kind is ReportKind.unreadable:
        return Handled(report, unattributed=report.reason)
    if report.token is not None and report.token.change_id is not None:
        return _about_change(report, store, report.token.change_id)
    readers, why = _readers(report, store)
    if not readers:
        return Handled(report, unattributed=why)
    recorded = []
    for subscriber_id, address in readers:
        item = Feedback(subscriber_id, FeedbackKind(report.kind.value), report.report_id, report.issue_date,
                        report.status, report.reason)
        recorded.append((address, store.feedback.record(item, policy.soft_limit, policy.soft_days)))
    return Handled(report, tuple(recorded))


def _about_change(report: Report, store: Store, change_id: int) -> Handled:
    """A report on the email asking a new address to confirm a change: it is about that address only.

    The reader's own address still works and still gets the issue; a refusal of the new one (mistyped,
    unknown) cancels the change, so the reader can ask again with the right address.
    """
    if report.kind not in (ReportKind.hard, ReportKind.complaint):
        return Handled(report, change=f"address change #{change_id} left waiting: a {report.kind.value} report "
                                      "does not say the new address is wrong")
    if store.choices.cancel_change(change_id):
        return Handled(report, change=f"address change #{change_id} cancelled: its new address refused our mail; "
                                      "the reader keeps their address")
    return Handled(report, change=f"address change #{change_id} was no longer waiting; nothing changed")


def _readers(report: Report, store: Store) -> tuple[list[tuple[int, str]], str]:
    """The readers a report is about, by the strongest evidence it carries; or why there are none."""
    signed = report.token.subscriber_id if report.token else report.complained_id
    if signed is not None:
        subscriber = store.subscriber_by_id(signed)
        if subscriber is None:
            return [], f"reader #{signed} is no longer on the list"
        return [(subscriber.id, subscriber.email)], ""
    if report.forged_token:
        return [], "its return-path token does not verify (forged or damaged); nobody was changed"
    if not report.addresses_believed:
        named = f" (it names {', '.join(sorted(report.addresses))})" if report.addresses else ""
        return [], (f"it carries no return-path token{named}; with NEWSLETTER_BOUNCE_ADDRESS set, only reports "
                    "that do are believed")
    found = [s for s in (store.get_subscriber(a) for a in sorted(report.addresses)) if s is not None]
    if found:
        return [(s.id, s.email) for s in found], ""
    if report.addresses:
        return [], f"no reader on the list has the address {', '.join(sorted(report.addresses))}"
    return [], "it names no recipient and carries no return-path token"


@dataclass
class BounceSummary:
    """Counts over one run of `newsletter bounces`."""

    reports: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    repeated: int = 0  # reports already counted on an earlier run
    bounced: int = 0  # readers made `bounced` by this run
    unsubscribed: int = 0  # readers unsubscribed by a complaint
    unattributed: int = 0
    unreadable: int = 0
    blocked_by_domain: dict[str, int] = field(default_factory=dict)  # readers' domains refusing us by policy

    def add(self, outcomes: list[Handled]) -> None:
        """Count one report, whatever became of each of its outcomes."""
        self.reports += 1
        if any(h.report.kind is ReportKind.unreadable for h in outcomes):
            self.unreadable += 1
        elif any(h.unattributed for h in outcomes):
            self.unattributed += 1
        for handled in outcomes:
            if not handled.unattributed:
                self._count(handled)

    def _count(self, handled: Handled) -> None:
        kind = handled.report.kind.value
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if handled.readers and not any(recorded.new for _, recorded in handled.readers):
            self.repeated += 1
        for address, recorded in handled.readers:
            if recorded.changed and recorded.status == "bounced":
                self.bounced += 1
            elif recorded.changed and recorded.status == "unsubscribed":
                self.unsubscribed += 1
            if handled.report.kind is ReportKind.blocked and recorded.new:
                domain = address.rpartition("@")[2]
                self.blocked_by_domain[domain] = self.blocked_by_domain.get(domain, 0) + 1

    def line(self) -> str:
        names = {"hard": "hard bounce(s)", "soft": "soft bounce(s)", "blocked": "policy block(s)",
                 "delayed": "delay warning(s)", "complaint": "complaint(s)", "auto-reply": "auto-reply(s) ignored"}
        kinds = ", ".join(f"{self.by_kind[k]} {name}" for k, name in names.items() if self.by_kind.get(k))
        text = f"Read {self.reports} report(s)" + (f": {kinds}" if kinds else "")
        if self.repeated:
            text += f"; {self.repeated} already counted before"
        text += f". Readers now bounced: {self.bounced}, unsubscribed by a complaint: {self.unsubscribed}."
        problems = [f"{n} could not be {what}" for n, what in ((self.unattributed, "attributed"),
                                                                (self.unreadable, "read")) if n]
        if problems:
            text += f" {' and '.join(problems)}: listed above, and kept."
        return text

    def warnings(self) -> list[str]:
        """One line per domain whose servers refused our mail by policy: the sender's problem to fix."""
        return [blocked_warning(domain, count) for domain, count in
                sorted(self.blocked_by_domain.items(), key=lambda item: (-item[1], item[0]))]


def describe(handled: Handled) -> str:
    """One line on what became of a report, for the person running the command."""
    report = handled.report
    what = report.kind.value + (f" {report.status}" if report.status else "")
    if report.kind is ReportKind.auto_reply:
        return f"{what}: ignored"
    if report.kind is ReportKind.unreadable:
        return f"unreadable: {report.reason}"
    if handled.unattributed:
        return f"{what}: not attributed: {handled.unattributed}" + (f" ({report.reason})" if report.reason else "")
    if handled.change:
        return f"{what}: {handled.change}"
    parts = []
    for address, recorded in handled.readers:
        if not recorded.new:
            parts.append(f"{address} already counted")
        elif recorded.changed:
            parts.append(f"{address} is now {recorded.status}")
        else:
            parts.append(f"{address} counted (still {recorded.status})")
    return f"{what}: " + "; ".join(parts) + (f" — {report.reason}" if report.reason else "")


def keep_report(raw: bytes, folder: Path) -> Path:
    """Save a report nobody could act on, for a person to read: named by its hash, so kept once."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report-{hashlib.sha256(raw).hexdigest()[:16]}.eml"
    if not path.exists():
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(raw)
        temporary.replace(path)
    return path
