"""`newsletter preview`: tomorrow's issue as readers will see it, re-rendered as editors work.

A local web app: the email in a desktop (600 px) and a phone (375 px) frame,
the plain-text part, subject, preheader, size against Gmail's clipping limit,
and the selection with its reasons. When a file under templates/ or the
editorial folder changes, the issue is rebuilt and the page reloads itself;
a broken template is shown on the page and the server keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import logging
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from watchfiles import awatch

from ..config import Settings
from ..editing import EditedIssue, apply_steering, read_configured_feeds
from ..errors import NewsletterError
from ..issue.editorial import EditorialError
from ..issue.render import Renderer
from ..issue.steering import StaleVersion
from ..sample_pictures import pictures
from ..store.database import Store

log = logging.getLogger(__name__)

STALE_MESSAGE = "غيّر محرر آخر هذه الرسالة للتو، والصفحة تعرض الآن أحدث نسخة منها. أعد تغييرك إن كان ما زال لازمًا."


@dataclass
class PreviewState(EditedIssue):
    """The issue as last built, what went wrong if it could not be, and how often it was rebuilt."""

    version: int = 0
    changed: list[str] = field(default_factory=list)

    async def read_feeds(self) -> None:
        self.feeds = await read_configured_feeds(self.settings)

    def rebuild(self) -> None:
        super().rebuild()
        self.version += 1

    def preview_html(self) -> str:
        return self.email_html(lambda picture: f"/sample-pictures/{picture.name}")


def _watched(settings: Settings) -> list[str]:
    settings.editorial_dir.mkdir(parents=True, exist_ok=True)
    return [str(settings.templates_dir), str(settings.editorial_dir)]


async def _watch(state: PreviewState, stop: asyncio.Event) -> None:
    async for changes in awatch(*_watched(state.settings), stop_event=stop, debounce=200, step=50):
        state.changed = sorted({path for _, path in changes})
        log.info("changed: %s; rebuilding", ", ".join(state.changed))
        await asyncio.to_thread(state.rebuild)


def create_preview_app(settings: Settings, date: dt.date, store: Store | None = None) -> FastAPI:
    state = PreviewState(settings, store or Store(settings.database_url), date)
    renderer = Renderer(settings.templates_dir, settings.base_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.read_feeds()
        await asyncio.to_thread(state.rebuild)
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch(state, stop))
        yield
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.preview = state

    async def preview_page(status_code: int = 200, steer_error: str = "", steer_error_url: str = "") -> HTMLResponse:
        if steer_error_url not in state.listed_urls():
            steer_error_url = ""  # no such story on the page: the message goes on top
        try:
            page = Renderer(settings.templates_dir, settings.base_url).render_page(
                "preview",
                state=state,
                **await asyncio.to_thread(state.steering_context),
                date_label=renderer.date_label(date),
                steer_url="/steer",
                hidden={},
                approver=getpass.getuser(),
                steer_error=steer_error,
                steer_error_url=steer_error_url,
                reload_js=_RELOAD_JS,
            )
        except NewsletterError as exc:  # the preview page's own template is broken
            page = f"<!doctype html><meta charset=utf-8><pre>{exc}</pre><script>{_RELOAD_JS}</script>"
        return HTMLResponse(page, status_code=status_code)

    @app.get("/", response_class=HTMLResponse)
    async def show() -> HTMLResponse:
        return await preview_page()

    @app.post("/steer")
    async def steer_issue(request: Request) -> Response:
        """One editor's change (a form of the page, no script needed): written to the editorial file."""
        try:
            form = await request.form()
        except HTTPException as exc:  # a field over Starlette's 1 MB: no headline is that long
            return await preview_page(400, f"the change could not be read ({exc.detail}); nothing was written")
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        url = fields.get("url", "")
        try:
            by = fields.get("by", "").strip() or getpass.getuser()
            steered = await asyncio.to_thread(apply_steering, state, fields, by)
        except StaleVersion:
            await asyncio.to_thread(state.rebuild)
            return await preview_page(409, STALE_MESSAGE, url)
        except EditorialError as exc:
            return await preview_page(400, str(exc), url)
        if steered.approval is not None:
            return RedirectResponse("/#approval", status_code=303)
        await asyncio.to_thread(state.rebuild)
        return RedirectResponse("/#chosen", status_code=303)

    @app.get("/email.html", response_class=HTMLResponse)
    async def email_html() -> HTMLResponse:
        return HTMLResponse(state.preview_html())

    @app.get("/email.txt", response_class=PlainTextResponse)
    async def email_text() -> str:
        return state.email_text()

    @app.get("/sample-pictures/{name}")
    async def sample_picture(name: str) -> Response:
        found = next((p for p in pictures() if p.name == name), None)
        if found is None:
            return Response(status_code=404)
        return Response(found.read_bytes(), media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    @app.get("/version")
    async def version() -> JSONResponse:
        return JSONResponse({"version": state.version, "error": state.error})

    return app


# Polls /version and reloads when the issue was rebuilt; also used when the
# preview page itself cannot be rendered. Not while the editor is typing into a form: their words
# would be lost; their change then meets the newer version and is refused with the fresh page.
_RELOAD_JS = """
(function () {
  var seen = null, typing = false;
  document.addEventListener('input', function () { typing = true; });
  setInterval(function () {
    fetch('/version').then(function (r) { return r.json(); }).then(function (v) {
      if (seen === null) { seen = v.version; } else if (v.version !== seen && !typing) { location.reload(); }
    }).catch(function () {});
  }, 700);
})();
"""

