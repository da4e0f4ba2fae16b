"""NEWSLETTER_APPROVAL=required: nothing goes out until an editor approves, and then exactly what they approved."""

from __future__ import annotations

import hashlib

import pytest

from newsletter.issue.render import UNSUBSCRIBE_SLOT, with_outlet_links
from newsletter.tokens import Tokens

from .conftest import SAMPLE_DATE, run_cli

DAY = SAMPLE_DATE.isoformat()


@pytest.fixture
def approval_env(env):
    return {**env, "NEWSLETTER_APPROVAL": "required", "NEWSLETTER_TRACKING": "off"}


def _readers(store, count: int = 3) -> None:
    for n in range(count):
        store.add_subscriber(f"reader{n}@example.com", "")


def test_an_unapproved_issue_is_not_sent_and_status_says_it_waits(approval_env, store, smtp_server):
    _readers(store)

    send = run_cli("send", "--date", DAY, env=approval_env)
    status = run_cli("status", "--date", DAY, env=approval_env)

    assert send.returncode == 4, send.stderr
    assert send.stderr.strip().splitlines() == [
        f"error: the issue of {DAY} is not approved yet: approve it in `newsletter preview` or with "
        f"`newsletter approve --date {DAY}`"]
    assert smtp_server.handler.messages == [] and store.get_issue(DAY) is None, "nothing sent, nothing frozen"
    assert status.returncode == 4 and "waiting for an editor's approval" in status.stderr


def test_the_approved_issue_is_sent_byte_for_byte_as_approved(approval_env, store, smtp_server, settings):
    _readers(store)

    approved = run_cli("approve", "--date", DAY, "--by", "ليلى (مناوبة الليل)", env=approval_env)
    send = run_cli("send", "--date", DAY, env=approval_env)

    assert approved.returncode == 0 and "Approved the issue of 2017-05-09 as ليلى (مناوبة الليل)" in approved.stdout
    assert send.returncode == 0, send.stderr
    frozen, approval = store.get_issue(DAY), store.approvals.of(DAY)
    assert hashlib.sha256(frozen.html.encode("utf-8")).hexdigest() == approval.html_sha256
    tokens = Tokens(settings.secret_key)
    for received in smtp_server.handler.messages:
        message = received.parsed()
        assert message["Subject"] == frozen.subject
        reader = store.get_subscriber(received.rcpt_to).id
        html = message.get_body(("html",)).get_content().replace(tokens.unsubscribe_token(reader), UNSUBSCRIBE_SLOT)
        assert html == with_outlet_links(frozen.html, frozen.stories, escape=True), "what was approved, no other"
    status = run_cli("status", "--date", DAY, env=approval_env)
    assert "approved by ليلى (مناوبة الليل)" in status.stdout


def test_changing_the_editorial_file_after_approval_withdraws_it(approval_env, store, smtp_server, settings):
    _readers(store)
    assert run_cli("approve", "--date", DAY, "--by", "layla", env=approval_env).returncode == 0
    first_lead = store.get_issue(DAY).stories[0]["url"]
    editorial = settings.editorial_dir / f"{DAY}.toml"
    editorial.parent.mkdir(parents=True, exist_ok=True)
    editorial.write_text(f'drop = ["{first_lead}"]\n', encoding="utf-8")

    refused = run_cli("send", "--date", DAY, env=approval_env)

    assert refused.returncode == 4
    assert f"the editorial file of {DAY} changed after layla approved the issue: approve it again" in refused.stderr
    assert smtp_server.handler.messages == [] and store.approvals.of(DAY) is None
    assert store.get_issue(DAY) is None, "unfrozen: the next approval builds the issue from the changed file"
    assert run_cli("approve", "--date", DAY, env=approval_env).returncode == 0
    assert run_cli("send", "--date", DAY, env=approval_env).returncode == 0
    assert store.get_issue(DAY).stories[0]["url"] != first_lead, "sent as changed and approved again"


def test_past_the_deadline_the_unapproved_issue_goes_and_the_log_says_so(approval_env, store, smtp_server):
    _readers(store, 2)
    # The sample day is long past: any deadline on it has passed.
    send = run_cli("send", "--date", DAY, env={**approval_env, "NEWSLETTER_APPROVAL_DEADLINE": "06:30"})

    assert send.returncode == 0, send.stderr
    assert "not approved yet" in send.stderr and "sending anyway: it is past NEWSLETTER_APPROVAL_DEADLINE=06:30" \
        in send.stderr
    assert len(smtp_server.handler.messages) == 2


def test_without_approval_required_send_works_as_before(env, store, smtp_server):
    _readers(store, 1)
    assert run_cli("send", "--date", DAY, env=env).returncode == 0
    assert store.approvals.of(DAY) is None
