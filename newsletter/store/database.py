"""The subscriber store: subscribers and sent issues, with the delivery log beside them.

SQLAlchemy Core over `DATABASE_URL`, SQLite by default (WAL, busy timeout),
PostgreSQL when several senders share one list.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from ..errors import ConfigError
from .approvals import ApprovalLog
from .clicks import ClickLog
from .deliverylog import DeliveryLog
from .editors import erase_readers_from_audit
from .feedback import FeedbackLog
from .list_changes import Change, ListChanges, count_change
from .migrate import prepare_schema
from .reader_choices import ReaderChoices
from .schema import (  # noqa: F401  (Outcome, Status, Subscriber, StoredIssue are part of the store's API)
    SUBSCRIBER_COLUMNS,
    IssueOutline,
    Outcome,
    Status,
    StoredIssue,
    Subscriber,
    as_utc,
    deliveries,
    insert_ignoring_duplicates,
    db_epoch_seconds,
    issue_stories,
    issues,
    rate_counts,
    subscribers,
    suppressions,
    upsert_insert,
    utcnow,
)


def _before(engine: Engine, column, age: dt.timedelta):
    """`column` is more than `age` in the past by the database's clock, never this host's."""
    if engine.dialect.name == "postgresql":
        return column < func.now() - age
    # julianday reads the stored text whatever its form (a "T", a UTC offset, fractions of a second).
    return func.julianday(column) < func.julianday("now", f"-{age.total_seconds():.3f} seconds")


def _sqlite_pragmas(busy_timeout_seconds: float):
    def on_connect(dbapi_connection, _record) -> None:
        # WAL lets readers (the web app, `status`) work while a send writes;
        # the busy timeout makes concurrent writers wait instead of failing.
        cursor = dbapi_connection.cursor()
        # First: switching a new file to WAL needs a lock that a process starting
        # at the same moment may hold.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still survives the process being killed (the crash the
        # send guards against); only a power cut can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


T = TypeVar("T")


class Store:
    """All reads and writes of the newsletter's data, behind named operations."""

    def __init__(self, database_url: str, busy_timeout_seconds: float = 30.0, check_schema: bool = True,
                 stalled_session_seconds: float | None = None) -> None:
        """Open the store; on SQLite a writer waits up to `busy_timeout_seconds` for the lock.

        The schema is made in an empty database and checked otherwise (SchemaError
        when it needs `newsletter db upgrade`); `check_schema=False` is for that command.
        On PostgreSQL, a session that sits inside a transaction for `stalled_session_seconds`
        (its process paused, its machine cut off) is ended by the server, so the row
        locks it holds cannot stop the other senders.
        """
        try:
            url = make_url(database_url)
        except ArgumentError:
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: cannot parse {database_url!r}") from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            try:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: cannot make the folder of {url.database}: "
                                  f"{exc.strerror or exc}") from None
        connect_args = {}
        if url.get_backend_name() == "postgresql":
            # The PostgreSQL counterpart of SQLite's busy timeout: wait this long for a lock, then fail.
            # No JIT: it compiled the claim page (estimated costly, run in ~5 ms) for ~100 ms every time.
            connect_args["options"] = f"-c lock_timeout={int(busy_timeout_seconds * 1000)} -c jit=off"
            # Plan each statement with its values: psycopg prepares a statement run 5 times, and
            # PostgreSQL may then keep a generic plan made while the delivery log was small.
            connect_args["prepare_threshold"] = None
            if stalled_session_seconds:
                connect_args["options"] += \
                    f" -c idle_in_transaction_session_timeout={int(stalled_session_seconds * 1000)}"
        try:
            self.engine = create_engine(url, connect_args=connect_args)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: the {url.get_backend_name()} driver "
                              f"{exc.name!r} is not installed; for PostgreSQL: pip install "
                              "'arabic-morning-newsletter[postgres]' (psycopg 3, URL postgresql+psycopg://…)") from None
        except Exception as exc:  # an unknown dialect and the like
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout_seconds))
        self.log = DeliveryLog(self.engine, connect_args)
        self.feedback = FeedbackLog(self.engine)
        self.clicks = ClickLog(self.engine)
        self.approvals = ApprovalLog(self.engine)
        self.choices = ReaderChoices(self.engine)
        self.changes = ListChanges(self.engine)
        if check_schema:
            self.run_on_database(prepare_schema)

    def run_on_database(self, work: Callable[[Engine], T]) -> T:
        """Run `work(engine)`, turning a database that cannot be reached into one line about the setting."""
        try:
            return work(self.engine)
        except (OperationalError, DatabaseError) as exc:  # DatabaseError: "file is not a database"
            reason = " ".join(str(exc.orig).split())  # drivers write several lines; one is enough
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: cannot open the database: {reason}") from None
        except OSError as exc:  # the lock file beside an SQLite database, in a read-only folder
            raise ConfigError(f"setting NEWSLETTER_DATABASE_URL: {exc.filename}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.engine.dispose()

    # Subscribers ---------------------------------------------------------

    def add_subscriber(self, email: str, name: str = "", status: Status = Status.active) -> bool:
        """Insert a subscriber; False when the address is already on the list."""
        return self.add_subscribers([(email, name)], status) == 1

    def add_subscribers(self, rows: list[tuple[str, str]], status: Status = Status.active) -> int:
        """Insert many (email, name) rows in one transaction; returns how many were new.

        Counted from RETURNING, the rows actually inserted: `rowcount` of a
        multi-row insert is -1 on PostgreSQL.
        """
        if not rows:
            return 0
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                insert_ignoring_duplicates(self.engine, subscribers).returning(subscribers.c.id),
                [
                    {"email": e, "name": n, "status": status.value, "created_at": now, "updated_at": now}
                    for e, n in rows
                ],
            )
            return len(result.all())

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

        New, unsubscribed and bounced addresses become `pending` (each counted as a
        signup); an active reader is left alone (None). Many signups of one address at once end
        as one row: the insert skips an existing address, the update is a
        compare-and-set.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            added = conn.execute(
                insert_ignoring_duplicates(self.engine, subscribers).returning(subscribers.c.id),
                {"email": email, "name": name, "status": Status.pending.value, "created_at": now, "updated_at": now},
            ).first() is not None
            returned = conn.execute(
                update(subscribers)
                .where(subscribers.c.email == email,
                       subscribers.c.status.in_([Status.unsubscribed.value, Status.bounced.value]))
                .values(status=Status.pending.value, confirmation_sent_at=None, updated_at=now)
            ).rowcount == 1
            if added or returned:
                count_change(conn, Change.signup)
            # Claim the right to send the confirmation, at most once per
            # `resend_after`, so a flood of signups sends one email.
            claimed = self._claim_confirmation(conn, subscribers.c.email == email, now, resend_after)
        return self.get_subscriber(email) if claimed else None

    def resend_confirmation(self, subscriber_id: int,
                            resend_after: dt.timedelta = dt.timedelta(minutes=10)) -> Subscriber | None:
        """A pending reader whose confirmation may go out again now (claimed, as a signup claims it);
        None when they are not pending or one went out less than `resend_after` ago."""
        with self.engine.begin() as conn:
            claimed = self._claim_confirmation(conn, subscribers.c.id == subscriber_id, utcnow(), resend_after)
        return self.subscriber_by_id(subscriber_id) if claimed else None

    @staticmethod
    def _claim_confirmation(conn, which, now: dt.datetime, resend_after: dt.timedelta) -> bool:
        """Compare-and-set: of many claims at once, one only wins."""
        return conn.execute(
            update(subscribers)
            .where(which, subscribers.c.status == Status.pending.value,
                   subscribers.c.confirmation_sent_at.is_(None)
                   | (subscribers.c.confirmation_sent_at < now - resend_after))
            .values(confirmation_sent_at=now)
        ).rowcount == 1

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
        return self.confirm_telling(subscriber_id)[0]

    def confirm_telling(self, subscriber_id: int) -> tuple[Subscriber | None, bool]:
        """As confirm(), and whether this call was the one that made the reader active (compare-and-set:
        of two presses of the button at once, one only), so that a welcome goes out once."""
        now = utcnow()
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.status == Status.pending.value)
                .values(status=Status.active.value, confirmed_at=now, updated_at=now)
            ).rowcount == 1
            if changed:
                count_change(conn, Change.confirmation)
        subscriber = self.subscriber_by_id(subscriber_id)
        if subscriber is None or subscriber.status != Status.active.value:
            return None, False
        return subscriber, changed

    def unsubscribe(self, subscriber_id: int) -> bool:
        """Unsubscribe at once; True if the reader exists (already unsubscribed is fine).

        Only an active reader leaving counts as an unsubscribe of the list's growth: a pending or
        bounced one was not among the readers."""
        now = utcnow()
        leaving = update(subscribers).where(subscribers.c.id == subscriber_id) \
            .values(status=Status.unsubscribed.value, unsubscribed_at=now, updated_at=now)
        with self.engine.begin() as conn:
            left = conn.execute(leaving.where(subscribers.c.status == Status.active.value)).rowcount
            count_change(conn, Change.unsubscribe, left)
            conn.execute(leaving.where(subscribers.c.status.not_in([Status.active.value,
                                                                     Status.unsubscribed.value])))
        return self.subscriber_by_id(subscriber_id) is not None

    def leave_and_forget(self, subscriber_id: int, email: str, email_hash: str) -> bool:
        """Erase a reader at their request (their manage page, or an editor acting for them): unsubscribed
        first, so that forgetting keeps a keyed hash of the address and no import adds it again."""
        self.unsubscribe(subscriber_id)
        return self.forget(email, email_hash)

    def forget(self, email: str, email_hash: str) -> bool:
        """Erase a reader's data; keep only a hash to honour a past unsubscribe."""
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers.c.id, subscribers.c.status)
                               .where(subscribers.c.email == email)).first()
            if row is None:
                return False
            if row.status == Status.unsubscribed.value:
                conn.execute(insert_ignoring_duplicates(self.engine, suppressions),
                             {"email_hash": email_hash, "created_at": utcnow()})
            conn.execute(deliveries.delete().where(deliveries.c.subscriber_id == row.id))
            self.clicks.forget(conn, row.id)
            erase_readers_from_audit(conn, [(row.id, email)])
            conn.execute(subscribers.delete().where(subscribers.c.id == row.id))
        return True

    def forget_unconfirmed(self, age: dt.timedelta, email_hash: Callable[[str], str],
                           batch_size: int = 1000) -> int:
        """Erase readers still pending `age` after they last asked (NEWSLETTER_PENDING_DAYS); how many went.

        "Last asked": the signup, or the latest confirmation email sent, whose
        link must keep working as long as it is valid. Ages are measured on the
        database's clock, as leases are: every machine of a shared store agrees.
        A reader who had unsubscribed before the address was signed up again
        stays unsubscribed, as `forget` keeps them: by a keyed hash.
        """
        expired = (subscribers.c.status == Status.pending.value) & _before(self.engine, subscribers.c.updated_at, age) \
            & (subscribers.c.confirmation_sent_at.is_(None)
               | _before(self.engine, subscribers.c.confirmation_sent_at, age))
        batch = select(subscribers.c.id).where(expired).order_by(subscribers.c.id).limit(batch_size)
        forgotten = 0
        while True:
            with self.engine.begin() as conn:
                # The condition is checked again as rows are deleted: a reader who confirms meanwhile stays.
                gone = conn.execute(subscribers.delete().where(subscribers.c.id.in_(batch.scalar_subquery()),
                                                               expired)
                                    .returning(subscribers.c.id, subscribers.c.email,
                                               subscribers.c.unsubscribed_at)).all()
                ids = [row.id for row in gone]
                if ids:  # the foreign keys cascade; a store made before them has none
                    conn.execute(deliveries.delete().where(deliveries.c.subscriber_id.in_(ids)))
                    self.clicks.forget_many(conn, ids)
                    erase_readers_from_audit(conn, [(row.id, row.email) for row in gone])
                if once_unsubscribed := [row.email for row in gone if row.unsubscribed_at is not None]:
                    conn.execute(insert_ignoring_duplicates(self.engine, suppressions),
                                 [{"email_hash": email_hash(email), "created_at": utcnow()}
                                  for email in once_unsubscribed])
            forgotten += len(ids)
            if len(ids) < batch_size:
                return forgotten

    def refresh_statistics(self) -> None:
        """After a bulk import on PostgreSQL, ANALYZE the list so that the next send is planned on it
        as it is: on a list the server had no statistics for yet, each claim page read every
        active reader through the status index and sorted them (a cost growing with the square of
        the list). Autovacuum gets there too, but up to a minute later."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE subscribers"))

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

    # Rate limits -----------------------------------------------------------

    def count_request(self, bucket: str, window_seconds: int) -> tuple[float, int, int]:
        """Count one request against `bucket`; (database time, hits this window, hits last window).

        One upsert per request, on the database's clock, so that every worker
        process shares the count. The first request of a bucket's window
        also deletes windows nobody needs any more: the table stays small.
        """
        with self.engine.begin() as conn:
            now = float(conn.execute(select(db_epoch_seconds(self.engine))).scalar_one())
            window = int(now // window_seconds)
            upsert = (
                upsert_insert(self.engine, rate_counts).values(bucket=bucket, window=window, hits=1)
                .on_conflict_do_update(index_elements=[rate_counts.c.bucket, rate_counts.c.window],
                                       set_={"hits": rate_counts.c.hits + 1})
                .returning(rate_counts.c.hits)
            )
            hits = conn.execute(upsert).scalar_one()
            previous = conn.execute(select(rate_counts.c.hits).where(
                rate_counts.c.bucket == bucket, rate_counts.c.window == window - 1)).scalar() or 0
            if hits == 1:
                conn.execute(rate_counts.delete().where(rate_counts.c.window < window - 1))
        return now, hits, previous

    # Issues --------------------------------------------------------------

    def get_issue(self, issue_date: str) -> StoredIssue | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(issues).where(issues.c.issue_date == issue_date)).first()
        if row is None:
            return None
        m = row._mapping
        return StoredIssue(m["id"], m["issue_date"], m["subject"], m["preheader"], m["html"], m["text"],
                           json.loads(m["stories"]), m["log_folded_at"])

    def save_issue(self, issue_date: str, subject: str, preheader: str, html: str, text: str,
                   stories: list[dict]) -> StoredIssue:
        """Freeze an issue so every run for that date sends the same thing.

        When two runs race to freeze the same date, the first one wins and
        both go on with its issue. The loser's insert does nothing rather than fail: a failed
        insert is an ERROR line in PostgreSQL's log, a false alarm for whoever watches it.
        """
        freeze = insert_ignoring_duplicates(self.engine, issues).values(
            issue_date=issue_date, subject=subject, preheader=preheader, html=html, text=text,
            stories=json.dumps(stories, ensure_ascii=False), created_at=utcnow(),
        ).returning(issues.c.id)
        with self.engine.begin() as conn:
            issue_id = conn.execute(freeze).scalar()
            urls = {s["url"] for s in stories}
            if issue_id is not None and urls:
                conn.execute(issue_stories.insert(), [{"issue_id": issue_id, "url": u} for u in urls])
        stored = self.get_issue(issue_date)
        assert stored is not None
        return stored

    def issues_to_fold(self, before_date: str) -> list[StoredIssue]:
        """Issues dated before `before_date` whose per-reader delivery rows are still kept."""
        with self.engine.connect() as conn:
            dates = conn.execute(select(issues.c.issue_date).where(
                issues.c.issue_date < before_date, issues.c.log_folded_at.is_(None))
                .order_by(issues.c.issue_date)).scalars().all()
        return [issue for issue in map(self.get_issue, dates) if issue is not None]

    def issue_outlines(self, first_date: str, last_date: str) -> list[IssueOutline]:
        """Every frozen issue dated from `first_date` to `last_date`, oldest first, without its HTML and text."""
        query = (select(issues.c.id, issues.c.issue_date, issues.c.subject, issues.c.stories, issues.c.log_folded_at)
                 .where(issues.c.issue_date >= first_date, issues.c.issue_date <= last_date)
                 .order_by(issues.c.issue_date))
        with self.engine.connect() as conn:
            return [IssueOutline(i, day, subject, json.loads(stories), folded_at)
                    for i, day, subject, stories, folded_at in conn.execute(query)]

    def issue_outline(self, issue_date: str) -> IssueOutline | None:
        """The frozen issue of `issue_date` without its HTML and text; None when there is none."""
        return next(iter(self.issue_outlines(issue_date, issue_date)), None)

    def list_issue_dates(self) -> list[tuple[str, str]]:
        """(date, subject) of every frozen issue, newest first."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(issues.c.issue_date, issues.c.subject).order_by(issues.c.issue_date.desc()))]

    def unsubscribed_between(self, first_date: str, before_date: str | None) -> int:
        """Readers (still on file) who unsubscribed on or after `first_date` and before `before_date` (None: up to now)."""
        start = dt.datetime.fromisoformat(first_date).replace(tzinfo=dt.timezone.utc)
        condition = subscribers.c.unsubscribed_at >= start
        if before_date is not None:
            condition &= subscribers.c.unsubscribed_at < dt.datetime.fromisoformat(before_date).replace(
                tzinfo=dt.timezone.utc)
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(subscribers).where(condition)).scalar_one()

    def sent_story_urls(self, before_date: str) -> frozenset[str]:
        """Links of every story in issues dated before `before_date`."""
        query = (
            select(issue_stories.c.url)
            .join(issues, issues.c.id == issue_stories.c.issue_id)
            .where(issues.c.issue_date < before_date)
        )
        with self.engine.connect() as conn:
            return frozenset(conn.execute(query).scalars())

    def recent_stories(self, before_date: str, since_date: str) -> list[tuple[str, dt.datetime, dict]]:
        """(issue date, when it was frozen, story) for every story of the issues dated in [since_date, before_date)."""
        query = (
            select(issues.c.issue_date, issues.c.created_at, issues.c.stories)
            .where(issues.c.issue_date < before_date, issues.c.issue_date >= since_date)
            .order_by(issues.c.issue_date)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(date, as_utc(frozen), story)
                for date, frozen, stories in rows for story in json.loads(stories)]
