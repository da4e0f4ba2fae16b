"""The tables of the newsletter's data and the small records read from them.

Portable SQLAlchemy Core: the same schema runs on SQLite (the default) and
PostgreSQL (several senders sharing one list).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)


class Status(str, Enum):
    pending = "pending"
    active = "active"
    unsubscribed = "unsubscribed"
    bounced = "bounced"


class Outcome(str, Enum):
    sending = "sending"  # claimed by a run, not yet known
    sent = "sent"
    failed = "failed"  # transient: the next run retries it
    refused = "refused"  # permanent: the server said no for good
    withdrawn = "withdrawn"  # unsubscribed or forgotten after the run claimed them: nothing sent


metadata = MetaData()

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("status", String(20), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confirmation_sent_at", DateTime(timezone=True)),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("unsubscribed_at", DateTime(timezone=True)),
    # A pause the reader chose: no issue dated before this day (YYYY-MM-DD, compared with issues'
    # dates, never a clock). Null: not paused.
    Column("paused_until", String(10)),
    # Ids are never reused (AUTOINCREMENT on SQLite), so an old unsubscribe
    # link can never reach a later reader.
    sqlite_autoincrement=True,
)

# A reader's new address waiting for its owner to confirm it (the link sent there names the row, which
# is deleted when used: a link works once). Until then the old address keeps receiving.
address_changes = Table(
    "address_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("new_email", String(320), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("address_changes_by_subscriber", "subscriber_id"),
    sqlite_autoincrement=True,  # an old link never names a later change
)

# What is kept of a forgotten reader who had unsubscribed: a keyed hash of the
# address, enough to keep an import from subscribing them again, nothing more.
suppressions = Table(
    "suppressions",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

issues = Table(
    "issues",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issue_date", String(10), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("stories", Text, nullable=False),  # JSON: [{url, title, source}, …]
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set when the issue's per-reader delivery rows were folded into delivery_totals.
    Column("log_folded_at", DateTime(timezone=True)),
)

issue_stories = Table(
    "issue_stories",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("url", String(2000), primary_key=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    Column("outcome", String(20), nullable=False, index=True),
    Column("run_id", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reply", Text, nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("issue_id", "subscriber_id", name="one_delivery_per_issue"),
)


# What is kept of an old issue's delivery log once its per-reader rows are folded
# (`newsletter db compact`): how many readers ended with each outcome, by reply.
# The commonest replies are kept as they were; the rest are summed under one.
delivery_totals = Table(
    "delivery_totals",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("outcome", String(20), primary_key=True),
    Column("reply", Text, primary_key=True),
    Column("count", Integer, nullable=False),
)

class FeedbackKind(str, Enum):
    hard = "hard"  # the mailbox does not exist (5.x.x): the reader is bounced at once
    soft = "soft"  # mailbox full, over quota, gave up after retrying (4.x.x): counted, bounced after several
    complaint = "complaint"  # "this is spam" (an ARF report): unsubscribed, never mailed again
    blocked = "blocked"  # refused by policy (5.7.x: spam filter, SPF/DKIM/DMARC): counted per domain, nobody changed
    delayed = "delayed"  # "still trying" (Action: delayed): recorded, never counted as a bounce


# What reports said about readers after the send (`newsletter bounces`): one row per report
# and reader, so the same report read twice counts once.
feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("issue_date", String(10)),  # the issue the report is about, when its return path says
    Column("day", String(10), nullable=False),  # that issue's date, else the day it was read
    Column("kind", String(20), nullable=False),
    Column("status", String(16), nullable=False),  # the enhanced status code (5.1.1), or ""
    Column("reason", Text, nullable=False),
    Column("report_id", String(250), nullable=False),  # the report's Message-ID, or a hash of its bytes
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("report_id", "subscriber_id", name="one_feedback_per_report_and_reader"),
    Index("feedback_by_subscriber", "subscriber_id", "kind"),
    Index("feedback_by_issue", "issue_date", "kind"),
    sqlite_autoincrement=True,
)

send_runs = Table(
    "send_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(200), nullable=False),  # host and pid, for people reading the table
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)


# What readers read: per story of an issue (place 1 is the lead; place 0 stands for "any story of
# the issue"), clicks by readers and by machines (scanners, prefetchers), and unique readers folded
# in from click_readers when their salt expired.
click_totals = Table(
    "click_totals",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("place", Integer, primary_key=True),
    Column("clicks", Integer, nullable=False),
    Column("machine_clicks", Integer, nullable=False),
    Column("unique_readers", Integer, nullable=False),
)

# One random salt per issue at a time, for NEWSLETTER_TRACKING=anonymous: a reader's clicks are
# known only by HMAC(salt, issue and reader). When the salt is older than
# NEWSLETTER_TRACKING_SALT_DAYS (by the database's clock), its click_readers rows are counted into
# click_totals and deleted with it: nothing left can tell which reader clicked what, key or no key.
click_salts = Table(
    "click_salts",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("created_epoch", Float, nullable=False),  # the database's clock, seconds since 1970
    Index("click_salts_by_age", "created_epoch"),
)

click_readers = Table(
    "click_readers",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("place", Integer, primary_key=True),
    Column("reader_hash", String(64), primary_key=True),
)

# NEWSLETTER_TRACKING=individual only (with readers' consent): who clicked what, when.
click_history = Table(
    "click_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    Column("place", Integer, nullable=False),
    Column("machine", Boolean, nullable=False),
    Column("clicked_at", DateTime(timezone=True), nullable=False),
    Index("click_history_by_subscriber", "subscriber_id"),
    Index("click_history_by_issue", "issue_id", "place"),
    sqlite_autoincrement=True,
)


# An editor's approval of one day's issue (NEWSLETTER_APPROVAL=required): the issue frozen as they
# saw it (its HTML's hash), the editorial file's version it was built from, who and when.
approvals = Table(
    "approvals",
    metadata,
    Column("issue_date", String(10), primary_key=True),
    Column("html_sha256", String(64), nullable=False),
    Column("editorial_version", String(32), nullable=False),
    Column("approved_by", String(200), nullable=False),
    Column("approved_at", DateTime(timezone=True), nullable=False),
)


# The desk's editors (`newsletter editors add`). No password until they set one from their one-time
# link; only its Argon2id hash is kept. Removing an editor deletes the row, and with it their sessions.
editors = Table(
    "editors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,  # a new editor never inherits a removed one's id
)

# Signed-in editors: the id is the SHA-256 of the random token in their cookie, so the table alone
# (a backup, an export) signs nobody in. Times are the database's clock (seconds since 1970), the
# one every worker and machine agrees on, for the idle and absolute expiries.
editor_sessions = Table(
    "editor_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("editor_id", Integer, ForeignKey("editors.id", ondelete="CASCADE"), nullable=False),
    Column("created_epoch", Float, nullable=False),
    Column("last_seen_epoch", Float, nullable=False),
    Index("editor_sessions_by_editor", "editor_id"),
)

# One-time links to set a password: the SHA-256 of the link's token, deleted when used.
password_links = Table(
    "password_links",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("editor_id", Integer, ForeignKey("editors.id", ondelete="CASCADE"), nullable=False),
    Column("expires_epoch", Float, nullable=False),
    Index("password_links_by_editor", "editor_id"),
)

# Who did what when on the desk and to its accounts. The actor is an editor's address, or
# "cli:<user>" for the command line; it outlives the editor.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(320), nullable=False),
    Column("action", String(40), nullable=False),
    Column("detail", Text, nullable=False),
    Index("audit_log_by_time", "at"),
    sqlite_autoincrement=True,
)


# How the list grew: signups, confirmations, unsubscribes and bounces counted as they happen, per
# quarter hour of the database's clock (epoch seconds // 900). Counts only, no reader: nothing in
# it needs forgetting, and a past day's figures stay what they were (store/list_changes.py).
list_changes = Table(
    "list_changes",
    metadata,
    Column("quarter", Integer, primary_key=True),
    Column("kind", String(20), primary_key=True),
    Column("count", Integer, nullable=False),
)


# Requests per client per fixed window, for the signup rate limit. In the store
# so that every worker process and every machine counts against one limit;
# rows of past windows are deleted as new ones start.
rate_counts = Table(
    "rate_counts",
    metadata,
    Column("bucket", String(100), primary_key=True),  # "signup:<address or /64>"
    Column("window", Integer, primary_key=True),  # database epoch seconds // window length
    Column("hits", Integer, nullable=False),
    Index("rate_counts_by_window", "window"),
)


def db_epoch_seconds(engine: Engine):
    """The database's clock, in seconds since 1970: one clock for every process and machine."""
    if engine.dialect.name == "postgresql":
        return func.extract("epoch", func.now())
    return (func.julianday("now") - 2440587.5) * 86400.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as an aware UTC one: SQLite gives the stored UTC time back without its zone."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


SUBSCRIBER_COLUMNS = (subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.status)


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: str = Status.active.value


@dataclass(frozen=True)
class StoredIssue:
    id: int
    issue_date: str
    subject: str
    preheader: str
    html: str
    text: str
    stories: list[dict]
    log_folded_at: dt.datetime | None = None


@dataclass(frozen=True)
class IssueOutline:
    """What an issue's history, figures and send progress read of it: not its HTML and text, the bulk of its row."""

    id: int
    issue_date: str
    subject: str
    stories: list[dict]
    log_folded_at: dt.datetime | None = None


def upsert_insert(engine: Engine, table: Table):
    """The engine's dialect's INSERT, which has ON CONFLICT clauses (SQLite and PostgreSQL alike)."""
    # Imported here: the PostgreSQL dialect's modules cost a SQLite store's every start-up ~40 ms.
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def insert_ignoring_duplicates(engine: Engine, table: Table):
    """INSERT that silently skips rows violating a unique key, in the engine's dialect."""
    return upsert_insert(engine, table).on_conflict_do_nothing()
