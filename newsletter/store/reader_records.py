"""What the desk reads about readers: finding them by address, and one reader's record.

A search is a case-insensitive substring of the address (addresses are stored in their normal,
lowercased form, so the text is normalised the same way), paged by keyset (`id > after`), never
OFFSET. A record is the reader's dates and their latest deliveries and reports; clicks only when
NEWSLETTER_TRACKING=individual kept them (otherwise nothing tells who clicked what).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, select

from .schema import Status, as_utc, click_history, deliveries, feedback, issues, subscribers

SEARCH_PAGE = 50
HISTORY_ROWS = 30


@dataclass(frozen=True)
class ReaderRow:
    """One reader in a list of search results."""

    id: int
    email: str
    status: str
    created_at: dt.datetime


@dataclass(frozen=True)
class SearchPage:
    readers: list[ReaderRow]
    next_after: int | None  # the keyset of the next page; None on the last one


@dataclass(frozen=True)
class DeliveryLine:
    issue_date: str
    outcome: str
    reply: str
    at: dt.datetime


@dataclass(frozen=True)
class ReportLine:
    """A bounce, a complaint, a block or a delay a delivery report said about the reader."""

    kind: str
    status: str  # the enhanced status code, 5.1.1, or ""
    reason: str
    issue_date: str | None
    at: dt.datetime


@dataclass(frozen=True)
class ClickLine:
    issue_date: str
    place: int
    machine: bool
    at: dt.datetime


@dataclass(frozen=True)
class ReaderRecord:
    id: int
    email: str
    name: str
    status: str
    created_at: dt.datetime
    confirmation_sent_at: dt.datetime | None
    confirmed_at: dt.datetime | None
    unsubscribed_at: dt.datetime | None
    deliveries: list[DeliveryLine]
    reports: list[ReportLine]
    clicks: list[ClickLine]


class ReaderRecords:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def search(self, text: str, status: Status | None = None, after_id: int = 0,
               limit: int = SEARCH_PAGE) -> SearchPage:
        """Readers whose address contains `text` (already normalised), oldest first, `limit` a page."""
        query = (select(subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.created_at)
                 .where(subscribers.c.id > after_id).order_by(subscribers.c.id).limit(limit + 1))
        if text:
            query = query.where(subscribers.c.email.contains(text, autoescape=True))
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        with self.engine.connect() as conn:
            rows = [ReaderRow(id_, email, state, as_utc(at)) for id_, email, state, at in conn.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        return SearchPage(rows, rows[-1].id if more else None)

    def record(self, subscriber_id: int, with_clicks: bool, limit: int = HISTORY_ROWS) -> ReaderRecord | None:
        """One reader's dates, their latest `limit` deliveries and reports (and clicks, `with_clicks`)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
            if row is None:
                return None
            sent = conn.execute(
                select(issues.c.issue_date, deliveries.c.outcome, deliveries.c.reply, deliveries.c.updated_at)
                .join(issues, issues.c.id == deliveries.c.issue_id)
                .where(deliveries.c.subscriber_id == subscriber_id)
                .order_by(issues.c.issue_date.desc()).limit(limit)).all()
            reports = conn.execute(
                select(feedback.c.kind, feedback.c.status, feedback.c.reason, feedback.c.issue_date,
                       feedback.c.received_at)
                .where(feedback.c.subscriber_id == subscriber_id)
                .order_by(feedback.c.received_at.desc(), feedback.c.id.desc()).limit(limit)).all()
            clicks = conn.execute(
                select(issues.c.issue_date, click_history.c.place, click_history.c.machine,
                       click_history.c.clicked_at)
                .join(issues, issues.c.id == click_history.c.issue_id)
                .where(click_history.c.subscriber_id == subscriber_id)
                .order_by(click_history.c.clicked_at.desc()).limit(limit)).all() if with_clicks else []
        reader = row._mapping
        return ReaderRecord(
            reader["id"], reader["email"], reader["name"], reader["status"], as_utc(reader["created_at"]),
            as_utc(reader["confirmation_sent_at"]), as_utc(reader["confirmed_at"]), as_utc(reader["unsubscribed_at"]),
            [DeliveryLine(day, outcome, reply, as_utc(at)) for day, outcome, reply, at in sent],
            [ReportLine(kind, code, reason, day, as_utc(at)) for kind, code, reason, day, at in reports],
            [ClickLine(day, place, bool(machine), as_utc(at)) for day, place, machine, at in clicks])
