"""What readers choose for themselves on their manage page: a pause, a new address, a copy of their data.

A pause ends on a day counted on the database's date (every machine of a shared store agrees) and is
compared with issues' dates by the send, never with a clock. A new address is only written once its
owner confirms it: until then the change waits in address_changes, and the old address keeps receiving.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from .schema import (
    Status,
    Subscriber,
    address_changes,
    as_utc,
    click_history,
    deliveries,
    feedback,
    issues,
    subscribers,
    utcnow,
)

PAUSE_WEEKS = (1, 2, 4)


class ChangeOutcome(str, Enum):
    changed = "changed"
    unknown = "unknown"  # forged, already used, or replaced by a later request
    expired = "expired"
    taken = "taken"  # the address came onto the list meanwhile: nothing changed


@dataclass(frozen=True)
class PendingChange:
    id: int
    subscriber_id: int
    new_email: str
    expired: bool


@dataclass(frozen=True)
class ChangeResult:
    outcome: ChangeOutcome
    subscriber: Subscriber | None = None


class ReaderChoices:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgresql = engine.dialect.name == "postgresql"

    def _date_in(self, days: int):
        """The database's date `days` from today, as issues write theirs (YYYY-MM-DD)."""
        if self._postgresql:
            return func.to_char(func.current_date() + days, "YYYY-MM-DD")
        return func.date("now", f"+{days} days")

    def _older_than(self, column, age: dt.timedelta):
        if self._postgresql:
            return column < func.now() - age
        return func.julianday(column) < func.julianday("now", f"-{age.total_seconds():.3f} seconds")

    # Pauses ----------------------------------------------------------------

    def pause(self, subscriber_id: int, weeks: int) -> str | None:
        """Pause an active reader for `weeks`; the first issue date they receive again, or None when not active."""
        if weeks not in PAUSE_WEEKS:
            raise ValueError(f"a pause is {PAUSE_WEEKS} weeks, not {weeks}")
        with self.engine.begin() as conn:
            return conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.status == Status.active.value)
                .values(paused_until=self._date_in(7 * weeks), updated_at=utcnow())
                .returning(subscribers.c.paused_until)
            ).scalar()

    def resume(self, subscriber_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                         .values(paused_until=None, updated_at=utcnow()))

    def paused_until(self, subscriber_id: int) -> str | None:
        """The day a reader's pause ends, while it has not (by the database's date)."""
        with self.engine.connect() as conn:
            return conn.execute(select(subscribers.c.paused_until).where(
                subscribers.c.id == subscriber_id, subscribers.c.paused_until > self._date_in(0))).scalar()

    # Address changes -------------------------------------------------------

    def request_change(self, subscriber_id: int, new_email: str) -> int | None:
        """Record a reader's new address, waiting for its owner; the change's id, or None when the address is
        already on the list (the caller answers the same either way). A later request replaces an earlier one."""
        with self.engine.begin() as conn:
            if conn.execute(select(subscribers.c.id).where(subscribers.c.email == new_email)).first():
                return None
            conn.execute(address_changes.delete().where(address_changes.c.subscriber_id == subscriber_id))
            return conn.execute(address_changes.insert().values(
                subscriber_id=subscriber_id, new_email=new_email, created_at=utcnow())
                .returning(address_changes.c.id)).scalar_one()

    def pending_change(self, change_id: int, max_age: dt.timedelta) -> PendingChange | None:
        """A change waiting for confirmation (for its page), None when there is none of that id."""
        query = select(address_changes.c.id, address_changes.c.subscriber_id, address_changes.c.new_email,
                       self._older_than(address_changes.c.created_at, max_age)).where(address_changes.c.id == change_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return PendingChange(row[0], row[1], row[2], bool(row[3])) if row else None

    def apply_change(self, change_id: int, max_age: dt.timedelta) -> ChangeResult:
        """Make a confirmed new address the reader's own. The row goes whatever happens: a link works once."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(address_changes.c.subscriber_id, address_changes.c.new_email,
                       self._older_than(address_changes.c.created_at, max_age))
                .where(address_changes.c.id == change_id)).first()
            # Deleted first, counted by rowcount: of two presses at once, one only goes on.
            if row is None or conn.execute(address_changes.delete().where(
                    address_changes.c.id == change_id)).rowcount != 1:
                return ChangeResult(ChangeOutcome.unknown)
            subscriber_id, new_email, expired = row
            if expired:
                return ChangeResult(ChangeOutcome.expired)
            if conn.execute(select(subscribers.c.id).where(subscribers.c.email == new_email)).first():
                return ChangeResult(ChangeOutcome.taken)
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                         .values(email=new_email, updated_at=utcnow()))
            moved = conn.execute(select(subscribers.c.id, subscribers.c.email, subscribers.c.name,
                                        subscribers.c.status).where(subscribers.c.id == subscriber_id)).first()
        return ChangeResult(ChangeOutcome.changed, Subscriber(*moved)) if moved else \
            ChangeResult(ChangeOutcome.unknown)

    def cancel_change(self, change_id: int) -> bool:
        """Drop a change still waiting for its new address (which refused our mail); whether it was waiting."""
        with self.engine.begin() as conn:
            return conn.execute(address_changes.delete().where(address_changes.c.id == change_id)).rowcount == 1

    def safely_apply_change(self, change_id: int, max_age: dt.timedelta) -> ChangeResult:
        """apply_change, with an address taken at the very same moment (the unique key says so) as `taken`."""
        try:
            return self.apply_change(change_id, max_age)
        except IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(address_changes.delete().where(address_changes.c.id == change_id))
            return ChangeResult(ChangeOutcome.taken)

    # The reader's data -----------------------------------------------------

    def export(self, subscriber_id: int, with_clicks: bool) -> dict | None:
        """Everything kept about a reader, for them (JSON-ready); None when they are not on file."""
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
            if row is None:
                return None
            reader = row._mapping
            reports = conn.execute(select(feedback.c.kind, feedback.c.issue_date, feedback.c.received_at)
                                   .where(feedback.c.subscriber_id == subscriber_id)
                                   .order_by(feedback.c.received_at)).all()
            sent = conn.execute(select(issues.c.issue_date, deliveries.c.outcome, deliveries.c.updated_at)
                                .join(issues, issues.c.id == deliveries.c.issue_id)
                                .where(deliveries.c.subscriber_id == subscriber_id)
                                .order_by(issues.c.issue_date)).all()
            clicks = conn.execute(select(issues.c.issue_date, click_history.c.place, click_history.c.machine,
                                         click_history.c.clicked_at)
                                  .join(issues, issues.c.id == click_history.c.issue_id)
                                  .where(click_history.c.subscriber_id == subscriber_id)
                                  .order_by(click_history.c.clicked_at)).all() if with_clicks else []
            change = conn.execute(select(address_changes.c.new_email, address_changes.c.created_at)
                                  .where(address_changes.c.subscriber_id == subscriber_id)).first()
        history = [{"status": "signed_up", "at": _iso(reader["created_at"])}]
        if reader["confirmed_at"]:
            history.append({"status": "confirmed", "at": _iso(reader["confirmed_at"])})
        history += [{"status": {"hard": "bounced", "complaint": "complained"}.get(kind, f"report_{kind}"),
                     "issue": day, "at": _iso(at)} for kind, day, at in reports]
        if reader["unsubscribed_at"]:
            history.append({"status": "unsubscribed", "at": _iso(reader["unsubscribed_at"])})
        history.sort(key=lambda event: event["at"] or "")
        data = {
            "email": reader["email"], "name": reader["name"], "status": reader["status"],
            "paused_until": reader["paused_until"],
            "dates": {key: _iso(reader[key]) for key in
                      ("created_at", "confirmation_sent_at", "confirmed_at", "unsubscribed_at", "updated_at")},
            "status_history": history,
            "deliveries": [{"issue": day, "outcome": outcome, "at": _iso(at)} for day, outcome, at in sent],
            "pending_address_change": {"new_email": change[0], "requested_at": _iso(change[1])} if change else None,
        }
        if with_clicks:
            data["clicks"] = [{"issue": day, "story": place, "by_machine": bool(machine), "at": _iso(at)}
                              for day, place, machine, at in clicks]
        return data


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = as_utc(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def export_json(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
