"""Delivery feedback over HTTP, for relays that report by webhook: Amazon SES (through SNS) and Postmark.

Each payload becomes the same `Report` a bounce email does (mail/bounces.py) and goes through the
same policy. Nothing is believed unverified: an SNS message must carry Amazon's signature, made
with a certificate fetched from an Amazon SNS host, and come from a topic in
NEWSLETTER_SES_TOPIC_ARNS (anyone can make a topic that AWS signs); Postmark must present the
shared secret. A forged or malformed payload gets a 4xx and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..mail.bounces import FeedbackPolicy, Handled, Report, ReportKind, apply_report, one_line, return_path_token
from ..store.database import Store
from ..tokens import Tokens

log = logging.getLogger(__name__)

# Where SNS keeps its signing certificates: https://sns.<region>.amazonaws.com[.cn]/…pem
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# The fields SNS signs, in the order it signs them, per message type.
SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SNS_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
POSTMARK_KINDS = {"HardBounce": ReportKind.hard, "BadEmailAddress": ReportKind.hard, "ManuallyDeactivated": None,
                  "SoftBounce": ReportKind.soft, "DnsError": ReportKind.soft, "Transient": ReportKind.soft,
                  "SpamComplaint": ReportKind.complaint, "SpamNotification": ReportKind.complaint,
                  "AutoResponder": ReportKind.auto_reply}

# Amazon SNS delivers messages of up to 256 KB (an SES notification with the original headers can be
# tens of KB): more than the pages' NEWSLETTER_MAX_REQUEST_BYTES, which these routes override.
WEBHOOK_MAX_BYTES = 300 * 1024

Fetch = Callable[[str], Awaitable[bytes]]  # GET a URL: an SNS certificate, a subscription confirmation


class Rejected(Exception):
    """A payload that is not believed or not understood: its status code and why, for the relay's log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def fetch_over_https(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


class SnsVerifier:
    """Checks Amazon SNS signatures; certificates are fetched once per URL and kept."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def verify(self, message: dict) -> None:
        kind = message.get("Type")
        if kind not in SNS_SIGNED_FIELDS:
            raise Rejected(400, f"not an SNS message type: {kind!r}")
        digest = SNS_HASHES.get(str(message.get("SignatureVersion")))
        if digest is None:
            raise Rejected(400, f"unknown SNS SignatureVersion {message.get('SignatureVersion')!r}")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except binascii.Error:
            raise Rejected(400, "the SNS Signature is not base64") from None
        key = await self._key(str(message.get("SigningCertURL", "")))
        try:
            key.verify(signature, _sns_string_to_sign(message), padding.PKCS1v15(), digest())
        except InvalidSignature:
            raise Rejected(403, "the SNS signature does not verify") from None

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        if not _is_sns_url(url) or not url.endswith(".pem"):
            raise Rejected(403, f"SigningCertURL {url!r} is not an Amazon SNS certificate")
        if url not in self._keys:
            try:
                certificate = x509.load_pem_x509_certificate(await self.fetch(url))
            except (httpx.HTTPError, ValueError) as exc:
                raise Rejected(502 if isinstance(exc, httpx.HTTPError) else 403,
                               f"cannot get the SNS certificate: {exc}") from None
            key = certificate.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                raise Rejected(403, "the SNS certificate has no RSA key")
            self._keys[url] = key
        return self._keys[url]


def _is_sns_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(SNS_HOST.fullmatch(parts.hostname or "")) and parts.port in (None, 443)


def _sns_string_to_sign(message: dict) -> bytes:
    lines = []
    for name in SNS_SIGNED_FIELDS[message["Type"]]:
        if name in message and message[name] is not None:
            lines += [name, str(message[name])]
    return ("\n".join(lines) + "\n").encode("utf-8")


def ses_reports(notification: dict, sns_message_id: str, tokens: Tokens, bounce_address: str) -> list[Report]:
    """The reports in one SES notification (or event): one per recipient it names."""
    kind_name = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") or {}
    token, forged = return_path_token([str(mail.get("source", ""))], tokens, bounce_address)
    if kind_name == "Bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        recipients = bounce.get("bouncedRecipients") or []
        return [Report(f"ses:{sns_message_id}", ReportKind.hard if permanent else ReportKind.soft,
                       frozenset({str(r.get("emailAddress", "")).lower()}), token, forged, None, None,
                       str(r.get("status", "")), one_line(r.get("diagnosticCode") or bounce.get("bounceSubType", "")))
                for r in recipients if isinstance(r, dict)]
    if kind_name == "Complaint":
        complaint = notification.get("complaint") or {}
        reason = f"complaint ({complaint.get('complaintFeedbackType') or 'abuse'})"
        return [Report(f"ses:{sns_message_id}", ReportKind.complaint,
                       frozenset({str(r.get("emailAddress", "")).lower()}), token, forged, None, None, "", reason)
                for r in complaint.get("complainedRecipients") or [] if isinstance(r, dict)]
    return []  # Delivery, Send, Open …: nothing to act on


def postmark_report(payload: dict) -> Report | None:
    """The report in one Postmark bounce or spam-complaint webhook; None for what needs no action."""
    kind = POSTMARK_KINDS.get(str(payload.get("Type")))
    if payload.get("RecordType") == "SpamComplaint":
        kind = ReportKind.complaint
    if kind is None:
        return None
    # Postmark's own return path takes the bounce: the reader is known by address only.
    return Report(f"postmark:{payload.get('RecordType')}:{payload.get('ID')}", kind,
                  frozenset({str(payload.get("Email", "")).lower()}), None, False, None, None, "",
                  one_line(payload.get("Details") or payload.get("Description") or str(payload.get("Type"))))


def webhook_routes(settings: Settings, store: Store, fetch: Fetch = fetch_over_https) -> APIRouter:
    router = APIRouter(max_body_size=WEBHOOK_MAX_BYTES)
    tokens = Tokens(settings.secret_key)
    policy = FeedbackPolicy(settings.soft_bounce_limit, settings.soft_bounce_days)
    verifier = SnsVerifier(fetch)

    async def record(reports: list[Report]) -> dict:
        handled: list[Handled] = [await run_in_threadpool(apply_report, r, store, policy) for r in reports]
        for item in handled:
            if item.unattributed:
                log.warning("webhook report %s not attributed: %s", item.report.report_id, item.unattributed)
        return {"recorded": sum(len(h.readers) for h in handled),
                "unattributed": sum(1 for h in handled if h.unattributed)}

    def rejected(exc: Rejected, source: str) -> JSONResponse:
        log.warning("%s webhook refused (%d): %s", source, exc.status, exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @router.post("/webhooks/ses")
    async def ses(request: Request) -> JSONResponse:
        if not settings.ses_topic_arns:
            return JSONResponse({"error": "SES webhooks are off (NEWSLETTER_SES_TOPIC_ARNS)"}, status_code=404)
        try:
            message = _json_object(await request.body())
            if message.get("TopicArn") not in settings.ses_topic_arns:
                raise Rejected(403, f"topic {message.get('TopicArn')!r} is not in NEWSLETTER_SES_TOPIC_ARNS")
            await verifier.verify(message)
            if message["Type"] == "SubscriptionConfirmation":
                url = str(message.get("SubscribeURL", ""))
                if not _is_sns_url(url):
                    raise Rejected(403, f"SubscribeURL {url!r} is not Amazon SNS")
                try:
                    await fetch(url)
                except httpx.HTTPError as exc:
                    raise Rejected(502, f"could not confirm the subscription: {exc}") from None
                log.info("confirmed the SNS subscription to %s", message["TopicArn"])
                return JSONResponse({"subscribed": message["TopicArn"]})
            if message["Type"] == "UnsubscribeConfirmation":
                return JSONResponse({"ignored": "UnsubscribeConfirmation"})
            notification = _json_object(str(message.get("Message", "")).encode("utf-8"))
            reports = ses_reports(notification, str(message.get("MessageId", "")), tokens, settings.bounce_address)
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


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(400, "the body is not a JSON object")
    return value


def _basic_auth_password_is(header: str, secret: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        _, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
