"""Delivery feedback over HTTP, for relays that report by webhook: Amazon SES (through SNS) and Postmark.

Each payload becomes the same `Report` a bounce email does (mail/bounces.py) and goes through the
same policy. Nothing is believed unverified: an SNS message must carry Amazon's signature, made
with a certificate fetched from an Amazon SNS address of the exact form Amazon uses, be less than a
day old, and come from a topic in NEWSLETTER_SES_TOPIC_ARNS (anyone can make a topic that AWS
signs); Postmark must present the shared secret. A forged or malformed payload gets a 4xx with a
generic reason (the details go to the log, in one line) and changes nothing: these routes face the
internet, so every field is checked for its type before it is used.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
import logging
import re
import reprlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...config import Settings
from ...mail.bounces import FeedbackPolicy, Handled, Report, ReportKind, apply_report, one_line, return_path_token
from ...store.database import Store
from ...tokens import Tokens

log = logging.getLogger(__name__)

# Amazon's own forms, matched whole before anything is fetched (re.ASCII: \d is 0-9 only).
# Certificate: https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem
_SNS_HOST = r"sns\.[a-z]{2}(?:-[a-z]+){1,2}-\d{1,2}\.amazonaws\.com(?:\.cn)?"
SNS_CERT_URL = re.compile(rf"https://{_SNS_HOST}/SimpleNotificationService-[A-Za-z0-9]{{1,64}}\.pem", re.ASCII)
# Subscription: https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=…&Token=…
SNS_SUBSCRIBE_URL = re.compile(rf"https://{_SNS_HOST}/\?Action=ConfirmSubscription&[A-Za-z0-9%&=:._~+-]{{1,2000}}",
                               re.ASCII)
SNS_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})", re.ASCII)
# A captured message replayed later is refused: SNS gives up retrying long before a day, and a
# sender's clock may be a little ahead of ours.
SNS_MAX_AGE = dt.timedelta(days=1)
SNS_MAX_AHEAD = dt.timedelta(minutes=15)
# The fields SNS signs, in the order it signs them, per message type; all but Subject are required.
SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SNS_OPTIONAL_FIELDS = frozenset({"Subject"})
SNS_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
SNS_MAX_SIGNATURE_CHARS = 1024  # base64 of a 4096-bit RSA signature is 684
# Amazon uses one certificate a region for years: a few are plenty, and no flood of made-up URLs
# can grow the cache or make us fetch much. Failures are remembered: a certificate that is not
# there stays refused for a while; an unreachable host only briefly, as SNS retries within a minute.
CERTIFICATES_KEPT = 16
FAILURES_KEPT = 256
BAD_CERTIFICATE_SECONDS = 600.0
UNREACHABLE_SECONDS = 30.0
FETCHES_PER_MINUTE = 10

# What a Postmark bounce's Type says. A receiver's spam filter ("SpamNotification"), an ISP block
# ("Blocked") or a DMARC refusal is about our mail, not the reader: blocked. A reader's own
# "this is spam" arrives as RecordType SpamComplaint (or Type SpamComplaint).
POSTMARK_KINDS = {"HardBounce": ReportKind.hard, "BadEmailAddress": ReportKind.hard,
                  "SoftBounce": ReportKind.soft, "DnsError": ReportKind.soft, "Transient": ReportKind.delayed,
                  "Blocked": ReportKind.blocked, "SpamNotification": ReportKind.blocked,
                  "DMARCPolicy": ReportKind.blocked, "SpamComplaint": ReportKind.complaint,
                  "AutoResponder": ReportKind.auto_reply}
# SES bounce subtypes that say the receiver refused the content: about us, not the reader.
SES_BLOCKED_SUBTYPES = frozenset({"ContentRejected", "AttachmentRejected"})
_ENHANCED_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}", re.ASCII)
# Strings no report needs and the store cannot take: NUL (PostgreSQL text) and lone surrogates
# ("\ud800" parses, but cannot be encoded to sign or to store).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Amazon SNS delivers messages of up to 256 KB (an SES notification with the original headers can be
# tens of KB): more than the pages' NEWSLETTER_MAX_REQUEST_BYTES, which these routes override.
WEBHOOK_MAX_BYTES = 300 * 1024

Fetch = Callable[[str], Awaitable[bytes]]  # GET a URL: an SNS certificate, a subscription confirmation
Clock = Callable[[], dt.datetime]  # the time now, timezone-aware


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Rejected(Exception):
    """A payload that is not believed or not understood: its status code, a generic reason for the
    client, and the details for our log."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


MALFORMED = "malformed payload"
UNVERIFIED = "cannot verify the SNS signature"


def malformed(detail: str) -> Rejected:
    return Rejected(400, MALFORMED, detail)


async def fetch_over_https(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


@dataclass(frozen=True)
class SnsMessage:
    """An SNS message whose signature, topic and age were checked."""

    kind: str  # Notification, SubscriptionConfirmation, UnsubscribeConfirmation
    message_id: str
    topic_arn: str
    message: str
    subscribe_url: str  # "" for a Notification


@dataclass(frozen=True)
class _Failure:
    until: float  # time.monotonic()
    status: int
    reason: str
    detail: str


class SnsVerifier:
    """Checks Amazon SNS messages, cheapest first: the fields' types, the topic, the age, the
    signature's form, the certificate URL's form; only then the certificate (fetched once, kept)
    and the signature."""

    def __init__(self, fetch: Fetch, topics: Collection[str], now: Clock = utc_now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch
        self.topics = frozenset(topics)
        self.now = now
        self.monotonic = monotonic  # for the caches: intervals, not dates
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._failures: OrderedDict[str, _Failure] = OrderedDict()
        self._fetched_at: deque[float] = deque()
        self._fetching = asyncio.Lock()

    async def verify(self, message: dict[str, object]) -> SnsMessage:
        kind = message.get("Type")
        if not isinstance(kind, str) or kind not in SNS_SIGNED_FIELDS:
            raise malformed(f"not an SNS message type: {_shown(kind)}")
        fields = _signed_fields(message, kind)
        if fields["TopicArn"] not in self.topics:
            raise Rejected(403, UNVERIFIED, f"topic {_shown(fields['TopicArn'])} is not in NEWSLETTER_SES_TOPIC_ARNS")
        self._check_age(fields["Timestamp"])
        digest, signature = _signature(message)
        url = message.get("SigningCertURL")
        if not isinstance(url, str) or not SNS_CERT_URL.fullmatch(url):
            raise Rejected(403, UNVERIFIED, f"SigningCertURL {_shown(url)} is not an Amazon SNS certificate")
        key = await self._key(url)
        try:
            key.verify(signature, _string_to_sign(fields, kind), padding.PKCS1v15(), digest())
        except InvalidSignature:
            raise Rejected(403, UNVERIFIED, f"the signature does not verify with {url}") from None
        return SnsMessage(kind, fields["MessageId"], fields["TopicArn"], fields["Message"],
                          fields.get("SubscribeURL", ""))

    def _check_age(self, timestamp: str) -> None:
        if not SNS_TIMESTAMP.fullmatch(timestamp):
            raise malformed(f"Timestamp {_shown(timestamp)} is not ISO 8601 UTC")
        try:
            sent = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            now = self.now()
            stale, ahead = sent < now - SNS_MAX_AGE, sent > now + SNS_MAX_AHEAD
        except (ValueError, OverflowError):  # month 13, year 0, offset +99:00
            raise malformed(f"Timestamp {_shown(timestamp)} is not a date") from None
        if stale or ahead:
            raise Rejected(403, "stale or future SNS message", f"Timestamp {timestamp}, and it is {now.isoformat()}")

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._known(url)
        if key is not None:
            return key
        # One fetch at a time: a burst of messages naming a new certificate fetches it once.
        async with self._fetching:
            key = self._known(url)
            if key is not None:
                return key
            if not self._may_fetch():
                # 503, not 429: SNS takes any 4xx as delivered and never retries; a genuine message
                # naming a new certificate during a flood of made-up ones must come back later.
                raise Rejected(503, "too many SNS certificates to fetch, try again later",
                               f"over {FETCHES_PER_MINUTE} certificate fetches a minute; not fetching {url}")
            try:
                key = _rsa_key(await self.fetch(url))
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code >= 500:
                    raise self._remember(url, UNREACHABLE_SECONDS, Rejected(
                        502, "cannot fetch the SNS certificate, try again later", f"{url}: {exc}")) from None
                raise self._remember(url, BAD_CERTIFICATE_SECONDS, Rejected(403, UNVERIFIED, f"{url}: {exc}")) from None
            except httpx.HTTPError as exc:
                raise self._remember(url, UNREACHABLE_SECONDS, Rejected(
                    502, "cannot fetch the SNS certificate, try again later", f"{url}: {exc!r}")) from None
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise self._remember(url, BAD_CERTIFICATE_SECONDS, Rejected(
                    403, UNVERIFIED, f"{url} is not an RSA certificate: {exc}")) from None
            self._keys[url] = key
            if len(self._keys) > CERTIFICATES_KEPT:
                self._keys.popitem(last=False)
            return key

    def _known(self, url: str) -> rsa.RSAPublicKey | None:
        """The certificate's key when it is kept; Rejected again when it failed a moment ago."""
        if url in self._keys:
            self._keys.move_to_end(url)
            return self._keys[url]
        failure = self._failures.get(url)
        if failure is not None:
            if failure.until > self.monotonic():
                raise Rejected(failure.status, failure.reason, f"not fetched again, it failed: {failure.detail}")
            del self._failures[url]
        return None

    def _may_fetch(self) -> bool:
        now = self.monotonic()
        while self._fetched_at and self._fetched_at[0] <= now - 60:
            self._fetched_at.popleft()
        if len(self._fetched_at) >= FETCHES_PER_MINUTE:
            return False
        self._fetched_at.append(now)
        return True

    def _remember(self, url: str, seconds: float, rejected: Rejected) -> Rejected:
        self._failures[url] = _Failure(self.monotonic() + seconds, rejected.status, rejected.reason, rejected.detail)
        self._failures.move_to_end(url)
        if len(self._failures) > FAILURES_KEPT:
            self._failures.popitem(last=False)
        return rejected


def _signed_fields(message: dict[str, object], kind: str) -> dict[str, str]:
    """The fields SNS signs for this type, each a string; Subject may be absent."""
    fields: dict[str, str] = {}
    for name in SNS_SIGNED_FIELDS[kind]:
        value = message.get(name)
        if value is None and name in SNS_OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise malformed(f"SNS {name} is {_shown(value)}, not a string")
        fields[name] = value
    if not 0 < len(fields["MessageId"]) <= 200 or _CONTROL.search(fields["MessageId"]):
        raise malformed(f"SNS MessageId {_shown(fields['MessageId'])}")
    return fields


def _signature(message: dict[str, object]) -> tuple[type[hashes.HashAlgorithm], bytes]:
    version, encoded = message.get("SignatureVersion"), message.get("Signature")
    digest = SNS_HASHES.get(version) if isinstance(version, str) else None
    if digest is None:
        raise malformed(f"unknown SNS SignatureVersion {_shown(version)}")
    if not isinstance(encoded, str) or len(encoded) > SNS_MAX_SIGNATURE_CHARS:
        raise malformed(f"SNS Signature {_shown(encoded)}")
    try:
        return digest, base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise malformed("the SNS Signature is not base64") from None


def _string_to_sign(fields: dict[str, str], kind: str) -> bytes:
    text = "".join(f"{name}\n{fields[name]}\n" for name in SNS_SIGNED_FIELDS[kind] if name in fields)
    return text.encode("utf-8")  # lone surrogates were refused with the body


def _rsa_key(pem: bytes) -> rsa.RSAPublicKey:
    key = x509.load_pem_x509_certificate(pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the certificate has no RSA key")
    return key


def ses_bounce_kind(bounce_type: str, subtype: str, status: str) -> ReportKind:
    """What an SES bounce says about one recipient. A policy refusal (x.7.x: spam filter, SPF,
    DKIM, reputation; 4.7.x too, as mail/failures.py reads a report that gave up) or rejected
    content is about our mail, not the reader: blocked, whatever the bounce type. Permanent (General, NoEmail, Suppressed, OnAccountSuppressionList) is hard; the
    rest (Transient: MailboxFull, MessageTooLarge, General; Undetermined) is soft."""
    if status.split(".")[1:2] == ["7"] or subtype in SES_BLOCKED_SUBTYPES:
        return ReportKind.blocked
    return ReportKind.hard if bounce_type == "Permanent" else ReportKind.soft


def ses_reports(notification: dict[str, object], sns_message_id: str, tokens: Tokens,
                bounce_address: str) -> list[Report]:
    """The reports in one SES notification (or event): one per recipient it names."""
    kind_name = _text(notification, "notificationType") or _text(notification, "eventType")
    mail = _object(notification, "mail")
    token, forged = return_path_token([_text(mail, "source", 1000)], tokens, bounce_address)
    report_id = f"ses:{sns_message_id}"

    def report(kind: ReportKind, recipient: dict[str, object], status: str, reason: str) -> Report:
        return Report(report_id, kind, frozenset({_address(recipient, "emailAddress")}), token, forged, None, None,
                      status, reason)

    if kind_name == "Bounce":
        bounce = _object(notification, "bounce")
        bounce_type, subtype = _text(bounce, "bounceType"), _text(bounce, "bounceSubType")
        reports = []
        for recipient in _objects(bounce, "bouncedRecipients"):
            status = _status(recipient)
            reports.append(report(ses_bounce_kind(bounce_type, subtype, status), recipient, status,
                                  _reason(_text(recipient, "diagnosticCode", None) or subtype)))
        return reports
    if kind_name == "DeliveryDelay":  # SES event publishing: still trying; recorded, never a bounce
        delay = _object(notification, "deliveryDelay")
        why = _text(delay, "delayType")
        return [report(ReportKind.delayed, r, _status(r), _reason(_text(r, "diagnosticCode", None) or why))
                for r in _objects(delay, "delayedRecipients")]
    if kind_name == "Complaint":
        complaint = _object(notification, "complaint")
        reason = f"complaint ({_reason(_text(complaint, 'complaintFeedbackType')) or 'abuse'})"
        return [report(ReportKind.complaint, r, "", reason) for r in _objects(complaint, "complainedRecipients")]
    return []  # Delivery, Send, Open …: nothing to act on


def postmark_report(payload: dict[str, object]) -> Report | None:
    """The report in one Postmark bounce or spam-complaint webhook; None for what needs no action."""
    record_type, type_name = _text(payload, "RecordType"), _text(payload, "Type")
    kind = ReportKind.complaint if record_type == "SpamComplaint" else POSTMARK_KINDS.get(type_name)
    if kind is None:
        return None
    report_id = payload.get("ID")
    if isinstance(report_id, bool) or not isinstance(report_id, int | str) or not 0 < len(str(report_id)) <= 100 \
            or _CONTROL.search(str(report_id)):
        raise malformed(f"Postmark ID {_shown(report_id)}")
    # Postmark's own return path takes the bounce: the reader is known by address only.
    return Report(f"postmark:{record_type}:{report_id}", kind, frozenset({_address(payload, "Email")}), None, False,
                  None, None, "", _reason(_text(payload, "Details", None) or _text(payload, "Description", None)
                                          or type_name or record_type))


def webhook_routes(settings: Settings, store: Store, fetch: Fetch = fetch_over_https,
                   now: Clock = utc_now, count: Callable[[list[ReportKind]], None] = lambda kinds: None) -> APIRouter:
    """The relays' routes; `count` is told the kind of every verified report (for /metrics)."""
    router = APIRouter(max_body_size=WEBHOOK_MAX_BYTES)
    tokens = Tokens(settings.secret_key)
    policy = FeedbackPolicy(settings.soft_bounce_limit, settings.soft_bounce_days)
    verifier = SnsVerifier(fetch, settings.ses_topic_arns, now)

    async def record(reports: list[Report]) -> dict:
        handled: list[Handled] = [await run_in_threadpool(apply_report, r, store, policy) for r in reports]
        count([r.kind for r in reports])  # once recorded: a relay retries what failed
        for item in handled:
            if item.unattributed:
                log.warning("webhook report %s not attributed: %s", item.report.report_id, item.unattributed)
        return {"recorded": sum(len(h.readers) for h in handled),
                "unattributed": sum(1 for h in handled if h.unattributed)}

    def rejected(exc: Rejected, source: str) -> JSONResponse:
        log.warning("%s webhook refused (%d): %s", source, exc.status, one_line(exc.detail or exc.reason))
        headers = {"Retry-After": "60"} if exc.status in (502, 503) else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    async def confirm(message: SnsMessage) -> JSONResponse:
        if not SNS_SUBSCRIBE_URL.fullmatch(message.subscribe_url):
            raise Rejected(403, UNVERIFIED, f"SubscribeURL {_shown(message.subscribe_url)} is not Amazon SNS")
        try:
            await fetch(message.subscribe_url)
        except httpx.HTTPError as exc:
            raise Rejected(502, "could not confirm the subscription, try again later", repr(exc)) from None
        log.info("confirmed the SNS subscription to %s", message.topic_arn)
        return JSONResponse({"subscribed": message.topic_arn})

    @router.post("/webhooks/ses")
    async def ses(request: Request) -> JSONResponse:
        if not settings.ses_topic_arns:
            return JSONResponse({"error": "SES webhooks are off (NEWSLETTER_SES_TOPIC_ARNS)"}, status_code=404)
        try:
            message = await verifier.verify(_json_object(await request.body()))
            if message.kind == "SubscriptionConfirmation":
                return await confirm(message)
            if message.kind == "UnsubscribeConfirmation":
                return JSONResponse({"ignored": "UnsubscribeConfirmation"})
            reports = ses_reports(_json_object(message.message), message.message_id, tokens, settings.bounce_address)
        except Rejected as exc:
            return rejected(exc, "SES")
        return JSONResponse(await record(reports))

    @router.post("/webhooks/postmark")
    async def postmark(request: Request) -> JSONResponse:
        if not settings.postmark_webhook_secret:
            return JSONResponse({"error": "Postmark webhooks are off (NEWSLETTER_POSTMARK_WEBHOOK_SECRET)"},
                                status_code=404)
        try:
            if not _basic_auth_password_is(request.headers.get("authorization", ""), settings.postmark_webhook_secret):
                raise Rejected(401, "wrong or missing credentials")
            report = postmark_report(_json_object(await request.body()))
        except Rejected as exc:
            response = rejected(exc, "Postmark")
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="webhooks"'
            return response
        return JSONResponse(await record([report] if report else []))

    return router


def _json_object(body: bytes | str) -> dict[str, object]:
    """A JSON object that can be signed and stored. Refused besides what json.loads refuses: nesting
    that exhausts the stack, a key twice (which one would a signature have covered?), NaN and
    Infinity, NUL and lone surrogates in any string."""
    try:
        value = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise Rejected(400, "the body is not JSON", "JSON nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError, and integers of more than 4,300 digits
        raise Rejected(400, "the body is not JSON", str(exc)) from None
    if not isinstance(value, dict):
        raise Rejected(400, "the body is not a JSON object", f"a JSON {type(value).__name__}")
    pending: list[object] = [value]  # a loop, not recursion: the value may be nested 900 deep
    while pending:
        item = pending.pop()
        if isinstance(item, str) and _UNSTORABLE.search(item):
            raise malformed(f"NUL or a lone surrogate in {_shown(item)}")
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise malformed("a JSON object with a key twice")
    return value


def _no_constant(name: str) -> object:
    raise malformed(f"{name} in JSON")


def _text(container: dict[str, object], name: str, limit: int | None = 200) -> str:
    """A string field: "" when absent or null, refused when anything else or over `limit`."""
    value = container.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or (limit is not None and len(value) > limit):
        raise malformed(f"{name} is {_shown(value)}")
    return value


def _object(container: dict[str, object], name: str) -> dict[str, object]:
    value = container.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(f"{name} is {_shown(value)}, not an object")
    return value


def _objects(container: dict[str, object], name: str) -> list[dict[str, object]]:
    value = container.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise malformed(f"{name} is {_shown(value)}, not a list of objects")
    return value


def _address(container: dict[str, object], name: str) -> str:
    address = _text(container, name, 320)
    if _CONTROL.search(address):
        raise malformed(f"{name} {_shown(address)}")
    return address.lower()


def _status(recipient: dict[str, object]) -> str:
    """The recipient's enhanced status code (5.1.1), or "" when it carries none that can be read."""
    status = _text(recipient, "status", None).strip()
    return status if _ENHANCED_STATUS.fullmatch(status) else ""


def _reason(text: str) -> str:
    """A server's words for the store and the editors' terminals: one line, no control characters."""
    return one_line(_CONTROL.sub(" ", text))


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist, _SHOWN.maxdict = 3, 80, 80, 4, 4


def _shown(value: object) -> str:
    """A value for the log: its repr in one line, cut short (reprlib: a list nested 900 deep is fine)."""
    return _SHOWN.repr(value)


def _basic_auth_password_is(header: str, secret: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        _, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except ValueError:  # not base64, a character outside ASCII (headers arrive as latin-1), not UTF-8
        return False
    return hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
