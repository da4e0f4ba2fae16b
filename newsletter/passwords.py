"""Editors' passwords: Argon2id hashes, and what a new password must be.

A password must be long (12 characters at least) and must not be a common one: the whole
password, or its letters alone (Password2024! → password), may not be on the list in
common_passwords.txt, and a password of very few different characters is refused too.
Why a reason comes back as a code: the pages say it in Arabic, from templates/.
"""

from __future__ import annotations

import functools
import unicodedata
from enum import Enum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 12
# Argon2 hashes anything, but a megabyte a try is an easy way to make the server work.
MAX_PASSWORD_LENGTH = 256
MIN_DISTINCT_CHARACTERS = 5
COMMON_PASSWORDS = Path(__file__).resolve().parent / "common_passwords.txt"

# argon2-cffi's defaults are RFC 9106's second recommended profile for Argon2id (t=3, 64 MiB, p=4).
_hasher = PasswordHasher()


class PasswordProblem(str, Enum):
    too_short = "too_short"
    too_long = "too_long"
    common = "common"
    mismatch = "mismatch"


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so that a wrong address takes as long as a wrong password."""
    return _hasher.hash("no such editor: this hash only spends the same time")


@functools.cache
def _common() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(password: str, repeated: str, email: str = "") -> PasswordProblem | None:
    """What is wrong with a new password (typed twice), or None when it will do."""
    password = unicodedata.normalize("NFC", password)
    if password != unicodedata.normalize("NFC", repeated):
        return PasswordProblem.mismatch
    if len(password) < MIN_PASSWORD_LENGTH:
        return PasswordProblem.too_short
    if len(password) > MAX_PASSWORD_LENGTH:
        return PasswordProblem.too_long
    lowered = password.casefold()
    letters = "".join(c for c in lowered if c.isalpha())
    mailbox = email.casefold().split("@")[0]
    if lowered in _common() or letters in _common() or len(set(lowered)) < MIN_DISTINCT_CHARACTERS \
            or (len(mailbox) >= 4 and mailbox in lowered) or (letters and letters == mailbox):
        return PasswordProblem.common
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(unicodedata.normalize("NFC", password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing hash (no such editor, or none set yet) costs the same time."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), unicodedata.normalize("NFC", password[:MAX_PASSWORD_LENGTH])) \
            and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's: it is remade at the next sign-in."""
    return _hasher.check_needs_rehash(stored_hash)
