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

from .. import edition
from ..config import Settings
from ..errors import NewsletterError
from ..issue.editorial import EditorialError
from ..issue.feeds import FeedBatch, read_feeds_async
from ..issue.render import GMAIL_CLIP_BYTES, UNSUBSCRIBE_SLOT, Renderer, RenderedIssue
from ..issue.steering import Change, StaleVersion, can_undo, current_version, steer, undo
from ..sample_pictures import pictures, with_sample_pictures
from ..stats import issues_between, outlet_clicks
from ..store.database import Store

log = logging.getLogger(__name__)

STALE_MESSAGE = "غيّر محرر آخر هذه الرسالة للتو، والصفحة تعرض الآن أحدث نسخة منها. أعد تغييرك إن كان ما زال لازمًا."


@dataclass
class PreviewState:
    """The issue as last built, and what went wrong if it could not be."""

    settings: Settings
    store: Store
    date: dt.date
    feeds: FeedBatch | None = None
    draft: edition.Draft | None = None
    rendered: RenderedIssue | None = None
    error: str = ""
    version: int = 0
    changed: list[str] = field(default_factory=list)

    async def read_feeds(self) -> None:
        s = self.settings
        self.feeds = await read_feeds_async(s.feeds, s.feed_timeout, s.feed_max_bytes, s.feed_outlets)

    def rebuild(self) -> None:
        """Select and render again from the feeds already read (templates or editorial changed)."""
        try:
            self.draft = edition.draft_edition(self.settings, self.store, self.date, self.feeds)
            self.rendered = edition.render_draft(self.settings, self.draft)
            self.error = ""
        except NewsletterError as exc:
            self.error = str(exc)
            log.warning("preview: %s", exc)
        self.version += 1

    def email_html(self) -> str:
        if self.rendered is None:
            return ""
        html = self.rendered.with_outlet_links(self.rendered.html, escape=True)  # editors check the outlets' links
        html = with_sample_pictures(html, lambda picture: f"/sample-pictures/{picture.name}")
        return html.replace(UNSUBSCRIBE_SLOT, "preview")

    def email_text(self) -> str:
        return self.rendered.with_outlet_links(self.rendered.text, escape=False) if self.rendered else ""

    def shown_urls(self) -> list[str]:
        """The issue's stories as the page shows them, lead first."""
        return [e.story.url for e in self.draft.selection.events] if self.draft else []

    def offered_urls(self) -> set[str]:
        return {s.url for s in self.feeds.stories} if self.feeds else set()

    def yesterdays_readers_by_outlet(self) -> dict[str, int]:
        """Per outlet, the readers who clicked its stories in the issue before this one (beside each story)."""
        day = self.date - dt.timedelta(days=1)
        yesterday = issues_between(self.store, day, day)
        return {o.outlet: o.unique_readers for o in outlet_clicks(self.store, yesterday)}


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
        rendered, draft = state.rendered, state.draft
        listed = set(state.shown_urls()) | {d.story.url for d in draft.selection.dropped} if draft else set()
        if steer_error_url not in listed:
            steer_error_url = ""  # no such story on the page: the message goes on top
        size = rendered.html_bytes if rendered else 0
        try:
            page = Renderer(settings.templates_dir, settings.base_url).render_page(
                "preview",
                state=state,
                rendered=rendered,
                selection=draft.selection if draft else None,
                issue_stories=draft.issue.stories if draft else [],
                overridden=set(draft.editorial.overrides) if draft and draft.editorial else set(),
                failures=state.feeds.failures if state.feeds else [],
                size_kb=round(size / 1024, 1),
                clip_kb=GMAIL_CLIP_BYTES // 1024,
                clipped=size > GMAIL_CLIP_BYTES,
                date_label=renderer.date_label(date),
                email_text=state.email_text(),
                yesterday=await asyncio.to_thread(state.yesterdays_readers_by_outlet),
                file_version=await asyncio.to_thread(current_version, settings.editorial_dir, date),
                approval=await asyncio.to_thread(state.store.approvals.of, date.isoformat()),
                approval_required=settings.approval.value == "required",
                approver=getpass.getuser(),
                can_undo=await asyncio.to_thread(can_undo, settings.editorial_dir, date),
                intro=draft.issue.intro if draft else "",
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
        action, url, version = fields.get("action", ""), fields.get("url", ""), fields.get("version", "")
        folder = settings.editorial_dir
        try:
            if action == "approve":
                if state.error or state.rendered is None:
                    raise EditorialError("the issue cannot be built: fix what the page shows first")
                current = await asyncio.to_thread(current_version, folder, date)
                if version != current:
                    raise StaleVersion(current)
                by = fields.get("by", "").strip() or getpass.getuser()
                await asyncio.to_thread(edition.approve_edition, settings, state.store, date, by, state.rendered)
                return RedirectResponse("/#approval", status_code=303)
            if action == "undo":
                await asyncio.to_thread(undo, folder, date, version)
            else:
                change = Change(action, url, fields.get("title", ""), fields.get("summary", ""), fields.get("intro", ""))
                await asyncio.to_thread(steer, folder, date, change, version, state.shown_urls(),
                                        state.offered_urls(), settings.max_stories)
        except StaleVersion:
            await asyncio.to_thread(state.rebuild)
            return await preview_page(409, STALE_MESSAGE, url)
        except EditorialError as exc:
            return await preview_page(400, str(exc), url)
        await asyncio.to_thread(edition.withdraw_approval, state.store, date)  # the issue changed
        await asyncio.to_thread(state.rebuild)
        return RedirectResponse("/#chosen", status_code=303)

    @app.get("/email.html", response_class=HTMLResponse)
    async def email_html() -> HTMLResponse:
        return HTMLResponse(state.email_html())

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

