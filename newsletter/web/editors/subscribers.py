"""Readers on the desk: find them by address, read one reader's history, act for them, export the list.

Reading is a GET (search, a reader's page, the confirmation page of an action); acting is a POST from
that confirmation page, so each action is two presses and works without JavaScript. Every action
goes to the audit log naming the reader "#id address", except forgetting: its line keeps "#id"
alone, and forgetting (here, on the reader's manage page or from the command line) takes the address
out of the earlier lines too: the log must not keep what forgetting erased. The export is a POST too
(the session's CSRF token: no link or prefetch can start one), streamed from keyset pages of the
store, its cells safe to open in a spreadsheet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from enum import Enum

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...config import Tracking
from ...mail.confirmations import ConfirmationMailer
from ...store.database import Status
from ...store.editors import EditorSession, reader_detail
from ...store.reader_records import ReaderRecords
from ...store.subscribers import export_lines, normalise_search
from ...tokens import Tokens
from ..pages import GET
from .access import DESK, Desk, current_editor, form_fields

READERS = f"{DESK}/readers"
MAX_SEARCH_LENGTH = 320
# As a signup: one confirmation email an address per this long, however often it is asked for.
RESEND_AFTER = dt.timedelta(minutes=10)
CHUNK_CHARACTERS = 64 * 1024


class ReaderAction(str, Enum):
    remove = "remove"  # unsubscribe, as the reader's own link does
    forget = "forget"  # erase everything, as the manage page's "forget" does
    resend = "resend"  # the confirmation link again, to a pending reader


def status_of(value: str | None) -> Status | None:
    """The status filter of a form: one of the statuses, or None for every reader."""
    try:
        return Status(value) if value else None
    except ValueError:
        return None


def action_of(value: str) -> ReaderAction:
    """The action a path names; any other is a page that does not exist."""
    try:
        return ReaderAction(value)
    except ValueError:
        raise HTTPException(404) from None


def page_key(value: str | None) -> int:
    """The `after` of a results page: the last id of the page before (0: the first page)."""
    return int(value) if value and value.isdigit() and len(value) < 19 else 0


def in_chunks(lines: Iterator[str], size: int = CHUNK_CHARACTERS) -> Iterator[str]:
    """Lines gathered into pieces of about `size` characters: each piece the server sends is one step
    of the iterator in a worker thread, so a line each would cost a thread hop per reader."""
    piece: list[str] = []
    length = 0
    for line in lines:
        piece.append(line)
        length += len(line)
        if length >= size:
            yield "".join(piece)
            piece, length = [], 0
    if piece:
        yield "".join(piece)


def routes(desk: Desk) -> APIRouter:
    router = APIRouter()
    records = ReaderRecords(desk.store.engine)
    tokens = Tokens(desk.settings.secret_key, desk.settings.confirm_max_age_seconds)
    mailer = ConfirmationMailer(desk.settings, desk.store)
    with_clicks = desk.settings.tracking is Tracking.individual

    @router.api_route(READERS, methods=GET)
    async def search(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        params = request.query_params
        text = normalise_search(params.get("q", "")[:MAX_SEARCH_LENGTH])
        status = status_of(params.get("status"))
        found = await run_in_threadpool(records.search, text, status, page_key(params.get("after")))
        return desk.page("readers", session, part="readers", q=text, status=status.value if status else "",
                         found=found, statuses=[s.value for s in Status], done=params.get("done", ""),
                         zone=desk.settings.zone)

    @router.post(f"{READERS}.csv")
    async def export(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        status = status_of((await form_fields(request)).get("status"))
        await desk.record(session, "readers-exported", status.value if status else "")
        lines = export_lines(desk.store, status, for_spreadsheets=True)
        name = f"readers-{status.value if status else 'all'}-{dt.datetime.now(desk.settings.zone).date()}.csv"
        return StreamingResponse(in_chunks(lines), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @router.api_route(READERS + "/{subscriber_id:int}", methods=GET)
    async def reader_page(subscriber_id: int, request: Request,
                          session: EditorSession = Depends(current_editor)) -> Response:
        record = await run_in_threadpool(records.record, subscriber_id, with_clicks)
        if record is None:
            return desk.page("reader_gone", session, 404, part="readers")
        paused_until = await run_in_threadpool(desk.store.choices.paused_until, subscriber_id)
        return desk.page("reader", session, part="readers", reader=record, paused_until=paused_until,
                         with_clicks=with_clicks, done=request.query_params.get("done", ""), zone=desk.settings.zone)

    @router.api_route(READERS + "/{subscriber_id:int}/{action}", methods=GET)
    async def confirm_page(subscriber_id: int, action: str,
                           session: EditorSession = Depends(current_editor)) -> Response:
        action = action_of(action)
        reader = await run_in_threadpool(desk.store.subscriber_by_id, subscriber_id)
        if reader is None:
            return desk.page("reader_gone", session, 404, part="readers")
        return desk.page("reader_confirm", session, part="readers", reader=reader, action=action.value)

    @router.post(READERS + "/{subscriber_id:int}/{action}")
    async def act(subscriber_id: int, action: str, session: EditorSession = Depends(current_editor)) -> Response:
        action = action_of(action)
        reader = await run_in_threadpool(desk.store.subscriber_by_id, subscriber_id)
        if reader is None:
            return desk.page("reader_gone", session, 404, part="readers")
        named = reader_detail(reader.id, reader.email)
        if action is ReaderAction.forget:
            # As the reader's own manage page does; it also takes the address out of the earlier audit
            # lines about them, and this one has none.
            await run_in_threadpool(desk.store.leave_and_forget, reader.id, reader.email,
                                    tokens.email_hash(reader.email))
            await desk.record(session, "reader-forgotten", f"#{reader.id}")
            return RedirectResponse(f"{READERS}?done=forgotten", status_code=303)
        if action is ReaderAction.remove:
            await run_in_threadpool(desk.store.unsubscribe, reader.id)
            await desk.record(session, "reader-removed", named)
            return RedirectResponse(f"{READERS}/{reader.id}?done=removed", status_code=303)
        if reader.status != Status.pending.value:
            return RedirectResponse(f"{READERS}/{reader.id}?done=not-pending", status_code=303)
        claimed = await run_in_threadpool(desk.store.resend_confirmation, reader.id, RESEND_AFTER)
        if claimed is None:
            return RedirectResponse(f"{READERS}/{reader.id}?done=too-soon", status_code=303)
        # Sent now, not after the answer: the editor is told whether it went. A failure is left for the
        # retry of `newsletter confirmations` (and every send), as a signup's is.
        sent = await mailer.send(claimed)
        await desk.record(session, "reader-confirmation-resent" if sent else "reader-confirmation-failed", named)
        return RedirectResponse(f"{READERS}/{reader.id}?done={'resent' if sent else 'send-failed'}",
                                status_code=303)

    return router
