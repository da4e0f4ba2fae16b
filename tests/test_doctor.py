"""`newsletter doctor` against a real world in miniature: an authoritative DNS server (nsd) with
made-up zones, good and broken; Postfix as the relay, plain and with STARTTLS and AUTH (Dovecot's
SASL); Dovecot as the bounce mailbox; the web app over HTTPS; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import text

from newsletter.config import Settings
from newsletter.doctor import run_doctor
from newsletter.doctor.install import check_clock, check_disk, check_schema
from newsletter.doctor.records import check_dkim, check_dmarc, check_spf
from newsletter.doctor.servers import check_mailbox, check_relay, check_site
from newsletter.doctor.spf import SpfEvaluator, SpfResult
from newsletter.mail.dkim import load_key
from .ports import free_port
from newsletter.store.database import Store
from newsletter.store.migrate import SCHEMA_HEAD
from newsletter.web.app import create_app

from .conftest import LiveApp, run_cli
from .nsd import NsdServer, txt

RELAY_USER, RELAY_PASSWORD = "newsroom", "relay-password"
MAILBOX_USER, MAILBOX_PASSWORD = "bounces", "imap-password"
SECRET_KEY = "tests-only-key-0123456789-abcdefghijklmnop"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """The DKIM keys of the settings, and another RSA key that DNS wrongly publishes for broken.example."""
    folder = tmp_path_factory.mktemp("dkim")
    made = {"rsa": rsa.generate_private_key(65537, 2048), "ed25519": ed25519.Ed25519PrivateKey.generate(),
            "other": rsa.generate_private_key(65537, 2048)}
    paths = {}
    for name, key in made.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


def _dkim_record(path: Path, selector: str) -> str:
    kind, public = load_key(path, selector, "TEST").public_tags
    return f"{selector}._domainkey TXT {txt(f'v=DKIM1; k={kind}; p={public}')}"


@pytest.fixture(scope="module")
def nameserver(keys):
    zones = {
        # All good: the relay (127.0.0.1) is covered through include: and redirect= and a:.
        "news.example": [
            '@ TXT "v=spf1 include:_spf.news.example -all"',
            '_spf TXT "v=spf1 ip4:192.0.2.0/24 ip4:1.2.3.0/24 redirect=_spf2.news.example"',
            '_spf2 TXT "v=spf1 a:relay.news.example -all"',
            "relay A 127.0.0.1",
            _dkim_record(keys["rsa"], "rsa"),
            _dkim_record(keys["ed25519"], "ed"),
            '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:dmarc@news.example"',
        ],
        # Broken: SPF names another relay, DKIM publishes another key, no DMARC at all.
        "broken.example": [
            '@ TXT "v=spf1 ip4:192.0.2.7 ~all"',
            _dkim_record(keys["other"], "rsa"),
        ],
        # One case a name, for the SPF evaluator.
        "spf.example": [
            'mx TXT "v=spf1 mx -all"',
            "mx MX 10 mail.spf.example.",
            "mail A 127.0.0.1",
            'cidr TXT "v=spf1 a:net.spf.example/24 -all"',
            "net A 127.0.0.200",
            'six TXT "v=spf1 ip6:::1 -all"',
            'two TXT "v=spf1 ip4:127.0.0.1 -all"',
            'two TXT "v=spf1 -all"',
            'loop TXT "v=spf1 include:loop.spf.example -all"',
            'dangling TXT "v=spf1 include:nowhere.spf.example -all"',
            'soft TXT "v=spf1 ip4:192.0.2.1 ~all"',
            'neutral TXT "v=spf1 ip4:192.0.2.1"',
            'macro TXT "v=spf1 exists:%{i}.spf.example -all"',
            'other TXT "not spf at all"',
        ],
    }
    server = NsdServer(zones)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dovecot():
    from .dovecot import DovecotServer

    server = DovecotServer({MAILBOX_USER: MAILBOX_PASSWORD, RELAY_USER: RELAY_PASSWORD}, sasl=True)
    server.maildir(MAILBOX_USER).close()
    yield server
    server.stop()


def _postfix(tmp_path_factory, **options):
    from .postfix import PostfixRelay

    nobody = pwd.getpwnam("nobody")
    return PostfixRelay(free_port(), "mailboxes.invalid", {"x@mailboxes.invalid": "x/Maildir/"},
                        tmp_path_factory.mktemp("mail"), nobody.pw_uid, nobody.pw_gid, **options)


@pytest.fixture(scope="module")
def plain_relay(tmp_path_factory):
    """Postfix without TLS or AUTH: it relays for whoever connects from loopback."""
    relay = _postfix(tmp_path_factory)
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def secure_relay(tmp_path_factory, certificate, dovecot):
    """Postfix with STARTTLS, and AUTH (checked by Dovecot) once TLS is on."""
    relay = _postfix(tmp_path_factory, tls=certificate, sasl_path=f"inet:127.0.0.1:{dovecot.auth_port}")
    yield relay
    relay.stop()


def doctor_settings(tmp_path: Path, **fields) -> Settings:
    values = dict(database_url=f"sqlite:///{tmp_path / 'subscribers.sqlite3'}", from_address="morning@news.example",
                  secret_key=SECRET_KEY, base_url="https://news.example", smtp_host="127.0.0.1")
    return Settings(_env_file=None, **{**values, **fields})


# --- SPF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain, address, result", [
    ("news.example", "127.0.0.1", SpfResult.passed),  # include: → redirect= → a:
    ("news.example", "192.0.2.55", SpfResult.passed),  # include: → ip4 with a prefix
    ("news.example", "198.51.100.1", SpfResult.fail),
    ("broken.example", "127.0.0.1", SpfResult.softfail),
    ("mx.spf.example", "127.0.0.1", SpfResult.passed),
    ("mx.spf.example", "127.0.0.2", SpfResult.fail),
    ("cidr.spf.example", "127.0.0.1", SpfResult.passed),  # a:…/24
    ("six.spf.example", "127.0.0.1", SpfResult.fail),  # an IPv6 range never covers an IPv4 address
    ("six.spf.example", "::1", SpfResult.passed),
    ("soft.spf.example", "127.0.0.1", SpfResult.softfail),
    ("neutral.spf.example", "127.0.0.1", SpfResult.neutral),
    ("two.spf.example", "127.0.0.1", SpfResult.permerror),
    ("loop.spf.example", "127.0.0.1", SpfResult.permerror),  # over 10 lookups
    ("dangling.spf.example", "127.0.0.1", SpfResult.permerror),
    ("macro.spf.example", "127.0.0.1", SpfResult.permerror),  # not expanded: said so, not guessed
    ("other.spf.example", "127.0.0.1", SpfResult.none),
    ("nothing.spf.example", "127.0.0.1", SpfResult.none),
])
def test_spf_evaluation(nameserver, domain, address, result):
    import ipaddress

    verdict = SpfEvaluator(nameserver.resolver()).check_host(ipaddress.ip_address(address), domain)
    assert verdict.result is result, verdict.why


def test_spf_check_says_what_to_add(nameserver, tmp_path):
    public = check_spf(doctor_settings(tmp_path, smtp_host="1.2.3.4"), nameserver.resolver())
    assert public.ok is True and public.detail == "news.example lets the relay 1.2.3.4 send for it", public
    # The envelope domain is the bounce address's: that is the one SPF is checked for.
    bad = check_spf(doctor_settings(tmp_path, smtp_host="5.6.7.8", bounce_address="bounces@broken.example"),
                    nameserver.resolver())
    assert bad.ok is False
    assert bad.detail == "relay 5.6.7.8 not covered by the SPF of broken.example (softfail: ~all in broken.example)"
    assert bad.fix == "add ip4:5.6.7.8 to the SPF record of broken.example"
    # A relay on this machine: covered or not, receivers see another address, and the line says so.
    local = check_spf(doctor_settings(tmp_path), nameserver.resolver())
    assert local.ok is True and "a private address" in local.detail, local
    local_bad = check_spf(doctor_settings(tmp_path, bounce_address="bounces@broken.example"), nameserver.resolver())
    assert local_bad.ok is False and "the relay 127.0.0.1 is on a private address" in local_bad.detail
    assert local_bad.fix == "add the relay's public address (ip4:…) to the SPF record of broken.example"
    missing = check_spf(doctor_settings(tmp_path, smtp_host="1.2.3.4", from_address="morning@nothing.spf.example"),
                        nameserver.resolver())
    assert missing.ok is False and "publishes no SPF record" in missing.detail
    assert missing.fix == 'publish nothing.spf.example. IN TXT "v=spf1 ip4:1.2.3.4 -all"'
    broken = check_spf(doctor_settings(tmp_path, from_address="morning@two.spf.example"), nameserver.resolver())
    assert broken.ok is False and broken.detail.startswith("the SPF record of two.spf.example is broken: "
                                                           "two.spf.example publishes 2 SPF records")


# --- DKIM and DMARC -------------------------------------------------------------------------


def test_dkim_record_must_be_the_configured_key(nameserver, keys, tmp_path):
    both = dict(dkim_rsa_selector="rsa", dkim_rsa_key_file=keys["rsa"], dkim_ed25519_selector="ed",
                dkim_ed25519_key_file=keys["ed25519"])
    good = check_dkim(doctor_settings(tmp_path, **both), nameserver.resolver())
    assert [c.ok for c in good] == [True, True], good
    assert "rsa._domainkey.news.example publishes the configured rsa key" in good[0].detail
    broken = check_dkim(doctor_settings(tmp_path, from_address="morning@broken.example", **both),
                        nameserver.resolver())
    assert [c.ok for c in broken] == [False, False]
    assert "the rsa key published at rsa._domainkey.broken.example is not the rsa key in " \
           "NEWSLETTER_DKIM_RSA_KEY_FILE" in broken[0].detail
    assert "no DKIM record at ed._domainkey.broken.example" in broken[1].detail
    assert broken[1].fix.startswith("publish what `newsletter dkim` prints: ed._domainkey.broken.example.")
    unsigned = check_dkim(doctor_settings(tmp_path), nameserver.resolver())
    assert [c.ok for c in unsigned] == [None]


def test_dmarc(nameserver, keys, tmp_path):
    good = check_dmarc(doctor_settings(tmp_path), nameserver.resolver())
    assert good.ok is True
    assert good.detail == ("p=reject: receivers refuse mail that fails DMARC, reports to mailto:dmarc@news.example; "
                           "aligned with From: SPF")
    # A subdomain without a record of its own falls under its parent's.
    sub = check_dmarc(doctor_settings(tmp_path, from_address="morning@mail.news.example"), nameserver.resolver())
    assert sub.ok is True and sub.detail.startswith("p=reject (of news.example, its parent): receivers refuse")
    # Bounces at another domain, and the app signing for another: nothing aligned.
    unaligned = check_dmarc(doctor_settings(tmp_path, bounce_address="b@broken.example", dkim_domain="broken.example",
                                            dkim_rsa_selector="rsa", dkim_rsa_key_file=keys["rsa"]),
                            nameserver.resolver())
    assert unaligned.ok is False and "every issue fails DMARC" in unaligned.detail
    missing = check_dmarc(doctor_settings(tmp_path, from_address="morning@broken.example"), nameserver.resolver())
    assert missing.ok is False and "broken.example publishes no DMARC record" in missing.detail
    assert missing.fix.startswith('publish _dmarc.broken.example. IN TXT "v=DMARC1; p=none;')


# --- the relay, the mailbox, the site -----------------------------------------------------


def test_plain_relay(plain_relay, tmp_path):
    checks = check_relay(doctor_settings(tmp_path, smtp_port=plain_relay.port))
    assert [c.ok for c in checks] == [True, None, None], checks
    assert "answers EHLO (relay.news.example ESMTP" in checks[0].detail
    # Told to use STARTTLS, against a relay that does not offer it.
    checks = check_relay(doctor_settings(tmp_path, smtp_port=plain_relay.port, smtp_tls="starttls"))
    assert [c.ok for c in checks] == [True, False]
    assert checks[1].detail == f"127.0.0.1:{plain_relay.port} does not offer STARTTLS"
    # Postfix logs each session's commands ("ehlo=1 quit=1 commands=2") when it has closed the session,
    # a moment after the doctor has: wait for those lines. No MAIL FROM was ever said.
    deadline = time.monotonic() + 20
    while plain_relay.log().count("ehlo=") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert plain_relay.log().count("ehlo=") >= 2 and "mail=" not in plain_relay.log(), plain_relay.log()


def test_secure_relay(secure_relay, certificate, tmp_path):
    secure = dict(smtp_port=secure_relay.port, smtp_tls="starttls", smtp_ca_file=certificate[0],
                  smtp_username=RELAY_USER, smtp_password=RELAY_PASSWORD)
    checks = check_relay(doctor_settings(tmp_path, **secure))
    assert [c.ok for c in checks] == [True, True, True], [c.line() for c in checks]
    assert checks[2].detail == f"127.0.0.1:{secure_relay.port} accepts the login of {RELAY_USER} (no mail sent)"
    wrong = check_relay(doctor_settings(tmp_path, **{**secure, "smtp_password": "wrong"}))
    assert [c.ok for c in wrong] == [True, True, False]
    assert wrong[2].detail.startswith(f"127.0.0.1:{secure_relay.port} refuses the login of {RELAY_USER} (535")
    untrusted = check_relay(doctor_settings(tmp_path, **{**secure, "smtp_ca_file": None}))
    assert [c.ok for c in untrusted] == [True, False]
    assert "its certificate is not trusted" in untrusted[1].detail
    assert "NEWSLETTER_SMTP_CA_FILE" in untrusted[1].fix
    assert "auth=1 quit=1" in secure_relay.log() and "mail=" not in secure_relay.log()


def test_relay_with_implicit_tls(secure_relay, certificate, tmp_path):
    implicit = dict(smtp_port=secure_relay.tls_port, smtp_tls="tls", smtp_ca_file=certificate[0],
                    smtp_username=RELAY_USER, smtp_password=RELAY_PASSWORD)
    checks = check_relay(doctor_settings(tmp_path, **implicit))
    assert [c.ok for c in checks] == [True, True, True], [c.line() for c in checks]
    assert checks[1].detail.startswith("TLS from the first byte with a trusted certificate (TLSv1.")
    untrusted = check_relay(doctor_settings(tmp_path, **{**implicit, "smtp_ca_file": None}))
    assert [c.ok for c in untrusted] == [False]
    assert untrusted[0].detail.startswith(f"127.0.0.1:{secure_relay.tls_port}: its TLS certificate is not trusted")


def test_relay_down(tmp_path):
    checks = check_relay(doctor_settings(tmp_path, smtp_port=free_port()))
    assert [c.ok for c in checks] == [False]
    assert "does not answer: connection refused" in checks[0].detail


def test_mailbox(dovecot, tmp_path):
    imap = dict(imap_host="127.0.0.1", imap_port=dovecot.port, imap_tls="none", imap_username=MAILBOX_USER,
                imap_password=MAILBOX_PASSWORD)
    good = check_mailbox(doctor_settings(tmp_path, **imap))
    assert good.ok is True and good.detail.endswith("logged in; INBOX holds 0 message(s)"), good
    refused = check_mailbox(doctor_settings(tmp_path, **{**imap, "imap_password": "wrong"}))
    assert refused.ok is False and "login refused" in refused.detail
    no_folder = check_mailbox(doctor_settings(tmp_path, **{**imap, "imap_folder": "Bounces"}))
    assert no_folder.ok is False and "there is no folder Bounces" in no_folder.detail
    assert dovecot.folder_sizes(MAILBOX_USER) == {"INBOX": 0}  # nothing made or moved
    assert check_mailbox(doctor_settings(tmp_path)).ok is None


def test_site_over_https(certificate, tmp_path, monkeypatch):
    plain = check_site(doctor_settings(tmp_path, base_url="http://127.0.0.1:8000"))
    assert plain.ok is False and "need HTTPS" in plain.detail
    down = check_site(doctor_settings(tmp_path, base_url=f"https://127.0.0.1:{free_port()}"))
    assert down.ok is False and "no answer" in down.detail
    settings = doctor_settings(tmp_path, base_url="https://127.0.0.1")
    store = Store(settings.database_url)
    with LiveApp(create_app(settings, store), ssl_certfile=str(certificate[0]),
                 ssl_keyfile=str(certificate[1])) as live:
        served = doctor_settings(tmp_path, base_url=f"https://127.0.0.1:{live.port}")
        untrusted = check_site(served)
        assert untrusted.ok is False and "certificate is not trusted" in untrusted.detail
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # as an operator's private CA would be
        good = check_site(served)
        elsewhere = check_site(doctor_settings(tmp_path, base_url=f"https://127.0.0.1:{live.port}/news"))
    store.close()
    assert good.ok is True, good
    assert good.detail == f"https://127.0.0.1:{live.port}/healthz answers 200 over HTTPS"
    assert elsewhere.ok is False
    assert elsewhere.detail == f"https://127.0.0.1:{live.port}/news/healthz answers 404 Not Found"


# --- the store: schema, clock, disk -------------------------------------------------------


def test_schema_and_clock(database_url, tmp_path):
    store = Store(database_url)
    try:
        assert check_schema(store).ok is True
        clock = check_clock(store)
        assert clock.ok is True, clock
        assert check_clock(store, max_skew=-1).ok is False  # the comparison is really made
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
        old = check_schema(store)
        assert old.ok is False
        assert old.detail == f"the database is at schema 0006; this version needs {SCHEMA_HEAD}"
        assert old.fix == "back the database up, then run `newsletter db upgrade`"
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_disk_room(tmp_path):
    settings = doctor_settings(tmp_path)
    Store(settings.database_url).close()
    assert check_disk(settings).ok is True
    full = check_disk(settings, min_free=2 ** 60)  # more than any disk: as if this one were full
    assert full.ok is False and full.detail.startswith("only ") and "newsletter db compact" in full.fix


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def world_env(env, nameserver, keys, secure_relay, dovecot, certificate):
    return {**env, "NEWSLETTER_DOCTOR_NAMESERVER": nameserver.address,
            "NEWSLETTER_BOUNCE_ADDRESS": "bounces@news.example",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(secure_relay.port),
            "NEWSLETTER_SMTP_TLS": "starttls", "NEWSLETTER_SMTP_CA_FILE": str(certificate[0]),
            "NEWSLETTER_SMTP_USERNAME": RELAY_USER, "NEWSLETTER_SMTP_PASSWORD": RELAY_PASSWORD,
            "NEWSLETTER_DKIM_RSA_SELECTOR": "rsa", "NEWSLETTER_DKIM_RSA_KEY_FILE": str(keys["rsa"]),
            "NEWSLETTER_DKIM_ED25519_SELECTOR": "ed", "NEWSLETTER_DKIM_ED25519_KEY_FILE": str(keys["ed25519"]),
            "NEWSLETTER_IMAP_HOST": "127.0.0.1", "NEWSLETTER_IMAP_PORT": str(dovecot.port),
            "NEWSLETTER_IMAP_TLS": "none", "NEWSLETTER_IMAP_USERNAME": MAILBOX_USER,
            "NEWSLETTER_IMAP_PASSWORD": MAILBOX_PASSWORD, "SSL_CERT_FILE": str(certificate[0])}


@pytest.fixture
def site(world_env, certificate, settings):
    with LiveApp(create_app(settings), ssl_certfile=str(certificate[0]), ssl_keyfile=str(certificate[1])) as live:
        yield f"https://127.0.0.1:{live.port}"


EXPECTED_NAMES = ["settings", "secret key", "schema", "clock", "disk"]


def test_doctor_all_good(world_env, site, store_kind):
    result = run_cli("doctor", env={**world_env, "NEWSLETTER_BASE_URL": site})
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(":")[0][2:] for line in lines[:5]] == EXPECTED_NAMES
    assert all(line.startswith("✓ ") for line in lines if "disk" not in line or store_kind == "sqlite"), lines
    names = [line[2:].split(":")[0] for line in lines]
    for name in ("relay", "relay TLS", "relay login", "SPF", "DKIM rsa", "DKIM ed", "DMARC", "bounce mailbox", "site"):
        assert name in names, lines
    assert sum(name.startswith("feed ") for name in names) == 4
    assert result.stderr == ""
    report = json.loads(run_cli("doctor", "--json", env={**world_env, "NEWSLETTER_BASE_URL": site}).stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == names
    assert {c["status"] for c in report["checks"]} <= {"ok", "skip"}


def test_doctor_broken_world(world_env, plain_relay, store_kind):
    broken = {**world_env, "NEWSLETTER_FROM_ADDRESS": "morning@broken.example",
              "NEWSLETTER_BOUNCE_ADDRESS": "bounces@broken.example", "NEWSLETTER_SMTP_PORT": str(plain_relay.port),
              "NEWSLETTER_IMAP_PASSWORD": "wrong", "NEWSLETTER_BASE_URL": "http://127.0.0.1:8000",
              "NEWSLETTER_FEEDS": f"{Path(__file__).parent / 'missing.xml'}"}
    result = run_cli("doctor", env=broken)
    assert result.returncode == 1, result.stdout + result.stderr
    failures = {line[2:].split(":")[0]: line for line in result.stdout.splitlines() if line.startswith("✗ ")}
    assert set(failures) == {"feed " + broken["NEWSLETTER_FEEDS"], "relay TLS", "SPF", "DKIM rsa", "DKIM ed",
                             "DMARC", "bounce mailbox", "site"}, result.stdout
    assert failures["SPF"].endswith("→ add the relay's public address (ip4:…) to the SPF record of broken.example")
    report = json.loads(run_cli("doctor", "--json", env=broken).stdout)
    assert report["ok"] is False
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} == set(failures)
    assert all(c["fix"] for c in report["checks"] if c["status"] == "fail")


@pytest.mark.sqlite_only
def test_doctor_bad_settings_stop_at_the_first_line(env):
    result = run_cli("doctor", env={**env, "NEWSLETTER_DOCTOR_NAMESERVER": "dns.example"})
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "✗ settings: setting NEWSLETTER_DOCTOR_NAMESERVER: 'dns.example' is not an IP address with an optional "
        "port, like 127.0.0.1:5353 → correct it in .env (every setting is explained in .env.example)"]


def test_doctor_sees_a_host_clock_off(env, store_kind):
    """Under libfaketime this host runs two minutes ahead: PostgreSQL's clock is the server's, SQLite's ours."""
    Store(env["NEWSLETTER_DATABASE_URL"]).close()
    result = subprocess.run(["faketime", "-f", "+120s", sys.executable, "-m", "newsletter", "doctor", "--json"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    clock = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "clock")
    if store_kind == "postgresql":
        assert clock["status"] == "fail", clock
        assert clock["detail"].startswith("this host's clock is 120 s ahead of the database's")
    else:
        assert clock["status"] == "ok", clock
        assert clock["detail"].startswith("SQLite reads this host's clock")


def test_run_doctor_in_process(tmp_path):
    """The library answers without the CLI: the settings' loader is passed in."""
    def broken():
        from newsletter.errors import ConfigError

        raise ConfigError("setting NEWSLETTER_SMTP_PORT: too big")

    assert [c.line() for c in run_doctor(broken)] == [
        "✗ settings: setting NEWSLETTER_SMTP_PORT: too big → correct it in .env (every setting is explained in "
        ".env.example)"]
