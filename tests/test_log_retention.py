"""A delivery log that stays small: old issues fold into totals, `status` still answers, nothing is resent."""

from __future__ import annotations

from sqlalchemy import func, select

from newsletter.store.deliverylog import OTHER_REPLIES
from newsletter.store.schema import deliveries

from .conftest import SAMPLE_DATE, run_cli

READERS = ["a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"]


def delivery_rows(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(deliveries)).scalar_one()


def test_old_issues_fold_into_totals_that_status_still_reports(env, store, smtp_server):
    store.add_subscribers([(address, "") for address in READERS])
    smtp_server.handler.refuse["d@example.com"] = "550 5.1.1 No such user"
    smtp_server.handler.refuse["e@example.com"] = "451 4.3.0 Mailbox busy"
    once = {**env, "NEWSLETTER_SEND_ATTEMPTS": "1"}
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=once).returncode == 75
    before = run_cli("status", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert "delivered 3, pending 0, retrying 1, refused during the send 1" in before.stdout
    assert delivery_rows(store) == 5

    kept = run_cli("db", "compact", env={**env, "NEWSLETTER_LOG_RETENTION_DAYS": "5000"})
    assert kept.returncode == 0 and "Folded 0 issue(s)" in kept.stdout, "within the retention period: kept"

    folded = run_cli("db", "compact", env={**env, "NEWSLETTER_LOG_RETENTION_DAYS": "30"})
    assert folded.returncode == 0, folded.stderr
    assert "Folded 1 issue(s)" in folded.stdout and "(5 delivery row(s) removed)" in folded.stdout
    assert delivery_rows(store) == 0

    after = run_cli("status", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert after.returncode == 0, "a folded issue is final"
    assert "folded into totals" in after.stdout
    assert "delivered 3, pending 0, retrying 1, refused during the send 1" in after.stdout
    assert "550 5.1.1 No such user" in after.stdout and "451 4.3.0 Mailbox busy" in after.stdout

    again = run_cli("db", "compact", env={**env, "NEWSLETTER_LOG_RETENTION_DAYS": "30"})
    assert "Folded 0 issue(s)" in again.stdout

    smtp_server.handler.refuse.clear()
    received = len(smtp_server.handler.messages)
    resend = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert resend.returncode == 1 and "not sent again" in resend.stderr
    assert len(smtp_server.handler.messages) == received, "without its log, an old issue is never resent"


def test_folding_keeps_every_count_exact_when_replies_are_many(env, store, smtp_server):
    store.add_subscribers([(address, "") for address in READERS])
    for n, address in enumerate(READERS[:4]):
        smtp_server.handler.refuse[address] = f"550 5.1.1 <{address}>: unknown user {n}"
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0
    issue = store.get_issue(SAMPLE_DATE.isoformat())

    assert store.log.fold(issue.id, keep_replies=2) == 5

    assert store.log.delivery_counts(issue.id) == {"sent": 1, "refused": 4}
    replies = {reply: n for _, reply, n in store.log.common_replies(issue.id)}
    assert replies[OTHER_REPLIES] == 2 and sum(replies.values()) == 4
