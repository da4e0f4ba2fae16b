"""What delivery reports said about readers after the send, and what that does to them.

Policy, not detection (that is mail/bounces.py): a hard bounce makes the reader `bounced` at
once; soft bounces do after `soft_limit` of them on different days within `soft_days`; a
complaint unsubscribes. A policy block (5.7.x: spam filter, authentication) and a delay warning are
kept and counted but change nobody: a block says the receiver refused *us*, so one DKIM or SPF
mistake must not take a whole provider's readers off the list. A reader who unsubscribed stays unsubscribed whatever comes later.
Each report counts once per reader, however often it is read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, select, update

from .list_changes import Change, count_change
from .schema import FeedbackKind, Status, feedback, insert_ignoring_duplicates, subscribers, utcnow


@dataclass(frozen=True)
class Feedback:
    """One report's word on one reader."""

    subscriber_id: int
    kind: FeedbackKind
    report_id: str
    issue_date: str | None = None  # YYYY-MM-DD
    status: str = ""  # enhanced status code, 5.1.1
    reason: str = ""


@dataclass(frozen=True)
class Recorded:
    """What recording a report did: whether it was new, and the reader's status after it."""

    new: bool
    status: str | None  # None: the reader is no longer on the list
    changed: bool = False


REASON_KEPT = 500


def blocked_warning(domain: str, readers: int) -> str:
    """The warning a person running `bounces` or `status` must not miss: a provider is refusing us."""
    return (f"warning: {domain} refused our mail to {readers} reader(s) by policy (5.7.x: spam filter, SPF, DKIM "
            "or DMARC); they stay on the list. Check `newsletter dkim` against DNS and the relay's reputation.")


class FeedbackLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, item: Feedback, soft_limit: int, soft_days: int) -> Recorded:
        """Keep the report and apply its consequence to the reader, in one transaction."""
        now = utcnow()
        with self.engine.begin() as conn:
            inserted = conn.execute(
                insert_ignoring_duplicates(self.engine, feedback).returning(feedback.c.id),
                {"subscriber_id": item.subscriber_id, "issue_date": item.issue_date,
                 "day": item.issue_date or now.date().isoformat(), "kind": item.kind.value,
                 "status": item.status[:16], "reason": item.reason[:REASON_KEPT],
                 "report_id": item.report_id[:250], "received_at": now},
            ).first()
            status = conn.execute(select(subscribers.c.status)
                                  .where(subscribers.c.id == item.subscriber_id)).scalar_one_or_none()
            if inserted is None or status is None:
                return Recorded(new=inserted is not None, status=status)
            target = self._consequence(conn, item, soft_limit, soft_days, now)
            if target is None or status in (Status.unsubscribed.value, target.value):
                return Recorded(new=True, status=status)
            values = {"status": target.value, "updated_at": now}
            if target is Status.unsubscribed:
                values["unsubscribed_at"] = now
            # Compare-and-set: of two reports applied at once, one only counts the reader as leaving.
            moved = conn.execute(update(subscribers).where(subscribers.c.id == item.subscriber_id,
                                                           subscribers.c.status == status).values(**values)).rowcount
            if moved and status == Status.active.value:  # the list's growth: readers leaving, not pending addresses
                count_change(conn, Change.unsubscribe if target is Status.unsubscribed else Change.bounce)
            return Recorded(new=True, status=target.value, changed=True)

    @staticmethod
    def _consequence(conn, item: Feedback, soft_limit: int, soft_days: int, now: dt.datetime) -> Status | None:
        if item.kind is FeedbackKind.complaint:
            return Status.unsubscribed
        if item.kind is FeedbackKind.hard:
            return Status.bounced
        if item.kind is not FeedbackKind.soft:  # blocked, delayed: about the route or the wait, not the reader
            return None
        since = (now - dt.timedelta(days=soft_days)).date().isoformat()
        soft_bounce_days = conn.execute(
            select(func.count(func.distinct(feedback.c.day)))
            .where(feedback.c.subscriber_id == item.subscriber_id, feedback.c.kind == FeedbackKind.soft.value,
                   feedback.c.day >= since)
        ).scalar_one()
        return Status.bounced if soft_bounce_days >= soft_limit else None

    def counts_by_issue(self, issue_date: str) -> dict[str, int]:
        """Readers with each kind of feedback about one issue: {"hard": 3, "complaint": 1}."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(feedback.c.kind, func.count(func.distinct(feedback.c.subscriber_id)))
                .where(feedback.c.issue_date == issue_date).group_by(feedback.c.kind)
            ).all()
        return {kind: count for kind, count in rows}

    def blocked_by_domain(self, issue_date: str) -> list[tuple[str, int]]:
        """Readers' domains whose servers refused one issue by policy, most readers first: [("gmail.com", 40)]."""
        email = subscribers.c.email
        domain = (func.split_part(email, "@", 2) if self.engine.dialect.name == "postgresql"
                  else func.substr(email, func.instr(email, "@") + 1)).label("domain")
        readers = func.count(func.distinct(feedback.c.subscriber_id)).label("readers")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(domain, readers).select_from(feedback.join(subscribers))
                .where(feedback.c.issue_date == issue_date, feedback.c.kind == FeedbackKind.blocked.value)
                .group_by(domain).order_by(readers.desc(), domain)
            ).all()
        return [(name, count) for name, count in rows]
