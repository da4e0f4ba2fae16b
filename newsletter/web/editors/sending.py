"""The morning's send, live (/desk/send): delivered, pending, retrying, refused, and what reports said since.

Everything comes from the store, where every `newsletter send` run writes as it goes, so the page
shows a send running on any machine. The page works without script (reload it); a small script
(templates/pages/desk/send.js) asks /desk/send.json, behind the same session, every few seconds and
puts the new figures in place. That page alone may run a script, and only one of our own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ... import edition
from ...config import Settings
from ...store.database import Store
from ...store.editors import EditorSession
from ..pages import GET
from ..security import SECURITY_HEADERS
from .access import DESK, Desk, current_editor

SEND = f"{DESK}/send"
REFRESH_SECONDS = 2
# The site's policy, with our own script and its requests to /desk/send.json.
SEND_PAGE_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; script-src 'self'; connect-src 'self'"


@dataclass(frozen=True)
class SendProgress:
    """One issue's send as the store has it now."""

    issue_date: str
    state: str  # "none" (no issue yet), "waiting" (frozen, not started), "running", "complete", "incomplete"
    subject: str = ""
    approved_by: str = ""
    delivered: int = 0
    in_flight: int = 0  # claimed by a run, its answer not in yet
    waiting: int = 0  # active readers not claimed yet
    retrying: int = 0  # a transient failure: the next run tries again
    refused: int = 0  # the server said no for good during the send
    withdrawn: int = 0  # left the list between the claim and the message
    paused: int = 0  # readers who paused past this date: not sent to
    bounced: int = 0  # readers whose servers reported a hard or soft bounce afterwards
    complained: int = 0  # readers who marked it as spam
    blocked: int = 0  # refused by a policy (spam filter, SPF, DKIM, DMARC) afterwards
    runs: int = 0  # `newsletter send` runs at work on it now

    @property
    def pending(self) -> int:
        return self.in_flight + self.waiting

    @property
    def total(self) -> int:
        return self.delivered + self.refused + self.retrying + self.pending

    @property
    def finished(self) -> int:
        """Readers the send is done with for now: delivered, or refused for good."""
        return self.delivered + self.refused

    @property
    def percent(self) -> int:
        return round(100 * self.finished / self.total) if self.total else 0

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "pending": self.pending, "total": self.total, "finished": self.finished,
                "percent": self.percent}


def send_progress(settings: Settings, store: Store, date: dt.date) -> SendProgress:
    """How the send of `date`'s issue stands; the figures `newsletter status` prints, and whether a run is at work."""
    day = date.isoformat()
    issue = store.get_issue(day)
    if issue is None:
        return SendProgress(day, "none")
    approval = store.approvals.of(day)
    counts = store.log.delivery_counts(issue.id)
    folded = issue.log_folded_at is not None
    waiting = 0 if folded else store.log.never_claimed(issue.id)
    runs = 0 if folded else store.log.live_runs(issue.id, dt.timedelta(seconds=settings.stale_run_seconds))
    feedback = store.feedback.counts_by_issue(day)
    in_flight = counts.get("sending", 0)
    if runs:
        state = "running"
    elif not counts:
        state = "waiting"
    elif in_flight or waiting or counts.get("failed", 0):
        state = "incomplete"
    else:
        state = "complete"
    return SendProgress(
        day, state, issue.subject, approval.approved_by if approval else "",
        delivered=counts.get("sent", 0), in_flight=in_flight, waiting=waiting, retrying=counts.get("failed", 0),
        refused=counts.get("refused", 0), withdrawn=counts.get("withdrawn", 0),
        paused=0 if folded else store.log.paused(issue.id),
        bounced=feedback.get("hard", 0) + feedback.get("soft", 0), complained=feedback.get("complaint", 0),
        blocked=feedback.get("blocked", 0), runs=runs)


def routes(desk: Desk) -> APIRouter:
    settings, store = desk.settings, desk.store
    router = APIRouter()

    async def progress() -> SendProgress:
        return await run_in_threadpool(send_progress, settings, store, edition.today(settings))

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
