"""The subscriber store: subscribers, sent issues and the delivery log.

SQLAlchemy Core over `DATABASE_URL`, SQLite by default. Everything here is
portable to PostgreSQL: claims use INSERT … ON CONFLICT DO NOTHING (both
dialects) and compare-and-set UPDATEs, never SQLite-only locking.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from .errors import ConfigError


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
    # Ids are never reused (AUTOINCREMENT on SQLite), so an old unsubscribe
    # link can never reach a later reader.
    sqlite_autoincrement=True,
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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (the web app, `status`) work while a send writes;
    # the busy timeout makes concurrent writers wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _insert_ignoring_duplicates(engine: Engine, table: Table):
    """INSERT that silently skips rows violating a unique key, in the engine's dialect."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class Store:
    """All reads and writes of the newsletter's data, behind named operations."""

    def __init__(self, database_url: str) -> None:
        try:
            url = make_url(database_url)
        except ArgumentError:
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: cannot parse {database_url!r}") from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(url)
        except Exception as exc:  # missing driver and the like
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
        except OperationalError as exc:
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: cannot open the database: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    # Subscribers ---------------------------------------------------------

    def add_subscriber(self, email: str, name: str = "", status: Status = Status.active) -> bool:
        """Insert a subscriber; False when the address is already on the list."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                _insert_ignoring_duplicates(self.engine, subscribers),
                {"email": email, "name": name, "status": status.value, "created_at": now, "updated_at": now},
            )
        return result.rowcount == 1

    def add_subscribers(self, rows: list[tuple[str, str]], status: Status = Status.active) -> int:
        """Insert many (email, name) rows in one transaction; returns how many were new."""
        if not rows:
            return 0
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                _insert_ignoring_duplicates(self.engine, subscribers),
                [
                    {"email": e, "name": n, "status": status.value, "created_at": now, "updated_at": now}
                    for e, n in rows
                ],
            )
        return max(result.rowcount, 0)

    def set_status(self, email: str, status: Status) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(subscribers)
                .where(subscribers.c.email == email)
                .values(status=status.value, updated_at=utcnow())
            )
        return result.rowcount == 1

    def get_subscriber(self, email: str) -> Subscriber | None:
        return self._one_subscriber(subscribers.c.email == email)

    def subscriber_by_id(self, subscriber_id: int) -> Subscriber | None:
        return self._one_subscriber(subscribers.c.id == subscriber_id)

    def _one_subscriber(self, condition) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*SUBSCRIBER_COLUMNS).where(condition)).first()
        return Subscriber(*row) if row else None

    def request_subscription(self, email: str, name: str = "",
                             resend_after: dt.timedelta = dt.timedelta(minutes=10)) -> Subscriber | None:
        """Record a signup; returns the subscriber when a confirmation email should go out.

        New, unsubscribed and bounced addresses become `pending`; an active
        reader is left alone (None). Many signups of one address at once end
        as one row: the insert skips an existing address, the update is a
        compare-and-set.
        """
        now = utcnow()
        self.add_subscriber(email, name, Status.pending)
        with self.engine.begin() as conn:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.email == email,
                       subscribers.c.status.in_([Status.unsubscribed.value, Status.bounced.value]))
                .values(status=Status.pending.value, confirmation_sent_at=None, updated_at=now)
            )
            # Claim the right to send the confirmation, at most once per
            # `resend_after`, so a flood of signups sends one email.
            claimed = conn.execute(
                update(subscribers)
                .where(subscribers.c.email == email, subscribers.c.status == Status.pending.value,
                       subscribers.c.confirmation_sent_at.is_(None)
                       | (subscribers.c.confirmation_sent_at < now - resend_after))
                .values(confirmation_sent_at=now)
            ).rowcount
        return self.get_subscriber(email) if claimed else None

    def confirmation_failed(self, subscriber_id: int) -> None:
        """The confirmation email did not go out: leave it for the retry."""
        with self.engine.begin() as conn:
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                         .values(confirmation_sent_at=None))

    def pending_confirmations(self, limit: int = 1000) -> list[Subscriber]:
        """Pending readers whose confirmation email never went out (SMTP was down)."""
        query = (
            select(*SUBSCRIBER_COLUMNS)
            .where(subscribers.c.status == Status.pending.value, subscribers.c.confirmation_sent_at.is_(None))
            .order_by(subscribers.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [Subscriber(*row) for row in conn.execute(query)]

    def claim_confirmation(self, subscriber_id: int) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.status == Status.pending.value,
                       subscribers.c.confirmation_sent_at.is_(None))
                .values(confirmation_sent_at=utcnow())
            ).rowcount == 1

    def confirm(self, subscriber_id: int) -> Subscriber | None:
        """pending → active; an active reader stays active. None when there is nobody to confirm."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.status == Status.pending.value)
                .values(status=Status.active.value, confirmed_at=now, updated_at=now)
            )
        subscriber = self.subscriber_by_id(subscriber_id)
        return subscriber if subscriber and subscriber.status == Status.active.value else None

    def unsubscribe(self, subscriber_id: int) -> bool:
        """Unsubscribe at once; True if the reader exists (already unsubscribed is fine)."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.status != Status.unsubscribed.value)
                .values(status=Status.unsubscribed.value, unsubscribed_at=now, updated_at=now)
            )
        return self.subscriber_by_id(subscriber_id) is not None

    def forget(self, email: str, email_hash: str) -> bool:
        """Erase a reader's data; keep only a hash to honour a past unsubscribe."""
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers.c.id, subscribers.c.status)
                               .where(subscribers.c.email == email)).first()
            if row is None:
                return False
            if row.status == Status.unsubscribed.value:
                conn.execute(_insert_ignoring_duplicates(self.engine, suppressions),
                             {"email_hash": email_hash, "created_at": utcnow()})
            conn.execute(deliveries.delete().where(deliveries.c.subscriber_id == row.id))
            conn.execute(subscribers.delete().where(subscribers.c.id == row.id))
        return True

    def suppressed_hashes(self, hashes: list[str]) -> set[str]:
        if not hashes:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(select(suppressions.c.email_hash)
                                    .where(suppressions.c.email_hash.in_(hashes))).scalars())

    def lift_suppression(self, email_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(suppressions.delete().where(suppressions.c.email_hash == email_hash))

    def iter_subscribers(self, status: Status | None = None, batch_size: int = 1000) -> Iterator[dict]:
        """Every subscriber as a dict, by keyset pages so memory stays flat."""
        last_id = 0
        while True:
            query = select(subscribers).where(subscribers.c.id > last_id).order_by(subscribers.c.id).limit(batch_size)
            if status is not None:
                query = query.where(subscribers.c.status == status.value)
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(query)]
            if not rows:
                return
            yield from rows
            last_id = rows[-1]["id"]

    def count_subscribers(self, status: Status | None = None) -> int:
        query = select(func.count()).select_from(subscribers)
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # Issues --------------------------------------------------------------

    def get_issue(self, issue_date: str) -> StoredIssue | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(issues).where(issues.c.issue_date == issue_date)).first()
        if row is None:
            return None
        m = row._mapping
        return StoredIssue(m["id"], m["issue_date"], m["subject"], m["preheader"], m["html"], m["text"],
                           json.loads(m["stories"]))

    def save_issue(self, issue_date: str, subject: str, preheader: str, html: str, text: str,
                   stories: list[dict]) -> StoredIssue:
        """Freeze an issue so every run for that date sends the same thing.

        When two runs race to freeze the same date, the first one wins and
        both go on with its issue.
        """
        try:
            with self.engine.begin() as conn:
                issue_id = conn.execute(
                    issues.insert().values(
                        issue_date=issue_date, subject=subject, preheader=preheader, html=html, text=text,
                        stories=json.dumps(stories, ensure_ascii=False), created_at=utcnow(),
                    )
                ).inserted_primary_key[0]
                urls = {s["url"] for s in stories}
                if urls:
                    conn.execute(issue_stories.insert(), [{"issue_id": issue_id, "url": u} for u in urls])
        except IntegrityError:
            pass
        stored = self.get_issue(issue_date)
        assert stored is not None
        return stored

    def list_issue_dates(self) -> list[tuple[str, str]]:
        """(date, subject) of every frozen issue, newest first."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(issues.c.issue_date, issues.c.subject).order_by(issues.c.issue_date.desc()))]

    def sent_story_urls(self, before_date: str) -> frozenset[str]:
        """Links of every story in issues dated before `before_date`."""
        query = (
            select(issue_stories.c.url)
            .join(issues, issues.c.id == issue_stories.c.issue_id)
            .where(issues.c.issue_date < before_date)
        )
        with self.engine.connect() as conn:
            return frozenset(conn.execute(query).scalars())

    # Delivery log --------------------------------------------------------

    def start_run(self, issue_id: int, run_id: str, owner: str) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(send_runs.insert().values(run_id=run_id, issue_id=issue_id, owner=owner,
                                                   started_at=now, heartbeat_at=now))

    def heartbeat(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(send_runs).where(send_runs.c.run_id == run_id).values(heartbeat_at=utcnow()))

    def finish_run(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(send_runs).where(send_runs.c.run_id == run_id).values(finished_at=utcnow()))

    def _abandoned_runs(self, stale_after: dt.timedelta):
        """Runs that will never settle their claims: finished, or silent (killed, machine lost)."""
        return select(send_runs.c.run_id).where(
            send_runs.c.finished_at.is_not(None) | (send_runs.c.heartbeat_at < utcnow() - stale_after)
        )

    def claim_batch(self, issue_id: int, run_id: str, after_id: int, limit: int,
                    stale_after: dt.timedelta = dt.timedelta(seconds=30)) -> tuple[list[Subscriber], int]:
        """Claim up to `limit` active subscribers after `after_id` who still need this issue.

        Returns the subscribers this run now owns and the last id scanned.
        Claimable: no delivery row yet, a transient failure, or a claim left
        by a run that stopped heart-beating (killed mid-send). Every claim is
        a compare-and-set on the row, so two runs never own one subscriber.
        """
        page = (
            select(subscribers.c.id, subscribers.c.email, subscribers.c.name, deliveries.c.outcome)
            .outerjoin(
                deliveries,
                (deliveries.c.subscriber_id == subscribers.c.id) & (deliveries.c.issue_id == issue_id),
            )
            .where(subscribers.c.id > after_id, subscribers.c.status == Status.active.value)
            .order_by(subscribers.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(page).all()
        if not rows:
            return [], after_id
        fresh = [r.id for r in rows if r.outcome is None]
        retry = [r.id for r in rows if r.outcome in (Outcome.failed.value, Outcome.sending.value)]
        now = utcnow()
        with self.engine.begin() as conn:
            if fresh:
                conn.execute(
                    _insert_ignoring_duplicates(self.engine, deliveries),
                    [
                        {"issue_id": issue_id, "subscriber_id": sid, "outcome": Outcome.sending.value,
                         "run_id": run_id, "attempts": 0, "reply": "", "updated_at": now}
                        for sid in fresh
                    ],
                )
            if retry:
                conn.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.issue_id == issue_id,
                        deliveries.c.subscriber_id.in_(retry),
                        (deliveries.c.outcome == Outcome.failed.value)
                        | ((deliveries.c.outcome == Outcome.sending.value)
                           & deliveries.c.run_id.in_(self._abandoned_runs(stale_after))),
                    )
                    .values(outcome=Outcome.sending.value, run_id=run_id, updated_at=now)
                )
            owned = set(
                conn.execute(
                    select(deliveries.c.subscriber_id).where(
                        deliveries.c.issue_id == issue_id,
                        deliveries.c.run_id == run_id,
                        deliveries.c.outcome == Outcome.sending.value,
                        deliveries.c.subscriber_id.in_(fresh + retry),
                    )
                ).scalars()
            )
        claimed = [Subscriber(r.id, r.email, r.name) for r in rows if r.id in owned]
        return claimed, rows[-1].id

    def claimed_by_others(self, issue_id: int, run_id: str) -> int:
        """Subscribers of this issue that another run has claimed and not yet settled."""
        query = select(func.count()).select_from(deliveries).where(
            deliveries.c.issue_id == issue_id,
            deliveries.c.outcome == Outcome.sending.value,
            deliveries.c.run_id != run_id,
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def record_outcomes(self, issue_id: int, run_id: str, outcomes: list[tuple[int, Outcome, str]]) -> None:
        """Write a batch of (subscriber_id, outcome, server reply) in one transaction."""
        if not outcomes:
            return
        now = utcnow()
        bounced = [sid for sid, outcome, _ in outcomes if outcome is Outcome.refused]
        with self.engine.begin() as conn:
            for subscriber_id, outcome, reply in outcomes:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.issue_id == issue_id, deliveries.c.subscriber_id == subscriber_id,
                           deliveries.c.run_id == run_id)
                    .values(outcome=outcome.value, reply=reply[:500], attempts=deliveries.c.attempts + 1,
                            updated_at=now)
                )
            if bounced:  # a hard bounce: nothing more goes to them until reactivated
                conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id.in_(bounced), subscribers.c.status == Status.active.value)
                    .values(status=Status.bounced.value, updated_at=now)
                )

    def release_claims(self, issue_id: int, run_id: str) -> int:
        """Hand back what this run claimed but never settled (Ctrl-C, SMTP unreachable).

        Never tried: back to no row at all (pending); tried before: failed
        again, keeping the last reply.
        """
        owned = (deliveries.c.issue_id == issue_id) & (deliveries.c.run_id == run_id) \
            & (deliveries.c.outcome == Outcome.sending.value)
        with self.engine.begin() as conn:
            untried = conn.execute(deliveries.delete().where(owned & (deliveries.c.attempts == 0))).rowcount
            retried = conn.execute(
                update(deliveries).where(owned).values(outcome=Outcome.failed.value, updated_at=utcnow())
            ).rowcount
        return untried + retried

    def never_claimed(self, issue_id: int) -> int:
        """Active subscribers without any delivery row for this issue yet."""
        query = (
            select(func.count())
            .select_from(subscribers.outerjoin(
                deliveries, (deliveries.c.subscriber_id == subscribers.c.id) & (deliveries.c.issue_id == issue_id)))
            .where(subscribers.c.status == Status.active.value, deliveries.c.issue_id.is_(None))
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def common_replies(self, issue_id: int, limit: int = 5) -> list[tuple[str, str, int]]:
        """(outcome, server reply, count) for what did not go through, most frequent first."""
        query = (
            select(deliveries.c.outcome, deliveries.c.reply, func.count().label("n"))
            .where(deliveries.c.issue_id == issue_id, deliveries.c.outcome != Outcome.sent.value)
            .group_by(deliveries.c.outcome, deliveries.c.reply)
            .order_by(func.count().desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def delivery_counts(self, issue_id: int) -> dict[str, int]:
        query = (
            select(deliveries.c.outcome, func.count())
            .where(deliveries.c.issue_id == issue_id)
            .group_by(deliveries.c.outcome)
        )
        with self.engine.connect() as conn:
            return {outcome: n for outcome, n in conn.execute(query)}
