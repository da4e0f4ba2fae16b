"""Signed tokens that identify a subscriber in links (unsubscribe, confirm).

Unsubscribe tokens never expire: a link in a years-old email must still work.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

UNSUBSCRIBE_SALT = "unsubscribe"


class Tokens:
    def __init__(self, secret_key: str) -> None:
        self._unsubscribe = URLSafeSerializer(secret_key, salt=UNSUBSCRIBE_SALT)

    def unsubscribe_token(self, subscriber_id: int) -> str:
        return self._unsubscribe.dumps(subscriber_id)

    def subscriber_from_unsubscribe(self, token: str) -> int | None:
        """The subscriber id a token stands for, or None when it is forged or damaged."""
        try:
            value = self._unsubscribe.loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, int) else None
