"""Double opt-in: the confirmation email, sent without making the reader wait.

If SMTP is down when someone signs up, they stay `pending` with no
confirmation sent; `newsletter confirmations` (and every `newsletter send`)
retries them, so nobody who asked is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

import aiosmtplib

from ..config import Settings
from ..errors import NewsletterError
from ..issue.render import Renderer
from ..store.database import Store, Subscriber
from ..tokens import Tokens
from .message import Recipient, ascii_address, transactional_message
from .smtp import SmtpConnection

log = logging.getLogger(__name__)


@dataclass
class ConfirmationReport:
    sent: int = 0
    failed: int = 0


class ConfirmationMailer:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.tokens = Tokens(settings.secret_key, settings.confirm_max_age_seconds)
        self.renderer = Renderer(settings.templates_dir, settings.base_url)

    def confirm_url(self, subscriber_id: int) -> str:
        return f"{self.settings.base_url}/confirm/{self.tokens.confirm_token(subscriber_id)}"

    def build(self, subscriber: Subscriber) -> bytes:
        subject, html, text = self.renderer.render_confirmation(
            self.confirm_url(subscriber.id), math.ceil(self.settings.confirm_max_age_days)
        )
        message_id = f"<confirm.{subscriber.id}.{self.tokens.email_hash(subscriber.email)[:12]}" \
                     f"@{self.settings.sender_domain}>"
        return transactional_message(self.settings, Recipient(subscriber.id, subscriber.email, subscriber.name),
                                     subject, html, text, message_id)

    async def send(self, subscriber: Subscriber, connection: SmtpConnection | None = None) -> bool:
        """Send one confirmation; on failure, leave it for the retry and say so in the log."""
        own_connection = connection is None
        connection = connection or SmtpConnection(self.settings)
        try:
            await connection.send(ascii_address(self.settings.from_address), ascii_address(subscriber.email),
                                  self.build(subscriber))
            return True
        except (aiosmtplib.SMTPException, OSError, NewsletterError) as exc:
            log.warning("confirmation to %s not sent, will retry: %s", subscriber.email, exc)
            # Off the event loop: under `newsletter serve` the store may be waiting for a lock.
            await asyncio.to_thread(self.store.confirmation_failed, subscriber.id)
            return False
        finally:
            if own_connection:
                await connection.close()

    async def retry_pending(self) -> ConfirmationReport:
        """Send every confirmation that never went out, over one connection."""
        report = ConfirmationReport()
        connection = SmtpConnection(self.settings)
        try:
            for subscriber in self.store.pending_confirmations():
                if not self.store.claim_confirmation(subscriber.id):
                    continue  # another process is sending it
                if await self.send(subscriber, connection):
                    report.sent += 1
                else:
                    report.failed += 1
                    break  # SMTP is still down: the rest waits for the next retry
        finally:
            await connection.close()
        return report
