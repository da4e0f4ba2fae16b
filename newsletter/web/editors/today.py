"""The next issue on the desk (/desk/today): what `newsletter preview` shows and does, for a signed-in editor.

The email in a phone-width frame, its subject and preheader, the selection with its reasons and
the steering forms (newsletter/editing.py, the same as the preview's: each change writes the
editorial file, and one made on an older version of it is refused with 409 and the fresh page);
approving it (as the signed-in editor) and sending a test of it to oneself. The issue is the one
`newsletter send` sends next: today's, in NEWSLETTER_TIMEZONE. Once its send has started it is shown
as frozen, read only, with a link to the send's live view. Every change is written to the audit log.

The feeds are read when the page is asked for, and the read is kept FEED_CACHE_SECONDS: steering
re-selects from the same stories, and a feed that fails is a line on the page.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ... import edition
from ...config import Settings
from ...editing import APPROVE, EditedIssue, ShownIssueChanged, apply_steering, read_configured_feeds
from ...errors import NewsletterError
from ...issue.editorial import EditorialError
from ...issue.feeds import FeedBatch
from ...issue.render import RenderedIssue, shared_copy
from ...issue.steering import StaleVersion
from ...store.database import StoredIssue, Store
from ...store.editors import EditorSession
from ..pages import GET
from ..security import SECURITY_HEADERS
from .access import DESK, Desk, current_editor, form_fields

log = logging.getLogger(__name__)

TODAY = f"{DESK}/today"
FEED_CACHE_SECONDS = 120.0
# The email is framed by the today page alone (its own origin), sandboxed: no script, no form, no
# navigation. Its styles are inline, as in every email; its pictures come from the outlets (https) or,
# for the bundled sample feeds, from data: URIs (a sandboxed frame sends no session cookie).
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; base-uri 'none'; "
             "form-action 'none'; frame-ancestors 'self'; sandbox")
# The today page's own policy: the site's, and the frame of the email above.
TODAY_PAGE_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; frame-src 'self'"


class FeedCache:
    """The feeds as last read, for `max_age` seconds; one read at a time, whoever asks."""

    def __init__(self, settings: Settings, max_age: float = FEED_CACHE_SECONDS) -> None:
        self.settings = settings
        self.max_age = max_age
        self.lock = asyncio.Lock()
        self.read_at = 0.0
        self.batch: FeedBatch | None = None

    async def current(self) -> FeedBatch:
        async with self.lock:
            if self.batch is None or time.monotonic() - self.read_at > self.max_age:
                self.batch = await read_configured_feeds(self.settings)
                self.read_at = time.monotonic()
                for failure in self.batch.failures:
                    log.warning("desk: feed skipped: %s", failure)
        return self.batch


def next_issue_date(settings: Settings) -> dt.date:
    """The issue `newsletter send` sends next: today's in NEWSLETTER_TIMEZONE (its --date default)."""
    return edition.today(settings)


def started_issue(store: Store, date: dt.date) -> StoredIssue | None:
    """The frozen issue of `date` once its send has started (somebody has a delivery row): no steering then."""
    stored = store.get_issue(date.isoformat())
    if stored is not None and store.log.delivery_counts(stored.id):
        return stored
    return None


def _data_uri(picture: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode("ascii")


@dataclass(frozen=True)
class Problem:
    """Why an action of the page did not happen: a key the template words in Arabic, and the detail."""

    key: str
    detail: str = ""
    url: str = ""


def routes(desk: Desk) -> APIRouter:
    settings, store = desk.settings, desk.store
    feeds = FeedCache(settings)
    router = APIRouter()

    async def edited_issue(date: dt.date) -> EditedIssue:
        issue = EditedIssue(settings, store, date, await feeds.current())
        await run_in_threadpool(issue.rebuild)
        return issue

    async def today_page(session: EditorSession, date: dt.date, status_code: int = 200,
                         problem: Problem | None = None, issue: EditedIssue | None = None,
                         done: str = "") -> Response:
        started = await run_in_threadpool(started_issue, store, date)
        context: dict[str, object] = {}
        if started is None:
            issue = issue or await edited_issue(date)
            context = await run_in_threadpool(issue.steering_context)
            if problem is not None and problem.url not in issue.listed_urls():
                problem = Problem(problem.key, problem.detail)  # no such story on the page: the message goes on top
        response = desk.page("today", session, status_code, part="today", started=started, issue_date=date,
                             date_label=desk.pages.renderer.date_label(date), problem=problem, done=done,
                             steer_url=f"{TODAY}/steer", hidden={"csrf": session.csrf_token}, approver=None,
                             **context)
        response.headers["Content-Security-Policy"] = TODAY_PAGE_CSP
        return response

    @router.api_route(TODAY, methods=GET)
    async def show(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        done = request.query_params.get("done", "")
        return await today_page(session, next_issue_date(settings), done=done if done in ("test", "approved") else "")

    @router.api_route(f"{TODAY}/email.html", methods=GET)
    async def email_html(session: EditorSession = Depends(current_editor)) -> Response:
        """The email alone, for the today page's frame."""
        date = next_issue_date(settings)
        started = await run_in_threadpool(started_issue, store, date)
        html = shared_copy(started.html, started.stories) if started else (await edited_issue(date)).email_html(_data_uri)
        return HTMLResponse(html, headers={"Content-Security-Policy": EMAIL_CSP, "X-Frame-Options": "SAMEORIGIN"})

    @router.post(f"{TODAY}/steer")
    async def steer_issue(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        """One steering form of the page: a change to the editorial file, or the approval."""
        fields = await form_fields(request)
        date = next_issue_date(settings)
        action, url = fields.get("action", ""), fields.get("url", "").strip()
        if await run_in_threadpool(started_issue, store, date):
            return await today_page(session, date, 409, Problem("started"))
        issue = await edited_issue(date)
        try:
            steered = await run_in_threadpool(apply_steering, issue, fields, session.email)
        except ShownIssueChanged:
            return await today_page(session, date, 409, Problem("changed"))
        except StaleVersion:
            return await today_page(session, date, 409, Problem("stale", url=url))
        except EditorialError as exc:
            return await today_page(session, date, 400, Problem("refused", str(exc), url), issue)
        await desk.record(session, f"issue-{steered.action}", f"{date.isoformat()} {steered.url}".strip())
        if action == APPROVE:
            return RedirectResponse(f"{TODAY}?done=approved#approval", status_code=303)
        return RedirectResponse(f"{TODAY}#chosen", status_code=303)

    @router.post(f"{TODAY}/test")
    async def send_test(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        """The issue as the page shows it, to the signed-in editor alone, marked as a test."""
        await form_fields(request)
        date = next_issue_date(settings)
        stored = await run_in_threadpool(store.get_issue, date.isoformat())
        seen: RenderedIssue | None
        if stored is not None:  # frozen (approved, or sending): that is what readers get
            seen = edition.as_rendered(stored)
        else:
            issue = await edited_issue(date)
            if issue.error or issue.rendered is None:
                return await today_page(session, date, 409, Problem("unbuilt"), issue)
            seen = issue.rendered
        try:
            result = await run_in_threadpool(edition.send_test, settings, store, date, [session.email], seen)
        except NewsletterError as exc:  # over Gmail's clipping limit, SMTP settings
            return await today_page(session, date, 502, Problem("test-failed", str(exc)))
        if result.failed:
            _, reply = result.failed[0]
            log.warning("desk: test of %s to %s refused: %s", date, session.email, reply)
            return await today_page(session, date, 502, Problem("test-failed", reply))
        await desk.record(session, "issue-test", f"{date.isoformat()} {session.email}")
        return RedirectResponse(f"{TODAY}?done=test#test", status_code=303)

    return router
