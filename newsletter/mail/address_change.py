"""The email that asks the owner of a reader's new address to confirm it: the change is made only by them.

Sent like the signup's confirmation (a one-off message over its own SMTP connection), to the new address
alone: the old one keeps receiving the issue until the new one is confirmed. Its return path names the
change, not the reader: a bounce from a mistyped new address cancels the change and leaves the reader's
working address alone (mail/bounces.py).
"""

from __future__ import annotations

import logging
import math
import secrets

import aiosmtplib

from ..config import Settings
from ..errors import NewsletterError
from ..issue.render import Renderer, compile_mjml, for_right_to_left, inline_css
from ..tokens import Tokens
from .message import Recipient, ascii_address, change_return_path, transactional_message
from .smtp import SmtpConnection

log = logging.getLogger(__name__)


class AddressChangeMailer:
    def __init__(self, settings: Settings, renderer: Renderer, tokens: Tokens) -> None:
        self.settings = settings
        self.renderer = renderer
        self.tokens = tokens

    def build(self, subscriber_id: int, name: str, new_email: str, change_url: str) -> bytes:
        context = {"change_url": change_url, "email": new_email,
                   "valid_days": math.ceil(self.settings.confirm_max_age_days)}
        env = self.renderer.env
        subject = " ".join(env.get_template("change_address_subject.txt.j2").render(context).split())
        context["subject"] = subject
        html = inline_css(compile_mjml(env.get_template("change_address.mjml.j2").render(context))).rstrip() + "\n"
        text = for_right_to_left(env.get_template("change_address.txt.j2").render(context).strip()) + "\n"
        # A new id each time: a second request is a new message, not a duplicate to drop.
        message_id = f"<change.{subscriber_id}.{secrets.token_hex(6)}@{self.settings.sender_domain}>"
        return transactional_message(self.settings, Recipient(subscriber_id, new_email, name),
                                     subject, html, text, message_id)

    async def send(self, change_id: int, subscriber_id: int, name: str, new_email: str, change_url: str) -> bool:
        """Send the confirmation to the new address; a failure is logged (the reader can ask again)."""
        connection = SmtpConnection(self.settings)
        try:
            await connection.send(change_return_path(self.settings, self.tokens, change_id), ascii_address(new_email),
                                  self.build(subscriber_id, name, new_email, change_url))
            return True
        except (aiosmtplib.SMTPException, OSError, NewsletterError) as exc:
            log.warning("address change confirmation for reader %d not sent: %s", subscriber_id,
                        " ".join(str(exc).split())[:300])
            return False
        finally:
            await connection.close()
