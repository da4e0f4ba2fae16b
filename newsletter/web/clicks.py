"""Story links followed from the email: /c/<token> redirects to the story, and counts the click.

The token is a MAC over the issue, the story's place and the reader (tokens.py); the redirect
goes only to the URL stored with the issue when it was frozen, never to anything the request
carries. Whatever is wrong with a token (forged, damaged, another issue, a place the issue does
not have) gets the same small Arabic page, 404, with a link to the issue in the archive.

Answering never waits for the store: the issue's links are cached, and clicks wait in a bounded
buffer written in batches (a store outage costs no reader the redirect; past the bound, clicks
are dropped and the count logged). A click is a machine's, not a reader's, when the request is
HEAD, says it prefetches, comes from a known scanner or link-preview agent, or is one of several
different links of one message followed within BURST_SECONDS: mail scanners follow every link
of a message seconds after delivery.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..config import Settings, Tracking
from ..issue.render import Renderer, story_url
from ..store.clicks import Click
from ..store.database import Store
from ..tokens import Tokens

log = logging.getLogger(__name__)

BURST_SECONDS = 2.0  # several links of one message followed within this: a scanner, not a reader
FLUSH_SECONDS = 1.0
FOLD_SECONDS = 600.0  # how often `serve` folds away expired salts even when nobody clicks
MAX_PENDING_CLICKS = 100_000  # past this, while the store is down, clicks are dropped (and counted)
CACHED_ISSUES = 64
# Agents that follow or fetch links on a reader's behalf: mail security scanners, link previews,
# command-line clients. Matched anywhere in User-Agent, case-insensitive; an empty one counts too.
MACHINE_AGENTS = re.compile(
    r"bot\b|crawler|spider|preview|scan|safelinks|defender|proofpoint|mimecast|barracuda|ironport|"
    r"fortiguard|sophos|trendmicro|symantec|messagelabs|forcepoint|cisco|slack|whatsapp|telegram|discord|"
    r"facebookexternalhit|linkedin|skype|ms-office|microsoft office|outlook-ios|google-safety|"
    r"headlesschrome|phantomjs|python-|curl/|wget/|go-http-client|okhttp|java/|libwww|httpclient",
    re.IGNORECASE)
PREFETCH_HEADERS = ("sec-purpose", "purpose", "x-purpose", "x-moz")


def is_machine_request(request: Request) -> bool:
    """A request no reader made by clicking: HEAD, a prefetch, or a scanner's or previewer's agent."""
    if request.method == "HEAD":
        return True
    if any("prefetch" in request.headers.get(h, "").lower() or "preview" in request.headers.get(h, "").lower()
           or "prerender" in request.headers.get(h, "").lower() for h in PREFETCH_HEADERS):
        return True
    agent = request.headers.get("user-agent", "")
    return not agent.strip() or bool(MACHINE_AGENTS.search(agent))


@dataclass
class _Pending:
    issue_id: int
    place: int
    subscriber_id: int
    machine: bool
    at: dt.datetime
    seen: float  # monotonic seconds


@dataclass
class ClickBuffer:
    """Clicks waiting to be written: classified for BURST_SECONDS, then written in batches."""

    store: Store
    salt_days: int
    individual: bool
    burst_seconds: float = BURST_SECONDS
    max_pending: int = MAX_PENDING_CLICKS
    pending: list[_Pending] = field(default_factory=list)
    dropped: int = 0
    _messages: dict[tuple[int, int], list[_Pending]] = field(default_factory=dict)

    def add(self, issue_id: int, place: int, subscriber_id: int, machine: bool) -> None:
        now = time.monotonic()
        click = _Pending(issue_id, place, subscriber_id, machine, dt.datetime.now(dt.timezone.utc), now)
        message = [c for c in self._messages.get((issue_id, subscriber_id), []) if now - c.seen <= self.burst_seconds]
        if any(c.place != place for c in message):  # several links of one message at once: a scanner
            for earlier in message:
                earlier.machine = True
            click.machine = True
        message.append(click)
        self._messages[(issue_id, subscriber_id)] = message
        self.pending.append(click)
        if len(self.pending) > self.max_pending:
            excess = len(self.pending) - self.max_pending
            del self.pending[:excess]
            self.dropped += excess
            log.warning("click buffer full (the store is not answering): %d click(s) dropped so far", self.dropped)

    async def flush(self, everything: bool = False) -> int:
        """Write the clicks whose burst window has passed (all, on `everything`); how many were written."""
        cutoff = time.monotonic() - (0 if everything else self.burst_seconds)
        ready = [c for c in self.pending if c.seen <= cutoff]
        if not ready:
            return 0
        batch = [Click(c.issue_id, c.place, c.subscriber_id, c.machine, c.at) for c in ready]
        try:
            await run_in_threadpool(self.store.clicks.record, batch, self.salt_days, self.individual)
        except Exception as exc:  # noqa: BLE001 (the store is down: keep them for the next try)
            log.warning("could not write %d click(s), will retry: %s", len(batch), " ".join(str(exc).split())[:300])
            return 0
        written = {id(c) for c in ready}
        self.pending = [c for c in self.pending if id(c) not in written]
        self._messages = {key: clicks for key, clicks in self._messages.items()
                          if any(c.seen > cutoff for c in clicks)}
        return len(batch)

    async def run(self) -> None:
        """Flush every FLUSH_SECONDS until cancelled; then write whatever is left (a graceful stop).

        Every FOLD_SECONDS it also folds expired salts away, so that the promise of
        NEWSLETTER_TRACKING_SALT_DAYS holds on days nobody clicks.
        """
        next_fold = time.monotonic()
        try:
            while True:
                if time.monotonic() >= next_fold:
                    next_fold = time.monotonic() + FOLD_SECONDS
                    await self._fold()
                await asyncio.sleep(FLUSH_SECONDS)
                await self.flush()
        finally:
            await asyncio.shield(self.flush(everything=True))

    async def _fold(self) -> None:
        try:
            folded = await run_in_threadpool(self.store.clicks.fold_expired_salts, self.salt_days)
        except Exception as exc:  # noqa: BLE001 (the store is down: the next round tries again)
            log.warning("could not fold expired click salts: %s", " ".join(str(exc).split())[:300])
            return
        if folded:
            log.info("folded the click salts of %d issue(s) into counts (NEWSLETTER_TRACKING_SALT_DAYS)", folded)


class IssueLinks:
    """Each issue's stored story URLs by its tag (YYYYMMDD), read once from the store and kept."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._issues: OrderedDict[str, tuple[int, list[dict]] | None] = OrderedDict()

    async def get(self, issue_tag: str) -> tuple[int, list[dict]] | None:
        if issue_tag not in self._issues:
            try:
                day = dt.date(int(issue_tag[:4]), int(issue_tag[4:6]), int(issue_tag[6:])).isoformat()
            except ValueError:
                return None
            stored = await run_in_threadpool(self.store.get_issue, day)
            if stored is None:
                return None  # not cached: the issue may be frozen later today
            self._issues[issue_tag] = (stored.id, stored.stories)
            while len(self._issues) > CACHED_ISSUES:
                self._issues.popitem(last=False)
        self._issues.move_to_end(issue_tag)
        return self._issues[issue_tag]


def click_routes(settings: Settings, store: Store, renderer: Renderer) -> tuple[APIRouter, ClickBuffer]:
    """The /c/ router, and the buffer its clicks wait in (the app runs and drains it)."""
    router = APIRouter()
    tokens = Tokens(settings.secret_key)
    links = IssueLinks(store)
    buffer = ClickBuffer(store, settings.tracking_salt_days, settings.tracking is Tracking.individual)

    def invalid(issue_tag: str | None) -> HTMLResponse:
        archive = "/archive"
        if issue_tag and re.fullmatch(r"\d{8}", issue_tag):
            archive = f"/archive/{issue_tag[:4]}-{issue_tag[4:6]}-{issue_tag[6:]}"
        return HTMLResponse(renderer.render_page("link_invalid", archive_url=archive), status_code=404)

    @router.api_route("/c/{token}", methods=["GET", "HEAD"])
    async def follow(token: str, request: Request) -> Response:
        click = tokens.read_click_token(token)
        if click is None:
            return invalid(token[:8])
        issue = await links.get(click.issue_tag)
        url = story_url(issue[1], click.place) if issue else ""
        if issue is None or not url.startswith(("https://", "http://")):
            return invalid(click.issue_tag)
        if settings.tracking is not Tracking.off and click.subscriber_id != 0:  # 0: a test send
            buffer.add(issue[0], click.place, click.subscriber_id, is_machine_request(request))
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})

    return router, buffer
