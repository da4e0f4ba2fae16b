"""Talking to the relay: one persistent aiosmtplib connection, failure classes, pacing.

A message goes in two round trips when the relay offers PIPELINING
(transaction.py), otherwise through aiosmtplib's sendmail; both raise the
same aiosmtplib errors for the same replies.

Failures are classified by reply code, as aiosmtplib's own errors are:
5xx is permanent (the reader bounced) when it is about the reader's address,
4xx and dropped or timed-out connections are transient (try again later), and
421 or "too many connections" means the relay wants fewer of us at once. A
permanent refusal that is about us, not the reader (a policy block, a message
too big, a refused sender), bounces nobody: it would bounce the whole list.
"""

from __future__ import annotations

import asyncio
import logging
import random

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from ..config import Settings, SmtpTls
from ..errors import ConfigError, NewsletterError
from ..store.schema import Outcome
from .failures import FailureKind, reply_kind
from .transaction import PreparedDataProtocol, plain_envelope, send_pipelined

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3
CONNECT_BACKOFF_SECONDS = 0.5


class SmtpUnavailableError(NewsletterError):
    """The SMTP server cannot be reached at all; nothing more can be sent now."""

    exit_code = 75


class SenderRefusedError(ConfigError):
    """The relay refuses our sender (MAIL FROM) for good: no reader can get the issue until a setting changes."""


class RelayBusy(Exception):
    """The relay answered 421 or "too many connections": use fewer connections."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def _the_refusal(exc: BaseException) -> BaseException:
    """Our sends have one recipient: a refusal of "all recipients" is that one's refusal."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return exc.recipients[0]
    return exc


def reply_of(exc: BaseException) -> str:
    exc = _the_refusal(exc)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    return f"{type(exc).__name__}: {exc}".strip()


def classify(exc: BaseException) -> Outcome:
    """Permanent (`refused`: the reader's address is refused for good) or transient (`failed`, retry).

    A 5xx about us rather than the reader's address is `failed`: a refusal by policy (x.7.x, spam,
    authentication, "Relay access denied": the relay will not take our mail), a full mailbox or a message
    too big (x.2.2, x.3.4). The same reply for every reader would otherwise bounce the whole list.
    """
    exc = _the_refusal(exc)
    if isinstance(exc, aiosmtplib.SMTPResponseException) and 500 <= exc.code < 600:
        return Outcome.refused if reply_kind(reply_of(exc)) is FailureKind.hard else Outcome.failed
    return Outcome.failed


def sender_refused(exc: BaseException, sender: str, settings: Settings) -> SenderRefusedError | None:
    """The error that stops a send when the relay refuses our sender for good (MAIL FROM 5xx), else None."""
    if not (isinstance(exc, aiosmtplib.SMTPSenderRefused) and 500 <= exc.code < 600):
        return None
    return SenderRefusedError(
        f"the SMTP server {settings.smtp_host}:{settings.smtp_port} refuses the sender <{sender}> "
        f"({reply_of(exc)}); nobody was sent the issue and no reader was changed: check "
        "NEWSLETTER_FROM_ADDRESS, NEWSLETTER_BOUNCE_ADDRESS, NEWSLETTER_SMTP_TLS and the SMTP login"
    )


def is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", exc)).lower()
    return code == 421 or "too many connections" in message


def backoff(attempt: int, base: float) -> float:
    """Exponential backoff with jitter: base, 2·base, 4·base… each ±50 %."""
    return base * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)


class Throttle:
    """Spaces message starts so the whole pool stays under `per_second` (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next_slot = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class SmtpConnection:
    """One persistent connection: opened on first use, reopened after a drop or N messages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None
        self.sent_here = 0

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_tls is SmtpTls.tls,
            start_tls=True if s.smtp_tls is SmtpTls.starttls else False,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            timeout=s.smtp_timeout,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
        )

    async def open(self) -> aiosmtplib.SMTP:
        """Connect, retrying with backoff; RelayBusy at once when the relay says it is full."""
        s = self.settings
        last_error: BaseException | None = None
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            client = self._client()
            try:
                await client.connect()
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise ConfigError(
                    f"SMTP login refused by {s.smtp_host}:{s.smtp_port} ({exc.code} {exc.message}); "
                    "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
                ) from None
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                if is_busy(exc):
                    raise RelayBusy(reply_of(exc)) from None
                last_error = exc
                await asyncio.sleep(backoff(attempt, CONNECT_BACKOFF_SECONDS))
            else:
                if type(client.protocol) is SMTPProtocol:
                    client.protocol.__class__ = PreparedDataProtocol  # adds methods, keeps its state
                    # Loops written in C (uvloop) keep the protocol's bound methods from when it was
                    # attached: attach it again so that its own data_received is the one called.
                    client.transport.set_protocol(client.protocol)
                self.client, self.sent_here = client, 0
                return client
        raise SmtpUnavailableError(f"cannot connect to SMTP server {s.smtp_host}:{s.smtp_port}: {last_error}")

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message; a dropped connection is forgotten so the next send opens a fresh one."""
        limit = self.settings.smtp_messages_per_connection
        if self.client is not None and limit and self.sent_here >= limit:
            await self.close()  # many relays close after N messages anyway: leave first
        if self.client is None or not self.client.is_connected:
            await self.open()
        client = self.client
        try:
            if client.is_ehlo_or_helo_needed:
                # What sendmail would do first; done here to see whether the relay offers PIPELINING.
                await client._ehlo_or_helo_if_needed()
            if client.supports_extension("pipelining") and plain_envelope(sender, recipient):
                await send_pipelined(client, sender, recipient, message)
            else:
                await client.sendmail(sender, [recipient], message)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError):
            self.client = None
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing this channel
                self.client = None
            raise
        self.sent_here += 1

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
