"""A reader's own emails: the double opt-in confirmation and the welcome, sent without making them wait.

If SMTP is down when someone signs up, they stay `pending` with no
confirmation sent; `newsletter confirmations` (and every `newsletter send`)
retries them, so nobody who asked is lost. A welcome that cannot go out is
only logged: the reader is subscribed all the same, and the next issue says more.

Each is a first-class message, like the issue: VERP return path naming the
reader (and no issue), DKIM-signed when keys are set, sent over the same
SmtpConnection; so its bounces and complaints count against the address.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

import aiosmtplib
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..errors import NewsletterError
from ..issue.render import Renderer
from ..store.database import Store, Subscriber
from ..tokens import Tokens
from .message import Recipient, ascii_address, reader_return_path, transactional_message
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

    def build_welcome(self, subscriber: Subscriber, latest_issue_date: str | None) -> bytes:
        """The welcome: when the issue comes, the latest one in the archive, how to leave; list headers on."""
        s = self.settings
        unsubscribe_url = f"{s.base_url}/unsubscribe/{self.tokens.unsubscribe_token(subscriber.id)}"
        subject, html, text = self.renderer.render_welcome(
            self.renderer.edition_time_label(s.edition_time, s.timezone),
            f"{s.base_url}/archive/{latest_issue_date}" if latest_issue_date else "", unsubscribe_url,
            manage_url=f"{s.base_url}/manage/{self.tokens.manage_token(subscriber.id)}")
        message_id = f"<welcome.{subscriber.id}.{self.tokens.email_hash(subscriber.email)[:12]}@{s.sender_domain}>"
        return transactional_message(s, Recipient(subscriber.id, subscriber.email, subscriber.name),
                                     subject, html, text, message_id, unsubscribe_url=unsubscribe_url)

    async def _deliver(self, subscriber: Subscriber, message: bytes, connection: SmtpConnection | None) -> None:
        own_connection = connection is None
        connection = connection or SmtpConnection(self.settings)
        try:
            await connection.send(reader_return_path(self.settings, self.tokens, subscriber.id),
                                  ascii_address(subscriber.email), message)
        finally:
            if own_connection:
                await connection.close()

    async def send(self, subscriber: Subscriber, connection: SmtpConnection | None = None) -> bool:
        """Send one confirmation; on failure, leave it for the retry and say so in the log."""
        try:
            await self._deliver(subscriber, self.build(subscriber), connection)
            return True
        except (aiosmtplib.SMTPException, OSError, NewsletterError) as exc:
            log.warning("confirmation to %s not sent, will retry: %s", subscriber.email, exc)
            # Off the event loop: under `newsletter serve` the store may be waiting for a lock.
            await asyncio.to_thread(self.store.confirmation_failed, subscriber.id)
            return False

    async def send_welcome(self, subscriber: Subscriber) -> bool:
        """Send the welcome to a reader who has just confirmed; a failure is logged, not retried."""
        try:
            issues = await asyncio.to_thread(self.store.list_issue_dates)
            await self._deliver(subscriber, self.build_welcome(subscriber, issues[0][0] if issues else None), None)
            return True
        except (aiosmtplib.SMTPException, OSError, NewsletterError, SQLAlchemyError) as exc:
            log.warning("welcome to %s not sent: %s", subscriber.email, " ".join(str(exc).split())[:300])
            return False

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
