"""The morning send, end to end, against a real in-process SMTP server and a real SQLite file."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from newsletter.config import EventLoop, Settings
from newsletter.edition import run_on_event_loop, send_edition
from newsletter.errors import ConfigError
from newsletter.issue.render import UNSUBSCRIBE_SLOT
from newsletter.store.database import Outcome, Status
from newsletter.tokens import Tokens

from .conftest import PROJECT, SAMPLE_DATE, run_cli

READERS = [
    ("layla@example.com", "ليلى حداد"),
    ("omar+news@example.org", "عمر الخطيب"),
    ("claire@example.fr", "Claire Martin"),
]


def add_readers(store, readers=READERS, status=Status.active):
    for address, name in readers:
        store.add_subscriber(address, name, status)


def test_each_active_subscriber_gets_one_complete_arabic_message(settings, store, smtp_server):
    add_readers(store)
    store.add_subscriber("pending@example.com", "", Status.pending)
    store.add_subscriber("gone@example.com", "", Status.unsubscribed)

    result = send_edition(settings, store, SAMPLE_DATE)

    assert result.report.sent == 3 and result.report.complete
    issues = [m for m in smtp_server.handler.messages if m.parsed()["List-Id"]]
    assert sorted(m.rcpt_to for m in issues) == sorted(a for a, _ in READERS)
    others = [(m.rcpt_to, m.parsed()["Subject"]) for m in smtp_server.handler.messages if m not in issues]
    assert others == [("pending@example.com", "أكّد اشتراكك في الرسالة الإخبارية")], \
        "a pending reader gets the confirmation that never went out, not the issue"
    tokens = Tokens(settings.secret_key)
    seen_tokens = set()
    for received in issues:
        message = received.parsed()
        assert message.get_content_type() == "multipart/alternative"
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        assert text.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
        assert message["Subject"] == "التحالف الدولي يجتمع في كوبنهاغن…", "the lead, cut after a phrase"
        assert message["From"].addresses[0].display_name == "الرسالة الإخبارية"
        assert message["From"].addresses[0].addr_spec == "morning@news.example"
        assert message["To"].addresses[0].addr_spec == received.rcpt_to
        assert message["Date"].datetime is not None
        assert message["Message-ID"].endswith("@news.example>")
        assert "morning.news.example" in message["List-Id"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe_url = message["List-Unsubscribe"].strip("<>")
        assert unsubscribe_url.startswith("https://news.example/unsubscribe/")
        token = urlparse(unsubscribe_url).path.rsplit("/", 1)[1]
        subscriber = store.get_subscriber(received.rcpt_to)
        assert tokens.subscriber_from_unsubscribe(token) == subscriber.id
        seen_tokens.add(token)
        # The footer link and the plain-text part carry the same personal URL.
        assert f'href="{unsubscribe_url}"' in html.get_content()
        assert unsubscribe_url in text.get_content()
        assert UNSUBSCRIBE_SLOT not in message.as_string()
        assert "كوبنهاغن" in text.get_content() and "كوبنهاغن" in html.get_content()
    assert len(seen_tokens) == 3
    assert tokens.subscriber_from_unsubscribe(seen_tokens.pop() + "x") is None


def test_to_header_carries_the_readers_arabic_name(settings, store, smtp_server):
    add_readers(store, READERS[:1])
    send_edition(settings, store, SAMPLE_DATE)
    (received,) = smtp_server.handler.messages
    assert received.parsed()["To"].addresses[0].display_name == "ليلى حداد"
    assert b"\xd9" not in received.raw.split(b"\r\n\r\n", 1)[0], "headers must be RFC 2047 encoded ASCII"


def test_a_second_send_the_same_day_sends_nothing(env, store, smtp_server):
    add_readers(store)
    first = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert first.returncode == 0, first.stderr
    assert "Sent 3" in first.stdout

    second = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert second.returncode == 0, second.stderr
    assert "Sent 0" in second.stdout and "skipped 3" in second.stdout
    assert len(smtp_server.handler.messages) == 3


def test_a_rerun_counts_skipped_readers_among_the_active_and_who_left_apart(env, store, smtp_server):
    add_readers(store)
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    store.unsubscribe(store.get_subscriber(READERS[0][0]).id)

    rerun = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert rerun.returncode == 0, rerun.stderr
    assert "skipped 2 (already delivered) of 2 active" in rerun.stdout, "never more skipped than active"
    assert "1 who had it have left since" in rerun.stdout


def test_a_reader_added_after_the_send_gets_the_same_issue_on_the_next_run(settings, store, smtp_server):
    add_readers(store, READERS[:2])
    send_edition(settings, store, SAMPLE_DATE)
    store.add_subscriber("late@example.com", "")

    send_edition(settings, store, SAMPLE_DATE)

    subjects = {m.parsed()["Subject"] for m in smtp_server.handler.messages}
    assert smtp_server.handler.recipients().count("late@example.com") == 1
    assert len(subjects) == 1, "the issue is frozen: every reader of one day gets the same one"


def test_a_story_sent_yesterday_is_not_sent_again(settings, store, smtp_server):
    add_readers(store, READERS[:1])
    first = send_edition(settings, store, SAMPLE_DATE).issue
    later_day = SAMPLE_DATE.replace(day=SAMPLE_DATE.day + 1)
    # Same feeds, next day with a 48-hour window: yesterday's stories are still fresh.
    settings.window_hours = 48
    try:
        second = send_edition(settings, store, later_day).issue
    finally:
        settings.window_hours = 24
    assert not {s["url"] for s in first.stories} & {s["url"] for s in second.stories}
    # nor another outlet's report of yesterday's events: yesterday's issue had them all
    assert not any("كوبنهاغن" in s["title"] or "كوريا الجنوبية" in s["title"] for s in second.stories)


def test_permanent_refusal_is_recorded_and_not_retried(settings, store, smtp_server):
    add_readers(store)
    smtp_server.handler.refuse["claire@example.fr"] = "550 5.1.1 No such user"

    report = send_edition(settings, store, SAMPLE_DATE).report

    assert (report.sent, report.refused, report.failed) == (2, 1, 0)
    assert report.complete, "a permanent refusal does not leave the job incomplete"
    again = send_edition(settings, store, SAMPLE_DATE).report
    assert again.attempted == 0
    assert store.get_subscriber("claire@example.fr").status == Status.bounced.value


def test_a_transient_failure_is_retried_in_the_same_run(settings, store, smtp_server):
    add_readers(store)
    smtp_server.handler.refuse_once["omar+news@example.org"] = "451 4.3.0 Try again later"

    report = send_edition(settings, store, SAMPLE_DATE).report

    assert (report.sent, report.failed, report.retried) == (3, 0, 1)
    assert sorted(smtp_server.handler.recipients()) == sorted(a for a, _ in READERS)


def test_still_failing_after_every_attempt_exits_75_and_the_next_run_delivers(env, store, smtp_server):
    add_readers(store)
    smtp_server.handler.refuse["omar+news@example.org"] = "451 4.3.0 Mailbox busy"

    first = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert first.returncode == 75
    assert "failed 1" in first.stdout
    assert "Traceback" not in first.stderr
    del smtp_server.handler.refuse["omar+news@example.org"]
    second = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(smtp_server.handler.recipients()) == sorted(a for a, _ in READERS)


def test_outcomes_are_in_the_delivery_log(settings, store, smtp_server):
    add_readers(store)
    smtp_server.handler.refuse["claire@example.fr"] = "550 5.1.1 No such user"
    issue = send_edition(settings, store, SAMPLE_DATE).issue
    assert store.log.delivery_counts(issue.id) == {Outcome.sent.value: 2, Outcome.refused.value: 1}


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_two_sends_at_once_never_send_anyone_two_copies(env, store, smtp_server, event_loop, store_kind, request):
    readers = [(f"reader{i}@example.com", f"قارئ {i}") for i in range(400)]
    store.add_subscribers(readers)
    env = {**env, "NEWSLETTER_BATCH_SIZE": "50", "NEWSLETTER_EVENT_LOOP": event_loop}
    server_log = request.getfixturevalue("postgres").root / "server.log" if store_kind == "postgresql" else None
    logged_before = server_log.stat().st_size if server_log else 0
    command = [sys.executable, "-m", "newsletter", "send", "--date", SAMPLE_DATE.isoformat()]
    runs = [subprocess.Popen(command, env=env, cwd=PROJECT / "tests", stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    received = smtp_server.handler.recipients()
    assert len(received) == len(set(received)) == 400
    if server_log:
        with server_log.open("rb") as log:
            log.seek(logged_before)
            errors = [line for line in log.read().decode(errors="replace").splitlines() if "ERROR" in line]
        assert errors == [], "two senders on a new day are normal operation: no ERROR for whoever alerts on it"


def test_asking_for_uvloop_where_it_is_not_installed_names_the_setting(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a machine without it: import fails
    settings = settings.model_copy(update={"event_loop": EventLoop.uvloop})
    work = asyncio.sleep(0)
    with pytest.raises(ConfigError, match="NEWSLETTER_EVENT_LOOP=uvloop: uvloop is not installed"):
        run_on_event_loop(work, settings)
    work.close()
    assert run_on_event_loop(asyncio.sleep(0, "sent"), settings.model_copy(update={"event_loop": EventLoop.auto})) \
        == "sent", "auto falls back to Python's own loop"


def test_unreachable_smtp_server_is_one_line_and_exit_75(env, store):
    add_readers(store)
    from .ports import free_port

    env = {**env, "NEWSLETTER_SMTP_PORT": str(free_port())}
    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert result.returncode == 75
    assert "cannot connect to SMTP server" in result.stderr
    assert "Traceback" not in result.stderr
    again = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env={**env, "NEWSLETTER_SMTP_PORT": "1"})
    assert again.returncode == 75, "nobody was lost: the next run tries them all again"


@pytest.mark.parametrize(
    ("name", "value"),
    [("SMTP_TLS", "sometimes"), ("SMTP_PORT", "abc"), ("TIMEZONE", "Mars/Olympus"), ("FEEDS", "[not json"),
     ("EVENT_LOOP", "gevent"), ("FEED_OUTLETS", "{not json"), ("RETRY_BASE_SECONDS", "inf"),
     ("DOMAIN_RATE_LIMITS", "example.com=nan"),
     # A sender the relay would refuse for every reader, or that crashed the message's headers.
     ("FROM_ADDRESS", "a@"), ("FROM_ADDRESS", "@news.example"), ("FROM_ADDRESS", "a@b@news.example"),
     ("FROM_ADDRESS", "news letter@news.example"),
     # Links that would be dead in every reader's email.
     ("BASE_URL", "https://"), ("BASE_URL", "https:///path"), ("BASE_URL", "https://news.example:99999"),
     ("BASE_URL", "https://news.example/sub path")],
)
def test_a_wrong_setting_stops_with_one_line_naming_it(env, name, value):
    result = run_cli("send", env={**env, f"NEWSLETTER_{name}": value})
    assert result.returncode == 2
    assert f"NEWSLETTER_{name}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_broken_feed_is_reported_and_the_others_still_count(env, store, smtp_server, tmp_path):
    add_readers(store, READERS[:1])
    broken = tmp_path / "broken.xml"
    broken.write_text("<rss><channel><item><title>نص", encoding="utf-8")
    feeds = sorted(str(p) for p in (PROJECT / "newsletter" / "sample_feeds").glob("*.xml"))
    env = {**env, "NEWSLETTER_FEEDS": '["%s", "%s"]' % (broken, '", "'.join(feeds))}

    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert result.returncode == 0, result.stderr
    assert f"feed skipped: {broken}" in result.stderr
    assert len(smtp_server.handler.messages) == 1


def test_a_day_without_stories_sends_nothing_and_says_why(env, store, smtp_server):
    add_readers(store, READERS[:1])
    result = run_cli("send", "--date", "2017-06-30", env=env)
    assert result.returncode == 3
    assert "no international story" in result.stderr
    assert smtp_server.handler.messages == []


def oversized_templates(tmp_path):
    """A copy of templates/ whose issue carries ~110 KB of extra text: over Gmail's clipping limit."""
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT / "templates", templates)
    issue = templates / "issue.mjml.j2"
    filler = "<mj-section><mj-column><mj-text>" + "حشو " * 22_000 + "</mj-text></mj-column></mj-section>"
    issue.write_text(issue.read_text(encoding="utf-8").replace("  </mj-body>", filler + "\n  </mj-body>"),
                     encoding="utf-8")
    return templates


@pytest.mark.parametrize("test_send", [False, True])
def test_an_issue_gmail_would_clip_is_not_sent(env, store, smtp_server, tmp_path, test_send):
    add_readers(store, READERS[:1])
    env = {**env, "NEWSLETTER_TEMPLATES_DIR": str(oversized_templates(tmp_path))}
    args = ["--test", "editor@example.com"] if test_send else []

    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), *args, env=env)

    assert result.returncode == 65, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "KB" in line and "over Gmail's 102 KB clipping limit" in line
    assert smtp_server.handler.messages == []
    assert store.get_issue(SAMPLE_DATE.isoformat()) is None, "not frozen: the editor can still cut it down"


def test_send_reports_the_size_of_the_issue(env, store, smtp_server):
    add_readers(store, READERS[:1])
    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert result.returncode == 0, result.stderr
    assert "KB of HTML, Gmail clips above 102 KB" in result.stdout


@pytest.mark.parametrize("url", ["http://news.example", "http://203.0.113.7:8000", "http://[2001:db8::1]"])
def test_a_public_base_url_must_be_https(env, url):
    result = run_cli("send", env={**env, "NEWSLETTER_BASE_URL": url})

    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "NEWSLETTER_BASE_URL" in line and "https://" in line


@pytest.mark.parametrize("url", ["http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000/"])
def test_a_local_base_url_may_stay_http(url):
    assert Settings(_env_file=None, base_url=url).base_url == url.rstrip("/")
