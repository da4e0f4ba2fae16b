"""The delivery log: one row per (issue, subscriber), claimed, settled, retried.

Runs claim subscribers with compare-and-set writes (INSERT … ON CONFLICT DO
NOTHING, conditional UPDATEs), heart-beat while they send, and take over the
claims of a run that stopped heart-beating. A claim is a lease: before each
message the run checks the claim is still its own, so a run that stalled past
the stale time and lost its claims to another run sends none of them.
Portable to PostgreSQL: no SQLite-only locking. Heartbeats and staleness are
read on the database's clock, so senders on machines whose clocks disagree
still agree on who is alive (SQLite lives on one machine: its clock is theirs).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from enum import Enum

from sqlalchemy import Engine, bindparam, func, select, union_all, update

from .schema import (
    Outcome,
    Status,
    Subscriber,
    deliveries,
    delivery_totals,
    insert_ignoring_duplicates,
    issues,
    upsert_insert,
    send_runs,
    subscribers,
    utcnow,
)


# Built once: on the hot path, constructing and cache-keying the statement
# cost more than SQLite executing it.
SETTLE = (
    update(deliveries)
    .where(deliveries.c.issue_id == bindparam("issue"),
           deliveries.c.subscriber_id.in_(bindparam("ids", expanding=True)),
           deliveries.c.run_id == bindparam("run"))
    .values(outcome=bindparam("outcome"), reply=bindparam("reply"), attempts=deliveries.c.attempts + 1,
            updated_at=bindparam("now"))
)
# Which rows of a SETTLE were this run's (asked only when it matched fewer rows than it was given).
SETTLED_HERE = select(deliveries.c.subscriber_id).where(
    deliveries.c.issue_id == bindparam("issue"), deliveries.c.subscriber_id.in_(bindparam("ids", expanding=True)),
    deliveries.c.run_id == bindparam("run"), deliveries.c.outcome == bindparam("outcome"))
# The claims and statuses of the readers about to be sent to. Only the primary key is in the WHERE
# clause: with an outcome or run condition there, PostgreSQL's planner (misled by a young table's
# statistics) scanned every row of the issue through the outcome index, 6 ms a round at 20,000.
CLEARED = (
    select(deliveries.c.subscriber_id, deliveries.c.run_id, deliveries.c.outcome, subscribers.c.status)
    .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
    .where(deliveries.c.issue_id == bindparam("issue"),
           deliveries.c.subscriber_id.in_(bindparam("ids", expanding=True)))
)


# Why a reader was not cleared: no longer active, or no longer this run's.
SEND_CHECK = (
    select(subscribers.c.id, subscribers.c.status, deliveries.c.run_id, deliveries.c.outcome)
    .select_from(subscribers.outerjoin(
        deliveries,
        (deliveries.c.subscriber_id == subscribers.c.id) & (deliveries.c.issue_id == bindparam("issue"))))
    .where(subscribers.c.id.in_(bindparam("ids", expanding=True)))
)


OTHER_REPLIES = "(other replies)"


def insert_adding_counts(engine: Engine):
    """INSERT into delivery_totals that adds to an existing row (folding twice counts once per row folded)."""
    statement = upsert_insert(engine, delivery_totals)
    return statement.on_conflict_do_update(
        index_elements=[delivery_totals.c.issue_id, delivery_totals.c.outcome, delivery_totals.c.reply],
        set_={"count": delivery_totals.c.count + statement.excluded["count"]},
    )


class Clearance(str, Enum):
    """What the last look before sending says about one reader."""

    send = "send"
    withdrawn = "withdrawn"  # unsubscribed, bounced or forgotten since the claim
    lost = "lost"  # the claim went to another run: this run stalled past the stale time


class DeliveryLog:
    """Who has had which issue, and which run is sending to whom right now."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._database_clock = engine.dialect.name == "postgresql"

    def _now(self):
        """The time of leases and heartbeats: the database server's clock on PostgreSQL."""
        return func.now() if self._database_clock else utcnow()

    def start_run(self, issue_id: int, run_id: str, owner: str) -> None:
        now = self._now()
        with self.engine.begin() as conn:
            conn.execute(send_runs.insert().values(run_id=run_id, issue_id=issue_id, owner=owner,
                                                   started_at=now, heartbeat_at=now))

    def heartbeat(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(send_runs).where(send_runs.c.run_id == run_id).values(heartbeat_at=self._now()))

    def finish_run(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(send_runs).where(send_runs.c.run_id == run_id).values(finished_at=self._now()))

    def _abandoned_runs(self, stale_after: dt.timedelta):
        """Runs that will never settle their claims: finished, or silent (killed, stalled, machine lost)."""
        return select(send_runs.c.run_id).where(
            send_runs.c.finished_at.is_not(None) | (send_runs.c.heartbeat_at < self._now() - stale_after)
        )

    def claim_fresh(self, issue_id: int, run_id: str, after_id: int, limit: int) -> tuple[list[Subscriber], int]:
        """Claim up to `limit` active subscribers after `after_id` who have no delivery row for this issue.

        Returns the subscribers this run now owns and the last id it saw.
        Only readers nobody has claimed are read: the other runs' claims are
        skipped by the query, not fetched and fought over. On PostgreSQL the
        rows are locked FOR UPDATE SKIP LOCKED, so runs claiming at the same
        moment take different readers; everywhere the insert is a
        compare-and-set (ON CONFLICT DO NOTHING … RETURNING), so two runs
        never own one reader.
        """
        page = (
            select(subscribers.c.id, subscribers.c.email, subscribers.c.name)
            .outerjoin(deliveries,
                       (deliveries.c.subscriber_id == subscribers.c.id) & (deliveries.c.issue_id == issue_id))
            .where(subscribers.c.id > after_id, subscribers.c.status == Status.active.value,
                   deliveries.c.subscriber_id.is_(None))
            .order_by(subscribers.c.id)
            .limit(limit)
            .with_for_update(of=subscribers, skip_locked=True)  # PostgreSQL only; SQLite has no row locks
        )
        now = utcnow()
        with self.engine.begin() as conn:
            rows = conn.execute(page).all()
            if not rows:
                return [], after_id
            owned = set(conn.execute(
                insert_ignoring_duplicates(self.engine, deliveries).returning(deliveries.c.subscriber_id),
                [{"issue_id": issue_id, "subscriber_id": r.id, "outcome": Outcome.sending.value, "run_id": run_id,
                  "attempts": 0, "reply": "", "updated_at": now} for r in rows],
            ).scalars())
        return [Subscriber(r.id, r.email, r.name) for r in rows if r.id in owned], rows[-1].id

    def claim_retries(self, issue_id: int, run_id: str, after_id: int, limit: int,
                      stale_after: dt.timedelta = dt.timedelta(seconds=30)) -> tuple[list[Subscriber], int]:
        """Claim readers to try again: transient failures of earlier runs, and claims of dead runs.

        A dead run is one that finished, or stopped heart-beating `stale_after`
        ago on the database's clock (killed, stalled, its machine lost). This
        run's own failures are not taken again: it has retried them already.
        """
        retryable = (
            ((deliveries.c.outcome == Outcome.failed.value) & (deliveries.c.run_id != run_id))
            | ((deliveries.c.outcome == Outcome.sending.value)
               & deliveries.c.run_id.in_(self._abandoned_runs(stale_after)))
        )
        page = (
            select(subscribers.c.id, subscribers.c.email, subscribers.c.name)
            .join(deliveries, (deliveries.c.subscriber_id == subscribers.c.id) & (deliveries.c.issue_id == issue_id))
            .where(subscribers.c.id > after_id, subscribers.c.status == Status.active.value, retryable)
            .order_by(subscribers.c.id)
            .limit(limit)
            .with_for_update(of=deliveries, skip_locked=True)
        )
        with self.engine.begin() as conn:
            rows = conn.execute(page).all()
            if not rows:
                return [], after_id
            owned = set(conn.execute(
                update(deliveries)
                .where(deliveries.c.issue_id == issue_id, deliveries.c.subscriber_id.in_([r.id for r in rows]),
                       retryable)
                .values(outcome=Outcome.sending.value, run_id=run_id, updated_at=utcnow())
                .returning(deliveries.c.subscriber_id)
            ).scalars())
        return [Subscriber(r.id, r.email, r.name) for r in rows if r.id in owned], rows[-1].id

    def claimed_by_others(self, issue_id: int, run_id: str) -> int:
        """Subscribers of this issue that another run has claimed and not yet settled."""
        query = select(func.count()).select_from(deliveries).where(
            deliveries.c.issue_id == issue_id,
            deliveries.c.outcome == Outcome.sending.value,
            deliveries.c.run_id != run_id,
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def record_outcomes(self, issue_id: int, run_id: str, outcomes: list[tuple[int, Outcome, str]],
                        upcoming: list[int] | None = None) -> tuple[set[int], dict[int, Clearance]]:
        """Write a batch of (subscriber_id, outcome, server reply) and look at the next readers, in one transaction.

        Returns the subscribers whose outcome was credited (the claim was still
        this run's) and, for each of `upcoming`, whether it may be sent to now.
        """
        if not outcomes and not upcoming:
            return set(), {}
        now = utcnow()
        credited: set[int] = set()
        # One UPDATE per distinct (outcome, reply): nearly always a single
        # statement for the whole group, however many rows it settles.
        groups: dict[tuple[Outcome, str], list[int]] = defaultdict(list)
        for subscriber_id, outcome, reply in outcomes:
            groups[outcome, reply[:500]].append(subscriber_id)
        with self.engine.begin() as conn:
            for (outcome, reply), ids in groups.items():
                values = {"issue": issue_id, "run": run_id, "ids": ids, "outcome": outcome.value}
                if conn.execute(SETTLE, {**values, "reply": reply, "now": now}).rowcount == len(ids):
                    credited.update(ids)
                else:  # some claims went to another run meanwhile: credit only this run's
                    credited.update(conn.execute(SETTLED_HERE, values).scalars())
            bounced = [sid for sid, outcome, _ in outcomes if outcome is Outcome.refused and sid in credited]
            if bounced:  # a hard bounce: nothing more goes to them until reactivated
                conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id.in_(bounced), subscribers.c.status == Status.active.value)
                    .values(status=Status.bounced.value, updated_at=now)
                )
            if not upcoming:
                return credited, {}
            cleared = {sid for sid, owner, outcome, status in conn.execute(CLEARED, {"issue": issue_id, "ids": upcoming})
                       if owner == run_id and outcome == Outcome.sending.value and status == Status.active.value}
            clearances = {sid: Clearance.send if sid in cleared else Clearance.withdrawn for sid in upcoming}
            if len(cleared) < len(upcoming):  # rare: say which were lost to another run
                refused = [sid for sid in upcoming if sid not in cleared]
                for sid, _status, owner, outcome in conn.execute(SEND_CHECK, {"issue": issue_id, "ids": refused}):
                    if owner != run_id or outcome != Outcome.sending.value:
                        clearances[sid] = Clearance.lost
        return credited, clearances

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

    def _outcome_groups(self, issue_id: int, exclude_sent: bool = False):
        """(outcome, reply, count) of an issue, from its per-reader rows and from folded totals alike."""
        rows = select(deliveries.c.outcome, deliveries.c.reply, func.count().label("n")) \
            .where(deliveries.c.issue_id == issue_id).group_by(deliveries.c.outcome, deliveries.c.reply)
        folded = select(delivery_totals.c.outcome, delivery_totals.c.reply, delivery_totals.c.count.label("n")) \
            .where(delivery_totals.c.issue_id == issue_id)
        if exclude_sent:
            rows = rows.where(deliveries.c.outcome != Outcome.sent.value)
            folded = folded.where(delivery_totals.c.outcome != Outcome.sent.value)
        return union_all(rows, folded).subquery()

    def common_replies(self, issue_id: int, limit: int = 5) -> list[tuple[str, str, int]]:
        """(outcome, server reply, count) for what did not go through, most frequent first."""
        groups = self._outcome_groups(issue_id, exclude_sent=True)
        total = func.sum(groups.c.n)
        query = (select(groups.c.outcome, groups.c.reply, total).group_by(groups.c.outcome, groups.c.reply)
                 .order_by(total.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [(outcome, reply, int(n)) for outcome, reply, n in conn.execute(query)]

    def delivery_counts(self, issue_id: int) -> dict[str, int]:
        groups = self._outcome_groups(issue_id)
        query = select(groups.c.outcome, func.sum(groups.c.n)).group_by(groups.c.outcome)
        with self.engine.connect() as conn:
            return {outcome: int(n) for outcome, n in conn.execute(query)}

    def fold(self, issue_id: int, keep_replies: int = 20) -> int:
        """Replace an issue's per-reader rows by its totals; returns how many rows went.

        Per outcome, the `keep_replies` commonest server replies are kept as
        they were and the rest are summed under OTHER_REPLIES, so every count
        stays exact. One transaction: a crash leaves the issue as it was.
        """
        groups = select(deliveries.c.outcome, deliveries.c.reply, func.count().label("n")) \
            .where(deliveries.c.issue_id == issue_id).group_by(deliveries.c.outcome, deliveries.c.reply) \
            .order_by(deliveries.c.outcome, func.count().desc())
        with self.engine.begin() as conn:
            totals: dict[tuple[str, str], int] = defaultdict(int)
            kept: dict[str, int] = defaultdict(int)
            for outcome, reply, n in conn.execute(groups):
                if kept[outcome] < keep_replies:
                    kept[outcome] += 1
                    totals[outcome, reply] += n
                else:
                    totals[outcome, OTHER_REPLIES] += n
            if totals:
                conn.execute(insert_adding_counts(self.engine),
                             [{"issue_id": issue_id, "outcome": o, "reply": r, "count": n}
                              for (o, r), n in totals.items()])
            removed = conn.execute(deliveries.delete().where(deliveries.c.issue_id == issue_id)).rowcount
            conn.execute(update(issues).where(issues.c.id == issue_id).values(log_folded_at=utcnow()))
        return removed
