"""Editors' approvals of the day's issue, and the frozen issue an approval may have to give back."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, delete, exists, select

from .schema import approvals, deliveries, delivery_totals, issues, upsert_insert, utcnow


@dataclass(frozen=True)
class Approval:
    issue_date: str
    html_sha256: str
    editorial_version: str
    approved_by: str
    approved_at: dt.datetime


class ApprovalLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, issue_date: str, html_sha256: str, editorial_version: str, approved_by: str) -> Approval:
        """Record (or renew) the approval of one day's frozen issue."""
        values = {"issue_date": issue_date, "html_sha256": html_sha256, "editorial_version": editorial_version,
                  "approved_by": approved_by[:200], "approved_at": utcnow()}
        statement = upsert_insert(self.engine, approvals)
        statement = statement.on_conflict_do_update(index_elements=[approvals.c.issue_date],
                                                    set_={k: v for k, v in values.items() if k != "issue_date"})
        with self.engine.begin() as conn:
            conn.execute(statement, values)
        found = self.of(issue_date)
        assert found is not None
        return found

    def of(self, issue_date: str) -> Approval | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(approvals).where(approvals.c.issue_date == issue_date)).first()
        return Approval(*row) if row else None

    def withdraw(self, issue_date: str) -> bool:
        """Take the approval back, and unfreeze the issue if nobody has been sent it yet; whether one was withdrawn.

        Unfrozen, the issue is built again from the changed editorial file when it is next approved.
        """
        with self.engine.begin() as conn:
            withdrawn = conn.execute(delete(approvals).where(approvals.c.issue_date == issue_date)).rowcount
            issue_id = conn.execute(select(issues.c.id).where(issues.c.issue_date == issue_date)).scalar()
            if issue_id is not None:
                started = conn.execute(select(exists().where(deliveries.c.issue_id == issue_id))).scalar() or \
                    conn.execute(select(exists().where(delivery_totals.c.issue_id == issue_id))).scalar()
                if not started:
                    conn.execute(delete(issues).where(issues.c.id == issue_id))
        return bool(withdrawn)
