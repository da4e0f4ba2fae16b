"""Signed tokens that identify a subscriber in links (unsubscribe, confirm), and keyed hashes.

Unsubscribe tokens never expire: a link in a years-old email must still work.
Confirmation tokens expire (NEWSLETTER_CONFIRM_MAX_AGE_DAYS).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

UNSUBSCRIBE_SALT = "unsubscribe"
CONFIRM_SALT = "confirm"


@dataclass(frozen=True)
class ConfirmCheck:
    """What a confirmation token says: whose it is, and whether it is still valid."""

    subscriber_id: int | None
    expired: bool = False


class Tokens:
    def __init__(self, secret_key: str, confirm_max_age_seconds: int = 7 * 24 * 3600) -> None:
        self._secret = secret_key.encode("utf-8")
        self._unsubscribe = URLSafeSerializer(secret_key, salt=UNSUBSCRIBE_SALT)
        self._confirm = URLSafeTimedSerializer(secret_key, salt=CONFIRM_SALT)
        self._confirm_max_age = confirm_max_age_seconds

    def unsubscribe_token(self, subscriber_id: int) -> str:
        return self._unsubscribe.dumps(subscriber_id)

    def subscriber_from_unsubscribe(self, token: str) -> int | None:
        """The subscriber id a token stands for, or None when it is forged or damaged."""
        try:
            value = self._unsubscribe.loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, int) else None

    def confirm_token(self, subscriber_id: int) -> str:
        return self._confirm.dumps(subscriber_id)

    def check_confirm(self, token: str) -> ConfirmCheck:
        try:
            value = self._confirm.loads(token, max_age=self._confirm_max_age)
        except SignatureExpired as exc:
            # Genuine but too old: we still know who it was for, to offer a new link.
            value = self._confirm.load_payload(exc.payload) if exc.payload is not None else None
            return ConfirmCheck(value if isinstance(value, int) else None, expired=True)
        except BadSignature:
            return ConfirmCheck(None)
        return ConfirmCheck(value if isinstance(value, int) else None)

    def email_hash(self, email: str) -> str:
        """A keyed hash of an address: recognises it again without storing it."""
        return hmac.new(self._secret, email.encode("utf-8"), hashlib.sha256).hexdigest()
