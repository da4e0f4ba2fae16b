"""What readers read: clicks on each story of an issue, counted without keeping who clicked.

NEWSLETTER_TRACKING=anonymous: per story, clicks by readers, clicks by machines (mail scanners,
prefetchers) and unique readers. A reader is known here only as HMAC(salt, issue:reader) under a
random salt of the issue's; once the salt is older than NEWSLETTER_TRACKING_SALT_DAYS (the
database's clock), the hashes are counted into the totals and deleted with the salt, and nothing
left, secret key or not, tells which reader clicked what. A reader who clicks again after that
counts once more in the next salt's period. Place 0 stands for "any story of the issue" (the
issue's unique clickers). NEWSLETTER_TRACKING=individual also keeps who clicked what, when.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select

from .schema import (
    click_history,
    click_readers,
    click_salts,
    click_totals,
    db_epoch_seconds,
    insert_ignoring_duplicates,
    subscribers,
    upsert_insert,
)

ANY_STORY = 0  # the place standing for the whole issue: its unique clickers


@dataclass(frozen=True)
class Click:
    """One followed story link, classified: by a reader, or by a machine on the reader's behalf."""

    issue_id: int
    place: int  # 1 is the lead
    subscriber_id: int
    machine: bool
    at: dt.datetime


@dataclass(frozen=True)
class StoryClicks:
    place: int
    clicks: int  # by readers
    machine_clicks: int
    unique_readers: int


class ClickLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, batch: list[Click], salt_days: int, individual: bool) -> None:
        """Count a batch of clicks in one transaction; with `individual`, keep who clicked too."""
        if not batch:
            return
        with self.engine.begin() as conn:
            self._fold_expired(conn, salt_days)
            self._add_totals(conn, batch)
            readers = [c for c in batch if not c.machine]
            if readers:
                salts = self._salts(conn, {c.issue_id for c in readers})
                rows = {(c.issue_id, place, _reader_hash(salts[c.issue_id], c.issue_id, c.subscriber_id))
                        for c in readers for place in (c.place, ANY_STORY)}
                conn.execute(insert_ignoring_duplicates(self.engine, click_readers),
                             [{"issue_id": i, "place": p, "reader_hash": h} for i, p, h in sorted(rows)])
            if individual:
                self._add_history(conn, batch)

    def _add_totals(self, conn: Connection, batch: list[Click]) -> None:
        human = Counter(key for c in batch if not c.machine for key in ((c.issue_id, c.place), (c.issue_id, ANY_STORY)))
        machine = Counter(key for c in batch if c.machine for key in ((c.issue_id, c.place), (c.issue_id, ANY_STORY)))
        statement = upsert_insert(self.engine, click_totals)
        statement = statement.on_conflict_do_update(
            index_elements=[click_totals.c.issue_id, click_totals.c.place],
            set_={"clicks": click_totals.c.clicks + statement.excluded.clicks,
                  "machine_clicks": click_totals.c.machine_clicks + statement.excluded.machine_clicks},
        )
        keys = sorted(set(human) | set(machine))
        conn.execute(statement, [{"issue_id": issue, "place": place, "clicks": human[(issue, place)],
                                  "machine_clicks": machine[(issue, place)], "unique_readers": 0}
                                 for issue, place in keys])

    def _salts(self, conn: Connection, issue_ids: set[int]) -> dict[int, str]:
        conn.execute(insert_ignoring_duplicates(self.engine, click_salts).values(
            created_epoch=db_epoch_seconds(self.engine)),
            [{"issue_id": issue, "salt": secrets.token_hex(32)} for issue in sorted(issue_ids)])
        rows = conn.execute(select(click_salts.c.issue_id, click_salts.c.salt)
                            .where(click_salts.c.issue_id.in_(sorted(issue_ids)))).all()
        return {issue: salt for issue, salt in rows}

    def _add_history(self, conn: Connection, batch: list[Click]) -> None:
        # A reader forgotten between the click and this write has no history to keep.
        known = set(conn.execute(select(subscribers.c.id)
                                 .where(subscribers.c.id.in_(sorted({c.subscriber_id for c in batch})))).scalars())
        rows = [{"subscriber_id": c.subscriber_id, "issue_id": c.issue_id, "place": c.place,
                 "machine": c.machine, "clicked_at": c.at} for c in batch if c.subscriber_id in known]
        if rows:
            conn.execute(click_history.insert(), rows)

    def fold_expired_salts(self, salt_days: int) -> int:
        """Count and delete the hashed readers of every salt past its days; how many salts were folded."""
        with self.engine.begin() as conn:
            return self._fold_expired(conn, salt_days)

    def _fold_expired(self, conn: Connection, salt_days: int) -> int:
        cutoff = db_epoch_seconds(self.engine) - salt_days * 86400
        expired = list(conn.execute(select(click_salts.c.issue_id)
                                    .where(click_salts.c.created_epoch < cutoff).with_for_update()).scalars())
        for issue_id in expired:
            counts = conn.execute(select(click_readers.c.place, func.count())
                                  .where(click_readers.c.issue_id == issue_id)
                                  .group_by(click_readers.c.place)).all()
            statement = upsert_insert(self.engine, click_totals)
            statement = statement.on_conflict_do_update(
                index_elements=[click_totals.c.issue_id, click_totals.c.place],
                set_={"unique_readers": click_totals.c.unique_readers + statement.excluded.unique_readers})
            if counts:
                conn.execute(statement, [{"issue_id": issue_id, "place": place, "clicks": 0, "machine_clicks": 0,
                                          "unique_readers": count} for place, count in counts])
            conn.execute(click_readers.delete().where(click_readers.c.issue_id == issue_id))
            conn.execute(click_salts.delete().where(click_salts.c.issue_id == issue_id))
        return len(expired)

    def by_story(self, issue_id: int) -> dict[int, StoryClicks]:
        """{place: StoryClicks} of one issue, place 0 being the issue as a whole (its unique clickers)."""
        live = (select(click_readers.c.place, func.count().label("live"))
                .where(click_readers.c.issue_id == issue_id).group_by(click_readers.c.place).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(click_totals.c.place, click_totals.c.clicks, click_totals.c.machine_clicks,
                       (click_totals.c.unique_readers + func.coalesce(live.c.live, 0)))
                .select_from(click_totals.outerjoin(live, live.c.place == click_totals.c.place))
                .where(click_totals.c.issue_id == issue_id)
            ).all()
        return {place: StoryClicks(place, clicks, machine, unique) for place, clicks, machine, unique in rows}

    def history_of(self, subscriber_id: int) -> list[tuple[int, int, bool, dt.datetime]]:
        """(issue id, place, machine, when) of every click a reader made (individual tracking only)."""
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(
                select(click_history.c.issue_id, click_history.c.place, click_history.c.machine,
                       click_history.c.clicked_at)
                .where(click_history.c.subscriber_id == subscriber_id).order_by(click_history.c.id))]

    def drop_history_before(self, before: dt.datetime) -> int:
        """Delete individual click history older than `before` (the counts stay); how many rows went."""
        with self.engine.begin() as conn:
            return conn.execute(click_history.delete().where(click_history.c.clicked_at < before)).rowcount

    def forget(self, conn: Connection, subscriber_id: int) -> None:
        """Erase a reader's click history (in the caller's transaction: `subscribers forget`)."""
        conn.execute(click_history.delete().where(click_history.c.subscriber_id == subscriber_id))

    def forget_many(self, conn: Connection, subscriber_ids: list[int]) -> None:
        """Erase these readers' click history (in the caller's transaction: unconfirmed readers expiring)."""
        conn.execute(click_history.delete().where(click_history.c.subscriber_id.in_(subscriber_ids)))


def _reader_hash(salt: str, issue_id: int, subscriber_id: int) -> str:
    return hmac.new(bytes.fromhex(salt), f"{issue_id}:{subscriber_id}".encode("ascii"), hashlib.sha256).hexdigest()
