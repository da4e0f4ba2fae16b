"""How the list grew: signups, confirmations, unsubscribes and bounces, counted where they happen.

The subscribers table tells how readers stand now, not how they got there: a reader who signs up
again overwrites their dates, a forgotten reader takes them away, a bounce has none. So each change
is counted in the transaction that makes it, into the quarter hour of the database's clock it
happened in (the clock every process and machine shares). Counts only, never a reader: nothing here
needs forgetting, and a past day's figures stay what they were. Quarter hours, so that the days of
any time zone (offsets of whole, half and three-quarter hours) are made of whole ones when read.

What counts: a signup is an address asking to join that was neither pending nor active (new, or
back after leaving or bouncing); a confirmation makes a pending reader active; an unsubscribe (a
complaint too) and a bounce take an active reader off the list. So confirmations − unsubscribes −
bounces is the day's change in active readers by readers' own doing and by reports; imports and
erasures by the operator are not in it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select, text

from .schema import db_epoch_seconds, list_changes

QUARTER_SECONDS = 900


class Change(str, Enum):
    signup = "signup"
    confirmation = "confirmation"
    unsubscribe = "unsubscribe"
    bounce = "bounce"


# One statement per dialect, in plain SQL: the sender's group commits run it on their own driver
# connections (sqlite3, psycopg), outside SQLAlchemy's.
_COUNT = {
    "sqlite": "INSERT INTO list_changes (quarter, kind, count) "
              "VALUES (CAST((julianday('now') - 2440587.5) * 86400.0 / 900 AS INTEGER), :kind, :readers) "
              "ON CONFLICT (quarter, kind) DO UPDATE SET count = list_changes.count + excluded.count",
    "postgresql": "INSERT INTO list_changes (quarter, kind, count) "
                  "VALUES (CAST(floor(extract(epoch FROM now()) / 900) AS integer), :kind, :readers) "
                  "ON CONFLICT (quarter, kind) DO UPDATE SET count = list_changes.count + excluded.count",
}


def counting_statement(engine: Engine) -> str:
    """The SQL that adds `readers` to this quarter hour's `kind`, for the engine's driver itself (named
    parameters: sqlite3 takes :name as written, psycopg %(name)s)."""
    if engine.dialect.name == "sqlite":
        return _COUNT["sqlite"]
    return str(text(_COUNT[engine.dialect.name]).compile(dialect=engine.dialect))


def count_change(conn: Connection, change: Change, readers: int = 1) -> None:
    """Count `readers` changes of this kind now, in the caller's transaction (so they count if it commits)."""
    if readers > 0:
        conn.execute(text(_COUNT[conn.dialect.name]), {"kind": change.value, "readers": readers})


@dataclass(frozen=True)
class DayChanges:
    """One day of the list, in the newsroom's time zone."""

    day: dt.date
    signups: int = 0
    confirmations: int = 0
    unsubscribes: int = 0
    bounces: int = 0

    @property
    def net(self) -> int:
        """The change in active readers: those who joined less those who left or bounced."""
        return self.confirmations - self.unsubscribes - self.bounces


_FIELDS = {Change.signup.value: "signups", Change.confirmation.value: "confirmations",
           Change.unsubscribe.value: "unsubscribes", Change.bounce.value: "bounces"}


def _quarter(day: dt.date, zone: ZoneInfo) -> int:
    """The first quarter hour of `day` in `zone`."""
    return int(dt.datetime.combine(day, dt.time(), zone).timestamp()) // QUARTER_SECONDS


class ListChanges:
    """The counts, read per day of a time zone."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def today(self, zone: ZoneInfo) -> dt.date:
        """Today in `zone`, by the database's clock (the one the counts were made with)."""
        with self.engine.connect() as conn:
            now = float(conn.execute(select(db_epoch_seconds(self.engine))).scalar_one())
        return dt.datetime.fromtimestamp(now, zone).date()

    def per_day(self, first: dt.date, last: dt.date, zone: ZoneInfo) -> list[DayChanges]:
        """Every day from `first` to `last` in `zone`, oldest first; a day without changes has zeros."""
        query = (select(list_changes.c.quarter, list_changes.c.kind, list_changes.c.count)
                 .where(list_changes.c.quarter >= _quarter(first, zone),
                        list_changes.c.quarter < _quarter(last + dt.timedelta(days=1), zone)))
        days = {first + dt.timedelta(days=n): {} for n in range((last - first).days + 1)}
        with self.engine.connect() as conn:
            for quarter, kind, count in conn.execute(query):
                day = dt.datetime.fromtimestamp(quarter * QUARTER_SECONDS, zone).date()
                field = _FIELDS.get(kind)
                if field is not None and day in days:
                    days[day][field] = days[day].get(field, 0) + count
        return [DayChanges(day, **counts) for day, counts in days.items()]
