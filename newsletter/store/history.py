"""Issues one after another, for reading their results on the desk: pages of dates by keyset, newest first."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from .schema import issues


class IssueHistory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def dates_before(self, before: str | None, limit: int) -> list[str]:
        """Up to `limit` issue dates, newest first, all before `before` (None: from the newest issue).

        A keyset page (issue_date < the last one shown), never OFFSET: every page costs the same."""
        query = select(issues.c.issue_date).order_by(issues.c.issue_date.desc()).limit(limit)
        if before is not None:
            query = query.where(issues.c.issue_date < before)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def date_after(self, day: str) -> str | None:
        """The date of the issue that followed `day`'s, if any."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.min(issues.c.issue_date)).where(issues.c.issue_date > day)).scalar()
