"""The morning's send, live (/desk/send): delivered, pending, retrying, refused, and what reports said since.

Everything comes from the store, where every `newsletter send` run writes as it goes, so the page
shows a send running on any machine. The page works without script (reload it); a small script
(templates/pages/desk/send.js) asks /desk/send.json, behind the same session, every few seconds and
puts the new figures in place. That page alone may run a script, and only one of our own.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ... import edition
from ...send_progress import SendProgress, send_progress
from ...store.editors import EditorSession
from ..pages import GET
from ..security import SECURITY_HEADERS
from .access import DESK, Desk, current_editor

SEND = f"{DESK}/send"
REFRESH_SECONDS = 2
# The site's policy, with our own script and its requests to /desk/send.json.
SEND_PAGE_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; script-src 'self'; connect-src 'self'"


def routes(desk: Desk) -> APIRouter:
    settings, store = desk.settings, desk.store
    router = APIRouter()

    async def progress() -> SendProgress:
        return await run_in_threadpool(send_progress, store, edition.today(settings),
                                       dt.timedelta(seconds=settings.stale_run_seconds))

    @router.api_route(SEND, methods=GET)
    async def send_page(session: EditorSession = Depends(current_editor)) -> Response:
        now = await progress()
        response = desk.page("send", session, progress=now, refresh_seconds=REFRESH_SECONDS, part="send",
                             date_label=desk.pages.renderer.date_label(dt.date.fromisoformat(now.issue_date)))
        response.headers["Content-Security-Policy"] = SEND_PAGE_CSP
        return response

    @router.api_route(f"{SEND}.json", methods=GET)
    async def send_figures(session: EditorSession = Depends(current_editor)) -> Response:
        return JSONResponse((await progress()).as_json())

    @router.api_route(f"{SEND}.js", methods=GET)
    async def send_script(session: EditorSession = Depends(current_editor)) -> Response:
        script = (settings.templates_dir / "pages" / "desk" / "send.js").read_text(encoding="utf-8")
        return Response(script, media_type="text/javascript; charset=utf-8")

    return router
