"""DKIM signing in the app: rsa-sha256 and ed25519-sha256 side by side, verified by dkimpy's verifier
on the messages the real SMTP server received, against the DNS records `newsletter dkim` prints."""

from __future__ import annotations

import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .conftest import SAMPLE_DATE, run_cli


def write_key(path, key) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def dkim_env(env, tmp_path):
    return {**env,
            "NEWSLETTER_DKIM_RSA_SELECTOR": "morning2026",
            "NEWSLETTER_DKIM_RSA_KEY_FILE": write_key(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048)),
            "NEWSLETTER_DKIM_ED25519_SELECTOR": "morning2026e",
            "NEWSLETTER_DKIM_ED25519_KEY_FILE": write_key(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate()),
            "NEWSLETTER_BOUNCE_ADDRESS": "bounces@news.example"}


def dns_from(records_text: str):
    """A resolver answering from the records `newsletter dkim` printed (there is no DNS here)."""
    records = {}
    for line in records_text.splitlines():
        match = re.match(r'(\S+)\. IN TXT "(.*)"$', line)
        if match:
            records[match.group(1).encode() + b"."] = match.group(2).encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name if name.endswith(b".") else name + b".")
    return lookup


def verifies(raw: bytes, index: int, dns) -> bool:
    try:
        return dkim.DKIM(raw).verify(idx=index, dnsfunc=dns)
    except dkim.ValidationError:  # a body hash that does not match is raised, not returned
        return False


def test_every_message_carries_two_signatures_that_dkimpy_verifies(dkim_env, store, smtp_server):
    for address in ("layla@example.com", "omar@example.org"):
        store.add_subscriber(address, "ليلى")
    records = run_cli("dkim", env=dkim_env)
    assert records.returncode == 0, records.stderr
    assert "morning2026._domainkey.news.example. IN TXT \"v=DKIM1; k=rsa; p=" in records.stdout
    assert "morning2026e._domainkey.news.example. IN TXT \"v=DKIM1; k=ed25519; p=" in records.stdout
    dns = dns_from(records.stdout)

    sent = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=dkim_env)

    assert sent.returncode == 0, sent.stderr
    assert len(smtp_server.handler.messages) == 2
    for received in smtp_server.handler.messages:
        signatures = [h for h in received.parsed().get_all("DKIM-Signature")]
        assert [re.search(r"a=([\w-]+)", s).group(1) for s in signatures] == ["rsa-sha256", "ed25519-sha256"]
        assert all("d=news.example" in s for s in signatures)
        for index in range(2):
            assert verifies(received.raw, index, dns), f"signature {index} of {received.rcpt_to}"


def test_a_changed_body_or_header_fails_verification(dkim_env, store, smtp_server):
    store.add_subscriber("layla@example.com", "")
    dns = dns_from(run_cli("dkim", env=dkim_env).stdout)
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=dkim_env).returncode == 0
    raw = smtp_server.handler.messages[0].raw
    assert verifies(raw, 0, dns) and verifies(raw, 1, dns)
    headers, _, body = raw.partition(b"\r\n\r\n")
    changed_body = headers + b"\r\n\r\n" + body.replace(b"A", b"B", 1)
    changed_to = raw.replace(b"To: layla@example.com", b"To: someone@example.com", 1)
    for forged in (changed_body, changed_to):
        assert forged != raw
        assert not verifies(forged, 0, dns) and not verifies(forged, 1, dns)


def test_a_weak_or_unreadable_key_is_one_line_before_anything_is_sent(env, store, smtp_server, tmp_path):
    store.add_subscriber("layla@example.com", "")
    weak = write_key(tmp_path / "weak.pem", rsa.generate_private_key(65537, 1024))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    edwards = write_key(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate())
    strong = write_key(tmp_path / "strong.pem", rsa.generate_private_key(65537, 2048))
    cases = [({"NEWSLETTER_DKIM_RSA_SELECTOR": "s", "NEWSLETTER_DKIM_RSA_KEY_FILE": weak}, "1024-bit RSA key"),
             ({"NEWSLETTER_DKIM_RSA_SELECTOR": "s", "NEWSLETTER_DKIM_RSA_KEY_FILE": str(garbage)},
              "is not an unencrypted PEM private key"),
             ({"NEWSLETTER_DKIM_RSA_KEY_FILE": weak}, "NEWSLETTER_DKIM_RSA_SELECTOR is empty"),
             # An Ed25519 key in the RSA slot would sign with ed25519 only, which many receivers do not check.
             ({"NEWSLETTER_DKIM_RSA_SELECTOR": "s", "NEWSLETTER_DKIM_RSA_KEY_FILE": edwards}, "is not an RSA key"),
             ({"NEWSLETTER_DKIM_RSA_SELECTOR": "bad selector!", "NEWSLETTER_DKIM_RSA_KEY_FILE": strong},
              "'bad selector!' is not a DNS name"),
             ({"NEWSLETTER_DKIM_DOMAIN": "bad domain", "NEWSLETTER_DKIM_RSA_SELECTOR": "s",
               "NEWSLETTER_DKIM_RSA_KEY_FILE": strong}, "NEWSLETTER_DKIM_DOMAIN")]
    for settings, words in cases:
        result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env={**env, **settings})
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert smtp_server.handler.messages == []
