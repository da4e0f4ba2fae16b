"""Bounces and complaints flowing back: the VERP return path, reports in the formats of several MTAs
and providers (tests/data/reports/, written for these tests), and `newsletter bounces` on a real
store, from a Maildir, an mbox and stdin."""

from __future__ import annotations

import datetime as dt
import mailbox
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from newsletter.edition import send_edition
from newsletter.mail.bounces import ReportKind, parse_report
from newsletter.store.database import Status
from newsletter.store.feedback import Feedback
from newsletter.store.schema import FeedbackKind
from newsletter.tokens import Tokens

from .conftest import SAMPLE_DATE, run_cli

REPORTS = Path(__file__).parent / "data" / "reports"
BOUNCES = "bounces@news.example"


def report(name: str, tokens: Tokens, subscriber_id: int, email: str, issue: dt.date,
           return_path: str | None = None) -> bytes:
    """A report of tests/data/reports about one reader's copy of one issue."""
    tag = issue.strftime("%Y%m%d")
    values = {
        "{{RETURN_PATH}}": return_path or f"bounces+{tokens.return_path_token(tag, subscriber_id)}@news.example",
        "{{READER}}": email,
        "{{MESSAGE_ID}}": f"<morning.{tag}.{subscriber_id}@news.example>",
        "{{UNSUBSCRIBE_URL}}": f"https://news.example/unsubscribe/{tokens.unsubscribe_token(subscriber_id)}",
    }
    text = (REPORTS / name).read_text(encoding="utf-8")
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text.encode("utf-8")


@pytest.fixture
def bounce_env(env):
    return {**env, "NEWSLETTER_BOUNCE_ADDRESS": BOUNCES}


def test_each_message_has_a_return_path_naming_its_reader_and_issue(settings, store, smtp_server):
    settings = settings.model_copy(update={"bounce_address": BOUNCES})
    for address in ("layla@example.com", "omar@example.org"):
        store.add_subscriber(address, "")
    result = send_edition(settings, store, SAMPLE_DATE)
    assert result.report.sent == 2
    tokens = Tokens(settings.secret_key)
    for received in smtp_server.handler.messages:
        local, _, domain = received.mail_from.rpartition("@")
        assert domain == "news.example" and local.startswith("bounces+")
        token = tokens.read_return_path_token(local.removeprefix("bounces+"))
        assert token is not None and token.issue_tag == "20170509"
        assert token.subscriber_id == store.get_subscriber(received.rcpt_to).id
        assert received.parsed()["Feedback-ID"] == "20170509:morning:news.example"
    assert len({m.mail_from for m in smtp_server.handler.messages}) == 2


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(settings, store, smtp_server):
    store.add_subscriber("layla@example.com", "")
    send_edition(settings, store, SAMPLE_DATE)
    assert [m.mail_from for m in smtp_server.handler.messages] == ["morning@news.example"]


@pytest.mark.parametrize("name, kind, status", [
    ("postfix_hard_5.1.1.eml", ReportKind.hard, "5.1.1"),
    ("postfix_delayed_4.4.1.eml", ReportKind.delayed, "4.4.1"),  # still trying: never a bounce
    ("gmail_mailbox_full_5.2.2.eml", ReportKind.soft, "5.2.2"),  # mailbox full: temporary, whatever its class
    ("exim_hard.eml", ReportKind.hard, "5.1.1"),
    ("exchange_online_5.1.10.eml", ReportKind.hard, "5.1.10"),
    # A spam filter or missing authentication refuses *us*: never the reader's fault.
    ("gmail_spam_block_5.7.1.eml", ReportKind.blocked, "5.7.1"),
    # Prose whose first numbers are a relay's address (64.4.15.110) and a quoted header (B=0.500).
    ("qmail_unauthenticated_5.7.26.eml", ReportKind.blocked, "5.7.26"),
    ("yahoo_hard.eml", ReportKind.hard, ""),
    ("arf_complaint.eml", ReportKind.complaint, ""),
    ("out_of_office.eml", ReportKind.auto_reply, ""),
])
def test_reports_of_each_format_say_what_happened_and_to_whom(name, kind, status):
    tokens = Tokens("tests-only-key-0123456789-abcdefghijklmnop")
    [parsed] = parse_report(report(name, tokens, 42, "layla@example.com", dt.date(2026, 11, 29)), tokens, BOUNCES)
    assert (parsed.kind, parsed.status) == (kind, status)
    if kind is not ReportKind.auto_reply:
        assert parsed.token is not None and parsed.token.subscriber_id == 42
        assert parsed.issue_date == "2026-11-29"
        assert parsed.reason
    if kind in (ReportKind.hard, ReportKind.soft, ReportKind.delayed, ReportKind.blocked):
        assert parsed.addresses == {"layla@example.com"}, "the detector finds the failed recipient"
    # Without the return path, a complaint still names the reader through its copy's signed link.
    if kind is ReportKind.complaint:
        [bare] = parse_report(report(name, tokens, 42, "layla@example.com", dt.date(2026, 11, 29),
                                   return_path="bounces@news.example"), tokens, BOUNCES)
        assert bare.token is None and bare.complained_id == 42 and bare.issue_date == "2026-11-29"


def test_a_version_or_an_address_in_the_prose_is_never_read_as_the_status():
    tokens = Tokens("tests-only-key-0123456789-abcdefghijklmnop")
    # Exchange's prose names "version 4.1.5.31" and "64.4.15.110" before the reply; its part claims
    # a charset Python does not know (ansi_x3.110-1983), which must not stop the reading.
    raw = report("exchange_prose_ip_version_5.1.1.eml", tokens, 42, "layla@example.com", dt.date(2026, 11, 29))
    [parsed] = parse_report(raw, tokens, BOUNCES)
    assert (parsed.kind, parsed.status) == (ReportKind.hard, "5.1.1")
    assert parsed.token is not None and parsed.token.subscriber_id == 42


def _dsn(recipients: list[tuple[str, str, str, str]], message_id: str = "<two@relay.example>") -> bytes:
    """A DSN naming several recipients: (address, action, status, the server's words)."""
    blocks = "\n".join(f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\n"
                       f"Diagnostic-Code: smtp; {words}\n" for address, action, status, words in recipients)
    return (f"From: MAILER-DAEMON@relay.example\nTo: morning@news.example\nMessage-ID: {message_id}\n"
            "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            "--b\nContent-Type: text/plain\n\nThe mail system: 2 recipients failed; relay 10.4.1.120, "
            "postfix 3.7.11 (B=0.500)\n\n--b\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; relay.example\n\n{blocks}\n--b--\n").encode()


def test_each_recipient_of_a_report_gets_its_own_status(env, store, tmp_path):
    for address in ("gone@example.com", "full@example.org", "late@example.net", "bystander@example.com"):
        store.add_subscriber(address, "")
    path = tmp_path / "two.eml"
    path.write_bytes(_dsn([("gone@example.com", "failed", "5.1.1", "550 5.1.1 user unknown"),
                           ("full@example.org", "failed", "5.0.0", "552 Mailbox quota exceeded for this user"),
                           ("late@example.net", "delayed", "4.4.1", "connection timed out")]))

    result = run_cli("bounces", str(path), env=env)

    assert result.returncode == 0, result.stderr
    status = {a: store.get_subscriber(a).status for a in ("gone@example.com", "full@example.org",
                                                          "late@example.net", "bystander@example.com")}
    assert status == {"gone@example.com": "bounced", "full@example.org": "active", "late@example.net": "active",
                      "bystander@example.com": "active"}
    assert "soft 5.0.0: full@example.org counted (still active)" in result.stdout, result.stdout
    assert "delayed 4.4.1: late@example.net counted (still active)" in result.stdout
    assert "Read 1 report(s): 1 hard bounce(s), 1 soft bounce(s), 1 delay warning(s)" in result.stdout


def test_plus_addresses_are_tokens_only_at_the_bounce_address_and_in_a_tokens_shape(settings):
    tokens = Tokens(settings.secret_key)
    dsn = _dsn([("layla@example.com", "failed", "5.1.1", "550 5.1.1 user unknown")])

    def to(address: str, bounce_address: str) -> list:
        return parse_report(dsn.replace(b"To: morning@news.example", f"To: {address}".encode()), tokens,
                            bounce_address)

    # Without VERP a plus address is just an address: the report is read by the address it names.
    [plain] = to("news+m20261130-2n9c-hpfnro5n567cgmgb@news.example", "")
    assert not plain.forged_token and plain.addresses_believed and plain.kind is ReportKind.hard
    # Another mailbox's plus address, or the bounce mailbox's with something else after the +: not forged.
    for address in ("news+m20261130-2n9c-hpfnro5n567cgmgb@news.example", "bounces+weekly@news.example"):
        [other] = to(address, BOUNCES)
        assert not other.forged_token and other.token is None, address
    # The bounce address with a token's shape whose MAC fails: forged.
    [forged] = to("bounces+m20261130-2n9c-hpfnro5n567cgmgb@news.example", BOUNCES)
    assert forged.forged_token


def test_a_report_that_cannot_be_read_from_stdin_is_kept_and_the_pipe_exits_0(bounce_env, tmp_path):
    import subprocess
    import sys

    garbage = bytes(range(256)) * 4  # flufl's Yale detector raises on it
    keep = tmp_path / "kept"
    piped = subprocess.run([sys.executable, "-m", "newsletter", "bounces", "-", "--keep-dir", str(keep)],
                           input=garbage, env=bounce_env, capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert b"Traceback" not in piped.stderr
    assert b"stdin: unreadable: cannot be read (IndexError" in piped.stderr, piped.stderr
    assert [p.read_bytes() for p in keep.iterdir()] == [garbage]


def _maildir(folder: Path, reports: list[bytes]) -> Path:
    box = mailbox.Maildir(folder, create=True)
    for raw in reports:
        box.add(raw)
    box.close()
    return folder


def test_bounces_command_takes_hard_bounces_and_complainers_off_the_list_once(bounce_env, settings, store, tmp_path):
    tokens = Tokens(settings.secret_key)
    for address in ("layla@example.com", "omar@example.org", "claire@example.fr", "sami@example.net"):
        store.add_subscriber(address, "")
    ids = {a: store.get_subscriber(a).id for a in ("layla@example.com", "omar@example.org", "claire@example.fr")}
    today = dt.date.today()
    reports = [
        report("postfix_hard_5.1.1.eml", tokens, ids["layla@example.com"], "layla@example.com", today),
        report("arf_complaint.eml", tokens, ids["omar@example.org"], "omar@example.org", today),
        report("gmail_mailbox_full_5.2.2.eml", tokens, ids["claire@example.fr"], "claire@example.fr", today),
        report("out_of_office.eml", tokens, ids["claire@example.fr"], "claire@example.fr", today),
        # A DSN without a token, to the plain bounce address: with VERP on, anybody could have written it.
        report("exim_hard.eml", tokens, 999, "sami@example.net", today, return_path=BOUNCES),
        # A return path whose token does not verify: someone trying to bounce sami.
        report("postfix_hard_5.1.1.eml", tokens, 0, "sami@example.net", today,
               return_path=f"bounces+m{today:%Y%m%d}-1-aaaaaaaaaaaaaaaa@news.example"),
    ]
    folder = _maildir(tmp_path / "Maildir", reports)

    result = run_cli("bounces", str(folder), env=bounce_env)

    assert result.returncode == 1, "two reports could not be attributed: a person must look"
    assert "Traceback" not in result.stderr
    status = {a: store.get_subscriber(a).status for a in ("layla@example.com", "omar@example.org",
                                                          "claire@example.fr", "sami@example.net")}
    assert status == {"layla@example.com": "bounced", "omar@example.org": "unsubscribed",
                      "claire@example.fr": "active", "sami@example.net": "active"}
    assert "layla@example.com is now bounced" in result.stdout
    assert "it carries no return-path token (it names sami@example.net)" in result.stderr
    assert "does not verify" in result.stderr
    assert "auto-reply: ignored" in result.stdout
    assert ("Read 6 report(s): 1 hard bounce(s), 1 soft bounce(s), 1 complaint(s), 1 auto-reply(s) ignored"
            in result.stdout), result.stdout
    assert all(f.is_file() for f in (folder / "new").iterdir()), "reports are never deleted"
    assert len(list((folder / "new").iterdir())) == 6

    again = run_cli("bounces", str(folder), env=bounce_env)
    assert "3 already counted before" in again.stdout, again.stdout
    assert "Readers now bounced: 0, unsubscribed by a complaint: 0" in again.stdout
    assert store.feedback.counts_by_issue(today.isoformat()) == {"hard": 1, "soft": 1, "complaint": 1}


def test_soft_bounces_on_several_days_bounce_a_reader_and_delay_warnings_never_do(bounce_env, settings, store,
                                                                                  tmp_path):
    tokens = Tokens(settings.secret_key)
    store.add_subscriber("claire@example.fr", "")
    reader = store.get_subscriber("claire@example.fr").id
    today = dt.date.today()
    days = [today - dt.timedelta(days=n) for n in (2, 1, 0)]
    mbox_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(mbox_path)
    # A delay warning a day, three days running: mail that is only late bounces nobody.
    for day in days:
        box.add(report("postfix_delayed_4.4.1.eml", tokens, reader, "claire@example.fr", day)
                .replace(b"<20261130080211", f"<{day:%Y%m%d}-{len(box)}".encode()))
    # The same day's "mailbox full" twice (a retried report) counts once; two days make two.
    for day in [days[0], days[0], days[1]]:
        box.add(report("gmail_mailbox_full_5.2.2.eml", tokens, reader, "claire@example.fr", day)
                .replace(b"<6743a1b2", f"<{day:%Y%m%d}-{len(box)}".encode()))
    box.close()
    first = run_cli("bounces", str(mbox_path), env=bounce_env)
    assert first.returncode == 0, first.stderr
    assert "3 delay warning(s)" in first.stdout, first.stdout
    assert store.get_subscriber("claire@example.fr").status == "active", "2 days of soft bounces: not yet"
    last = tmp_path / "last.eml"
    last.write_bytes(report("gmail_mailbox_full_5.2.2.eml", tokens, reader, "claire@example.fr", days[2]))
    second = run_cli("bounces", str(last), env=bounce_env)
    assert second.returncode == 0 and "claire@example.fr is now bounced" in second.stdout, second.stdout


def test_without_verp_reports_are_attributed_by_the_address_they_name(env, settings, store, tmp_path):
    tokens = Tokens(settings.secret_key)
    store.add_subscriber("layla@example.com", "")
    for name, address in (("known.eml", "layla@example.com"), ("unknown.eml", "stranger@example.com")):
        (tmp_path / name).write_bytes(report("exim_hard.eml", tokens, 0, address, dt.date.today(),
                                             return_path="morning@news.example"))

    result = run_cli("bounces", str(tmp_path / "known.eml"), str(tmp_path / "unknown.eml"), env=env)

    assert result.returncode == 1
    assert store.get_subscriber("layla@example.com").status == "bounced"
    assert "no reader on the list has the address stranger@example.com" in result.stderr


def test_a_report_piped_from_postfix_is_handled_or_kept(bounce_env, settings, store, tmp_path):
    import subprocess
    import sys

    tokens = Tokens(settings.secret_key)
    store.add_subscriber("layla@example.com", "")
    reader = store.get_subscriber("layla@example.com").id
    keep = tmp_path / "kept"

    def pipe(raw: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "newsletter", "bounces", "-", "--keep-dir", str(keep)],
                              input=raw, env=bounce_env, capture_output=True, timeout=60)

    handled = pipe(report("exim_hard.eml", tokens, reader, "layla@example.com", dt.date.today()))
    assert handled.returncode == 0 and store.get_subscriber("layla@example.com").status == "bounced"
    unknown = b"From: someone@example.org\r\nSubject: hello\r\n\r\njust a letter\r\n"
    kept = pipe(unknown)
    assert kept.returncode == 0, "kept on disk counts as handled: Postfix would bounce the report otherwise"
    assert [p.read_bytes() for p in keep.iterdir()] == [unknown]


def test_bad_reports_are_named_in_one_line_and_change_nobody(bounce_env, settings, store, tmp_path):
    tokens = Tokens(settings.secret_key)
    store.add_subscriber("layla@example.com", "")
    reader = store.get_subscriber("layla@example.com").id
    whole = report("postfix_hard_5.1.1.eml", tokens, reader, "layla@example.com", dt.date.today())
    truncated = tmp_path / "truncated.eml"
    truncated.write_bytes(whole[:whole.index(b"Content-Description: Delivery report") - 300])
    huge = tmp_path / "huge.eml"
    huge.write_bytes(whole + b"x" * (10 * 1024 * 1024))
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    damaged = tmp_path / "damaged.eml"
    damaged.write_bytes(whole.replace(b"bounces+m2", b"bounces+m3"))  # another date: the MAC fails

    result = run_cli("bounces", str(truncated), str(huge), str(empty), str(damaged), str(tmp_path / "missing"),
                     env=bounce_env)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    for path, words in [(truncated, "not attributed"), (huge, "larger than 5 MB"), (empty, "empty"),
                        (damaged, "does not verify"), (tmp_path / "missing", "no such file")]:
        assert any(line.startswith(str(path)) and words in line for line in lines), (path, lines)
    assert store.get_subscriber("layla@example.com").status == "active"


def test_a_reader_who_unsubscribed_stays_unsubscribed_whatever_bounces_later(store):
    store.add_subscriber("gone@example.com", "", Status.unsubscribed)
    reader = store.get_subscriber("gone@example.com").id
    recorded = store.feedback.record(Feedback(reader, FeedbackKind.hard, "<r1@x>", "2026-11-29", "5.1.1"), 3, 14)
    assert recorded.new and not recorded.changed and recorded.status == "unsubscribed"
    assert store.feedback.counts_by_issue("2026-11-29") == {"hard": 1}


def test_status_shows_rates_warns_past_a_tenth_of_a_percent_and_names_a_domain_that_blocks_us(
        bounce_env, settings, store, smtp_server, tmp_path):
    tokens = Tokens(settings.secret_key)
    for n in range(4):
        store.add_subscriber(f"reader{n}@example.com", "")
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=bounce_env).returncode == 0
    ids = [store.get_subscriber(f"reader{n}@example.com").id for n in range(4)]
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "complaint.eml").write_bytes(report("arf_complaint.eml", tokens, ids[0], "reader0@example.com",
                                                  SAMPLE_DATE))
    # A burst of policy blocks from one provider: our mail is refused, not their mailboxes.
    for n, name in ((1, "gmail_spam_block_5.7.1.eml"), (2, "qmail_unauthenticated_5.7.26.eml"),
                    (3, "gmail_spam_block_5.7.1.eml")):
        raw = report(name, tokens, ids[n], f"reader{n}@example.com", SAMPLE_DATE)
        (folder / f"block{n}.eml").write_bytes(raw.replace(b".0571.GMR", f".{n}.GMR".encode()))
    bounces = run_cli("bounces", str(folder), env=bounce_env)
    assert bounces.returncode == 0, bounces.stderr
    assert "3 policy block(s)" in bounces.stdout, bounces.stdout
    assert "warning: example.com refused our mail to 3 reader(s) by policy" in bounces.stderr
    assert [store.get_subscriber(f"reader{n}@example.com").status for n in range(4)] == [
        "unsubscribed", "active", "active", "active"]

    result = run_cli("status", "--date", SAMPLE_DATE.isoformat(), env=bounce_env)

    assert ("hard bounces 0 (0.00%), soft bounces 0 (0.00%), policy blocks 3 (75.00%), complaints 1 (25.00%)"
            in result.stdout), result.stdout
    assert "warning: 25.00% of this issue's readers marked it as spam" in result.stderr
    assert "warning: example.com refused our mail to 3 reader(s) by policy" in result.stderr


@pytest.fixture
def dovecot():
    from .dovecot import DovecotServer

    server = DovecotServer({"bounces": "imap-test-password"})
    yield server
    server.stop()


def _imap_env(env, dovecot, password="imap-test-password", port=None):
    return {**env, "NEWSLETTER_BOUNCE_ADDRESS": BOUNCES, "NEWSLETTER_IMAP_HOST": "127.0.0.1",
            "NEWSLETTER_IMAP_PORT": str(port or dovecot.port), "NEWSLETTER_IMAP_TLS": "none",
            "NEWSLETTER_IMAP_USERNAME": "bounces", "NEWSLETTER_IMAP_PASSWORD": password}


def test_reports_are_read_from_an_imap_mailbox_and_filed(env, settings, store, dovecot):
    tokens = Tokens(settings.secret_key)
    for address in ("layla@example.com", "omar@example.org"):
        store.add_subscriber(address, "")
    ids = {a: store.get_subscriber(a).id for a in ("layla@example.com", "omar@example.org")}
    today = dt.date.today()
    dovecot.deliver("bounces", report("exchange_online_5.1.10.eml", tokens, ids["layla@example.com"],
                                      "layla@example.com", today))
    dovecot.deliver("bounces", report("arf_complaint.eml", tokens, ids["omar@example.org"], "omar@example.org", today))
    dovecot.deliver("bounces", report("yahoo_hard.eml", tokens, 0, "stranger@example.com", today, return_path=BOUNCES))
    # A report no detector can read sits between good ones: it is filed for a person, the rest go on.
    dovecot.deliver("bounces", bytes(range(256)) * 4)  # flufl's Yale detector raises on it
    dovecot.deliver("bounces", report("postfix_hard_5.1.1.eml", tokens, ids["layla@example.com"], "layla@example.com",
                                      today))
    imap_env = _imap_env(env, dovecot)

    result = run_cli("bounces", "--imap", env=imap_env)

    assert result.returncode == 1, result.stdout + result.stderr  # two reports need a person
    assert "Traceback" not in result.stderr
    assert store.get_subscriber("layla@example.com").status == "bounced"
    assert store.get_subscriber("omar@example.org").status == "unsubscribed"
    assert "stranger@example.com" in result.stderr and "uid" in result.stderr
    assert "unreadable: cannot be read" in result.stderr, result.stderr
    assert "Read 5 report(s)" in result.stdout
    assert dovecot.folder_sizes("bounces") == {"INBOX": 0, "Processed": 3, "Unattributed": 2}

    again = run_cli("bounces", "--imap", env=imap_env)
    assert again.returncode == 0 and "Read 0 report(s)" in again.stdout, again.stdout + again.stderr


def test_an_imap_server_that_refuses_or_is_not_there_is_one_line_and_nothing_moves(env, settings, store, dovecot):
    dovecot.deliver("bounces", b"From: someone@example.org\r\nSubject: hi\r\n\r\nhello\r\n")

    wrong = run_cli("bounces", "--imap", env=_imap_env(env, dovecot, password="not-the-password"))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    down = run_cli("bounces", "--imap", env=_imap_env(env, dovecot, port=closed_port))

    assert wrong.returncode == 2 and "login refused" in wrong.stderr and "NEWSLETTER_IMAP_PASSWORD" in wrong.stderr
    assert down.returncode == 75 and "connection refused" in down.stderr
    for result in (wrong, down):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert dovecot.folder_sizes("bounces") == {"INBOX": 1}


def through_a_postfix_relay(env, smtp_server, dovecot, command: str,
                            expected_dsns: int) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Run `newsletter <command>` through a real Postfix relaying to `smtp_server`, and wait until Postfix's
    DSNs of what the server refused reach the bounce mailbox Dovecot serves; the env to read them with,
    and the command's run."""
    import pwd

    from .postfix import PostfixRelay

    dovecot.maildir("bounces").close()
    nobody = pwd.getpwnam("nobody")
    relay = PostfixRelay(smtp_server.port, "news.example", {BOUNCES: "bounces/Maildir/"}, dovecot.dir / "mail",
                         nobody.pw_uid, nobody.pw_gid)
    try:
        relay_env = {**_imap_env(env, dovecot), "NEWSLETTER_SMTP_PORT": str(relay.port)}
        arguments = [command, "--date", SAMPLE_DATE.isoformat()] if command == "send" else [command]
        sent = run_cli(*arguments, env=relay_env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        deadline = time.monotonic() + 60
        while dovecot.folder_sizes("bounces").get("INBOX", 0) < expected_dsns:
            assert time.monotonic() < deadline, f"no DSNs from Postfix: {relay.log()}"
            time.sleep(0.2)
    finally:
        relay.stop()
    return relay_env, sent


def test_refusals_behind_a_real_postfix_relay_come_back_as_dsns_and_bounce_their_readers(env, store, smtp_server,
                                                                                           dovecot):
    """newsletter send → Postfix (accepts all) → the sink refuses two → Postfix's own DSNs to the VERP
    addresses → its virtual delivery to the Maildir Dovecot serves → `newsletter bounces --imap`."""
    readers = ["layla@example.com", "gone@example.org", "omar@example.org", "left@example.net"]
    for address in readers:
        store.add_subscriber(address, "")
    for address in ("gone@example.org", "left@example.net"):
        smtp_server.handler.refuse[address] = f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
    relay_env, sent = through_a_postfix_relay(env, smtp_server, dovecot, "send", expected_dsns=2)
    assert "Sent 4" in sent.stdout, sent.stdout + sent.stderr

    result = run_cli("bounces", "--imap", env=relay_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert {a: store.get_subscriber(a).status for a in readers} == {
        "layla@example.com": "active", "gone@example.org": "bounced",
        "omar@example.org": "active", "left@example.net": "bounced"}
    assert result.stdout.count("hard 5.1.1") == 2
    assert dovecot.folder_sizes("bounces") == {"INBOX": 0, "Processed": 2, "Unattributed": 0}
    assert store.feedback.counts_by_issue(SAMPLE_DATE.isoformat()) == {"hard": 2}


def test_a_confirmation_refused_behind_a_real_postfix_relay_bounces_its_address(env, store, smtp_server, dovecot):
    """A confirmation is VERP'd like the issue: `newsletter confirmations` → Postfix → the sink refuses →
    Postfix's DSN to bounces+m-<reader>-<mac>@ → Dovecot → `newsletter bounces --imap`: the pending
    address is bounced, with no issue date, and the good one is untouched."""
    from sqlalchemy import select

    from newsletter.store.schema import feedback

    for address in ("new@example.com", "typo@example.org"):
        store.confirmation_failed(store.request_subscription(address).id)  # waiting for `newsletter confirmations`
    smtp_server.handler.refuse["typo@example.org"] = "550 5.1.1 <typo@example.org>: Recipient address rejected"
    relay_env, _ = through_a_postfix_relay(env, smtp_server, dovecot, "confirmations", expected_dsns=1)

    result = run_cli("bounces", "--imap", env=relay_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert store.get_subscriber("typo@example.org").status == "bounced"
    assert store.get_subscriber("new@example.com").status == "pending"
    assert "hard 5.1.1" in result.stdout
    assert [m.rcpt_to for m in smtp_server.handler.messages] == ["new@example.com"]
    with store.engine.connect() as conn:
        assert conn.execute(select(feedback.c.issue_date, feedback.c.kind)).all() == [(None, "hard")]


def test_a_piped_report_is_only_queued_in_the_spool_and_cron_applies_it(bounce_env, settings, store, tmp_path):
    import subprocess
    import sys

    tokens = Tokens(settings.secret_key)
    store.add_subscriber("layla@example.com", "")
    reader = store.get_subscriber("layla@example.com").id
    spool, keep = tmp_path / "incoming", tmp_path / "kept"
    hard = report("exim_hard.eml", tokens, reader, "layla@example.com", dt.date.today())
    garbage = bytes(range(256)) * 4

    def pipe(raw: bytes, spool_dir: Path = spool) -> subprocess.CompletedProcess:
        # What Postfix runs: no settings, no database, only the spool (the user `nobody` needs nothing else).
        return subprocess.run([sys.executable, "-m", "newsletter", "bounces", "-", "--spool", str(spool_dir)],
                              input=raw, env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=60)

    for raw in (hard, garbage, hard):
        queued = pipe(raw)
        assert queued.returncode == 0 and b"queued as" in queued.stderr, queued.stderr
    assert len(list((spool / "new").iterdir())) == 3
    assert store.get_subscriber("layla@example.com").status == "active", "queued, not applied yet"
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere: the MTA's user does not
        assert pipe(hard, read_only / "spool").returncode == 75, "cannot queue: the MTA must try again later"

    drained = run_cli("bounces", "--spool", str(spool), "--keep-dir", str(keep), env=bounce_env)

    assert store.get_subscriber("layla@example.com").status == "bounced"
    assert drained.returncode == 1, "the unreadable one needs a person"
    assert "Read 3 report(s): 2 hard bounce(s); 1 already counted before" in drained.stdout, drained.stdout
    assert [p.read_bytes() for p in keep.iterdir()] == [garbage]
    assert list((spool / "new").iterdir()) == [], "every report left the spool"
    again = run_cli("bounces", "--spool", str(spool), "--keep-dir", str(keep), env=bounce_env)
    assert again.returncode == 0 and "Read 0 report(s)" in again.stdout
