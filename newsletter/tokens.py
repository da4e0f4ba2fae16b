"""Signed tokens that identify a subscriber in links (unsubscribe, confirm) and return paths, and keyed hashes.

Unsubscribe tokens never expire: a link in a years-old email must still work.
Confirmation tokens expire (NEWSLETTER_CONFIRM_MAX_AGE_DAYS).
Return-path tokens (VERP) name the issue and the reader a bounce is about.
Click tokens name the issue, the story link's place in it and the reader.

Unsubscribe and return-path tokens are made per message, so they are a plain
HMAC-SHA256 over a short text, keyed once (~3 µs a token). Unsubscribe tokens
used to be itsdangerous's (JSON, a zlib check, HMAC-SHA1: ~35 µs); those links
are in every email sent before, and still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

UNSUBSCRIBE_SALT = "unsubscribe"
CONFIRM_SALT = "confirm"
RETURN_PATH_SALT = b"return-path"
CLICK_SALT = b"click"
CHANGE_SALT = b"address-change"
# 16 base32 characters = 80 bits of HMAC: a forger must send ~2^79 reports to bounce one reader
# (or requests to unsubscribe one).
MAC_CHARS = 16
# Lower case digits and letters only: mail systems may change the case of a local part, and
# some keep nothing else intact. "m20261129-1a2b-<mac>": the issue's date, the reader's id in base 36;
# "m-1a2b-<mac>": no issue, a message of the reader's own (confirmation, welcome); "c1a2b-<mac>": the
# email asking a new address to confirm an address change, naming the change and not the reader.
_RETURN_PATH_TOKEN = re.compile(r"(?:m(\d{8})?-([0-9a-z]{1,13})|c([0-9a-z]{1,13}))-([a-z2-7]{%d})" % MAC_CHARS)
# "u1a2b-<mac>": the reader's id in base 36. Never a ".", which every itsdangerous token has;
# the same alphabet as return paths, so a link whose case was changed on the way still works.
_UNSUBSCRIBE_TOKEN = re.compile(r"u([0-9a-z]{1,13})-([a-z2-7]{%d})" % MAC_CHARS)
# "20261130-3-1a2b-<mac>": a story link's token, the issue's date, the story's place in it (1 is
# the lead) and the reader's id in base 36. Reader 0 is a test send: its clicks are never counted.
_CLICK_TOKEN = re.compile(r"(\d{8})-([1-9][0-9]?)-([0-9a-z]{1,13})-([a-z2-7]{%d})" % MAC_CHARS)
# "a1a2b-<mac>": a pending address change's id in base 36.
_CHANGE_TOKEN = re.compile(r"a([0-9a-z]{1,13})-([a-z2-7]{%d})" % MAC_CHARS)
CLICK_TOKEN_MAX_CHARS = 8 + 1 + 2 + 1 + 13 + 1 + MAC_CHARS
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class ReturnPathToken:
    """Who a bounce is about, as its return path says: the issue (YYYYMMDD) and the reader."""

    issue_tag: str  # "" for a message of the reader's own, about no issue (confirmation, welcome)
    subscriber_id: int  # 0 for an address change's email: its bounce says nothing of the reader
    change_id: int | None = None  # the address change whose new address the message went to


def _base36(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
        if not number:
            return "".join(reversed(digits))


# Lower-case base 32 (RFC 4648's alphabet) by pairs of characters, 10 bits each: base64.b32encode
# is written in Python (3.11) and cost more than the HMAC itself, twice a message.
_B32_PAIRS = [a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"]
_PAIR_SHIFTS = tuple(range(MAC_CHARS * 5 - 10, -1, -10))


def _mac(keyed: hmac.HMAC, body: str) -> str:
    """MAC_CHARS lower-case base32 characters of HMAC over `body` (base64.b32encode's, lower-cased)."""
    mac = keyed.copy()  # keyed once per Tokens: a copy is a third of the cost of keying HMAC anew
    mac.update(body.encode("ascii"))
    bits = int.from_bytes(mac.digest()[:MAC_CHARS * 5 // 8], "big")
    return "".join([_B32_PAIRS[(bits >> shift) & 1023] for shift in _PAIR_SHIFTS])


@dataclass(frozen=True)
class ClickToken:
    """Which link of which issue a reader followed: the issue (YYYYMMDD), the story's place (1 = lead), the reader."""

    issue_tag: str
    place: int
    subscriber_id: int


@dataclass(frozen=True)
class ConfirmCheck:
    """What a confirmation token says: whose it is, and whether it is still valid."""

    subscriber_id: int | None
    expired: bool = False


class Tokens:
    def __init__(self, secret_key: str, confirm_max_age_seconds: int = 7 * 24 * 3600) -> None:
        self._secret = secret_key.encode("utf-8")
        self._old_unsubscribe = URLSafeSerializer(secret_key, salt=UNSUBSCRIBE_SALT)  # verifies old links only
        self._confirm = URLSafeTimedSerializer(secret_key, salt=CONFIRM_SALT)
        self._confirm_max_age = confirm_max_age_seconds
        # Keyed once; each token copies them (see _mac).
        self._return_path_hmac = hmac.new(self._secret + RETURN_PATH_SALT, digestmod=hashlib.sha256)
        self._unsubscribe_hmac = hmac.new(self._secret + UNSUBSCRIBE_SALT.encode("ascii"), digestmod=hashlib.sha256)
        self._click_hmac = hmac.new(self._secret + CLICK_SALT, digestmod=hashlib.sha256)
        self._change_hmac = hmac.new(self._secret + CHANGE_SALT, digestmod=hashlib.sha256)

    def unsubscribe_token(self, subscriber_id: int) -> str:
        """The token of a reader's unsubscribe links: "u<id in base 36>-<80-bit HMAC in base 32>"."""
        body = f"u{_base36(subscriber_id)}"
        return f"{body}-{_mac(self._unsubscribe_hmac, body)}"

    def subscriber_from_unsubscribe(self, token: str) -> int | None:
        """The subscriber id a token stands for (a token of today or an old one), or None when forged or damaged."""
        match = _UNSUBSCRIBE_TOKEN.fullmatch(token.lower())
        if match is not None:
            subscriber, mac = match.groups()
            if not hmac.compare_digest(mac, _mac(self._unsubscribe_hmac, f"u{subscriber}")):
                return None
            return int(subscriber, 36)
        try:
            value = self._old_unsubscribe.loads(token)
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

    def return_path_token(self, issue_tag: str, subscriber_id: int) -> str:
        """The token VERP puts in a message's envelope sender: bounces+<token>@domain ("" issue: a reader's own mail)."""
        body = f"m{issue_tag}-{_base36(subscriber_id)}"
        return f"{body}-{_mac(self._return_path_hmac, body)}"

    def change_return_path_token(self, change_id: int) -> str:
        """The VERP token of the email to a new address: its bounce cancels the change, never the reader."""
        body = f"c{_base36(change_id)}"
        return f"{body}-{_mac(self._return_path_hmac, body)}"

    def click_token(self, issue_tag: str, place: int, subscriber_id: int) -> str:
        """The token of one story link in one reader's copy: /c/<token>."""
        body = f"{issue_tag}-{place}-{_base36(subscriber_id)}"
        return f"{body}-{_mac(self._click_hmac, body)}"

    def read_click_token(self, token: str) -> ClickToken | None:
        """What a click token says, or None when it is forged, damaged or not one of ours (constant-time check)."""
        if len(token) > CLICK_TOKEN_MAX_CHARS:
            return None
        match = _CLICK_TOKEN.fullmatch(token.lower())
        if match is None:
            return None
        issue_tag, place, subscriber, mac = match.groups()
        if not hmac.compare_digest(mac, _mac(self._click_hmac, f"{issue_tag}-{place}-{subscriber}")):
            return None
        return ClickToken(issue_tag, int(place), int(subscriber, 36))

    @staticmethod
    def has_return_path_shape(text: str) -> bool:
        """Whether `text` is shaped like a return-path token (true or forged), not some other plus address."""
        return _RETURN_PATH_TOKEN.fullmatch(text.lower()) is not None

    def read_return_path_token(self, token: str) -> ReturnPathToken | None:
        """What a return-path token says, or None when it is forged, damaged or not one of ours."""
        match = _RETURN_PATH_TOKEN.fullmatch(token.lower())
        if match is None:
            return None
        issue_tag, subscriber, change, mac = match.groups()
        if change is not None:
            if not hmac.compare_digest(mac, _mac(self._return_path_hmac, f"c{change}")):
                return None
            return ReturnPathToken("", 0, int(change, 36))
        issue_tag = issue_tag or ""
        if not hmac.compare_digest(mac, _mac(self._return_path_hmac, f"m{issue_tag}-{subscriber}")):
            return None
        return ReturnPathToken(issue_tag, int(subscriber, 36))

    def manage_token(self, subscriber_id: int) -> str:
        """The token of a reader's manage page: their unsubscribe token, valid as long (for ever).

        The page offers nothing the holder of that link could not already ask for by mail or undo
        by it; one token in the issue keeps every reader's copy the same size as before.
        """
        return self.unsubscribe_token(subscriber_id)

    def subscriber_from_manage(self, token: str) -> int | None:
        return self.subscriber_from_unsubscribe(token)

    def change_token(self, change_id: int) -> str:
        """The token of the link that confirms a new address: "a<change id in base 36>-<mac>".

        Single use: the change's row is deleted when the link is used, and ids are never reused.
        """
        body = f"a{_base36(change_id)}"
        return f"{body}-{_mac(self._change_hmac, body)}"

    def change_from_token(self, token: str) -> int | None:
        """The address change a token names, or None when it is forged or damaged (constant-time check)."""
        match = _CHANGE_TOKEN.fullmatch(token.lower())
        if match is None:
            return None
        change, mac = match.groups()
        if not hmac.compare_digest(mac, _mac(self._change_hmac, f"a{change}")):
            return None
        return int(change, 36)

    def email_hash(self, email: str) -> str:
        """A keyed hash of an address: recognises it again without storing it."""
        return hmac.new(self._secret, email.encode("utf-8"), hashlib.sha256).hexdigest()
