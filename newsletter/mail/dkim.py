"""DKIM signatures (RFC 6376; ed25519-sha256 per RFC 8463) for relays that do not sign.

Each message gets one DKIM-Signature per key, rsa-sha256 and ed25519-sha256 side by side.
Canonicalization relaxed/simple: headers relaxed, the body as it is, which our bodies already
are (base64 lines, CRLF, no trailing empty line). The static headers are canonicalized once per
issue; per reader only To, Message-ID and List-Unsubscribe, the body hash and the signature are
computed.

Signed here rather than with dkimpy's `sign`: it canonicalizes the 79 KB body with regular
expressions and signs RSA in pure Python, 22 ms a message (45 msg/s); this costs about the
RSA signature itself (OpenSSL, through `cryptography`). dkimpy verifies our signatures in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from ..config import HOST_NAME, Settings
from ..errors import ConfigError

# What is signed, in this order; a header the message lacks is still listed, so that nobody can add it.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
                  "list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id")
MIN_RSA_BITS = 2048
_WSP = re.compile(rb"[ \t]+")


@dataclass(frozen=True)
class DkimKey:
    selector: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) else "rsa-sha256"

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(hashlib.sha256(data).digest())  # RFC 8463: PureEdDSA over the hash
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    @property
    def public_tags(self) -> tuple[str, str]:
        """k= and p= of the DNS record: the key type and the public key, base64."""
        public = self.private_key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            kind, raw = "ed25519", public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            kind, raw = "rsa", public.public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        return kind, base64.b64encode(raw).decode()

    def dns_record(self, domain: str) -> str:
        """The TXT record receivers look up: name and value."""
        kind, public = self.public_tags
        return f'{self.selector}._domainkey.{domain}. IN TXT "v=DKIM1; k={kind}; p={public}"'


# A selector is one or more DNS labels: it names the record <selector>._domainkey.<domain>.
_SELECTOR = re.compile(HOST_NAME)
KEY_TYPES = {"rsa": (rsa.RSAPrivateKey, "an RSA"), "ed25519": (ed25519.Ed25519PrivateKey, "an Ed25519")}


def load_key(path: Path, selector: str, setting: str, algorithm: str | None = None) -> DkimKey:
    """A DKIM private key from a PEM file (RSA of at least 2048 bits, or Ed25519; the one `algorithm` names)."""
    if not selector:
        raise ConfigError(f"setting {setting}_SELECTOR is empty: a DKIM key needs its selector")
    if not _SELECTOR.fullmatch(selector):
        raise ConfigError(f"setting {setting}_SELECTOR: {selector!r} is not a DNS name such as s1 or 2026a "
                          "(letters, digits and hyphens)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"setting {setting}_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting {setting}_KEY_FILE: {path} is not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ConfigError(f"setting {setting}_KEY_FILE: {path} is a {key.key_size}-bit RSA key; receivers want "
                          f"at least {MIN_RSA_BITS} bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)")
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise ConfigError(f"setting {setting}_KEY_FILE: {path} is neither an RSA nor an Ed25519 key")
    if algorithm is not None and not isinstance(key, KEY_TYPES[algorithm][0]):
        # An Ed25519 key in the RSA slot signs only ed25519-sha256, which many receivers do not check yet.
        raise ConfigError(f"setting {setting}_KEY_FILE: {path} is not {KEY_TYPES[algorithm][1]} key")
    return DkimKey(selector, key)


def dkim_keys(settings: Settings) -> list[DkimKey]:
    """The DKIM keys the settings name, loaded and checked (ConfigError on a bad one)."""
    keys = []
    for algorithm in ("rsa", "ed25519"):
        path, selector = getattr(settings, f"dkim_{algorithm}_key_file"), getattr(settings, f"dkim_{algorithm}_selector")
        if path is not None or selector:
            if path is None:
                raise ConfigError(f"setting NEWSLETTER_DKIM_{algorithm.upper()}_KEY_FILE is empty but its selector is set")
            keys.append(load_key(path, selector, f"NEWSLETTER_DKIM_{algorithm.upper()}", algorithm))
    return keys


def relaxed_header(line: bytes) -> bytes:
    """One header field ("Name: value\\r\\n", maybe folded) in relaxed canonical form (RFC 6376 3.4.2)."""
    name, _, value = line.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def header_fields(block: bytes) -> dict[bytes, bytes]:
    """The fields of a block of header lines, by lowercase name, each in relaxed canonical form."""
    fields: dict[bytes, bytes] = {}
    for line in re.split(rb"\r\n(?![ \t])", block):
        if line:
            fields[line.partition(b":")[0].strip().lower()] = relaxed_header(line + b"\r\n")
    return fields


class DkimSigner:
    """Signs one issue's messages: the static headers canonicalized once, per reader the rest."""

    def __init__(self, domain: str, keys: list[DkimKey], static_headers: bytes, timestamp: int) -> None:
        self.domain = domain
        self.keys = keys
        self.static = header_fields(static_headers)
        self.timestamp = timestamp

    def signatures(self, reader_headers: bytes, body: bytes) -> bytes:
        """DKIM-Signature header lines for a message with these per-reader headers and this body."""
        fields = {**self.static, **header_fields(reader_headers)}
        signed = b"".join(fields[name.encode()] for name in SIGNED_HEADERS if name.encode() in fields)
        body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        out = []
        for key in self.keys:
            template = (f"DKIM-Signature: v=1; a={key.algorithm}; c=relaxed/simple; d={self.domain};\r\n"
                        f"\ts={key.selector}; t={self.timestamp};\r\n"
                        f"\th={':'.join(SIGNED_HEADERS)};\r\n"
                        f"\tbh={body_hash};\r\n\tb=").encode("ascii")
            signature = key.sign(signed + relaxed_header(template)[:-2])  # the field itself: no final CRLF
            encoded = base64.b64encode(signature)
            folded = b"\r\n\t".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
            out.append(template + folded + b"\r\n")
        return b"".join(out)
