"""The desk's first page (how today's issue stands) and the audit log (who did what, when)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...config import Settings
from ...store.database import Store
from ...store.editors import EditorSession
from ..pages import GET
from .access import DESK, Desk, current_editor

AUDIT_ROWS = 200


@dataclass(frozen=True)
class DeskStatus:
    """What the first page shows of today's issue."""

    issue_date: str
    frozen: bool
    approved_by: str | None
    approved_at: dt.datetime | None
    counts: dict[str, int]


def desk_status(settings: Settings, store: Store) -> DeskStatus:
    issue_date = dt.datetime.now(settings.zone).date().isoformat()
    issue = store.get_issue(issue_date)
    approval = store.approvals.of(issue_date)
    counts = store.log.delivery_counts(issue.id) if issue is not None else {}
    return DeskStatus(issue_date, issue is not None, approval.approved_by if approval else None,
                      approval.approved_at if approval else None, counts)


def routes(desk: Desk) -> APIRouter:
    router = APIRouter()

    @router.api_route(DESK, methods=GET)
    async def front_page(session: EditorSession = Depends(current_editor)) -> Response:
        status = await run_in_threadpool(desk_status, desk.settings, desk.store)
        return desk.page("home", session, status=status)

    @router.api_route(f"{DESK}/audit", methods=GET)
    async def audit_page(session: EditorSession = Depends(current_editor)) -> Response:
        entries = await run_in_threadpool(desk.editors.audit, AUDIT_ROWS)
        return desk.page("audit", session, entries=entries, zone=desk.settings.zone)

    return router
