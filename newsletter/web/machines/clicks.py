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
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ...config import Settings, Tracking
from ...issue.render import Renderer, story_url
from ...store.clicks import Click
from ...store.database import Store
from ...tokens import Tokens

log = logging.getLogger(__name__)

BURST_SECONDS = 2.0  # several links of one message followed within this: a scanner, not a reader
FLUSH_SECONDS = 1.0
FOLD_SECONDS = 600.0  # how often `serve` folds away expired salts even when nobody clicks
MAX_PENDING_CLICKS = 100_000  # past this, while the store is down, clicks are dropped (and counted)
CACHED_ISSUES = 64
# Agents that follow or fetch links on a reader's behalf: mail security scanners, link previews,
# command-line clients. Matched anywhere in User-Agent, case-insensitive; an empty one counts too.
MACHINE_AGENTS = re.compile(
    r"bot/|bot-|bot \(|\bbot\b|crawler|spider|preview|scan|safelinks|defender|proofpoint|mimecast|barracuda|ironport|"
    r"fortiguard|sophos|trendmicro|symantec|messagelabs|forcepoint|cisco|slack|whatsapp|telegram|discord|"
    r"facebookexternalhit|linkedin|skype|ms-office|microsoft office|outlook-ios|google-safety|"
    r"headlesschrome|phantomjs|python-|curl/|wget/|go-http-client|okhttp|java/|libwww|httpclient",
    re.IGNORECASE)
PREFETCH_HEADERS = frozenset({b"sec-purpose", b"purpose", b"x-purpose", b"x-moz"})
PREFETCH_WORDS = re.compile(rb"prefetch|prerender|preview", re.IGNORECASE)


class MachineRules:
    """Tells a reader's click from a machine's, remembering each User-Agent's verdict (a burst
    repeats a handful of agents, and the regular expression is the costliest step of a redirect)."""

    def __init__(self, remembered: int = 4096) -> None:
        self.remembered = remembered
        self._agents: dict[bytes, bool] = {}

    def is_machine(self, method: str, headers: list[tuple[bytes, bytes]]) -> bool:
        """A request no reader made by clicking: HEAD, a prefetch, or a scanner's or previewer's agent."""
        if method == "HEAD":
            return True
        agent = b""
        for name, value in headers:
            if name in PREFETCH_HEADERS and PREFETCH_WORDS.search(value):
                return True
            if name == b"user-agent":
                agent = value
        return self._machine_agent(agent)

    def _machine_agent(self, agent: bytes) -> bool:
        verdict = self._agents.get(agent)
        if verdict is None:
            if len(self._agents) >= self.remembered:
                self._agents.clear()
            text = agent.decode("latin-1")
            verdict = self._agents[agent] = not text.strip() or bool(MACHINE_AGENTS.search(text))
        return verdict


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


@dataclass(frozen=True)
class IssueTargets:
    """Where one issue's story links lead: {place: the Location header's bytes}, http(s) URLs only."""

    issue_id: int
    locations: dict[int, bytes]


def _location(url: str) -> bytes | None:
    # Percent-encoded as Starlette's RedirectResponse does: feeds carry Arabic paths (IRIs).
    if not url.startswith(("https://", "http://")):
        return None  # a feed's javascript: or data: link is never redirected to
    return quote(url, safe=":/%#?=@[]!$&'()*+,;").encode("latin-1")


class IssueLinks:
    """Each issue's stored story URLs by its tag (YYYYMMDD), read once from the store and kept."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._issues: OrderedDict[str, IssueTargets] = OrderedDict()

    async def get(self, issue_tag: str) -> IssueTargets | None:
        if issue_tag not in self._issues:
            try:
                day = dt.date(int(issue_tag[:4]), int(issue_tag[4:6]), int(issue_tag[6:])).isoformat()
            except ValueError:
                return None
            stored = await run_in_threadpool(self.store.get_issue, day)
            if stored is None:
                return None  # not cached: the issue may be frozen later today
            places = {place: _location(story_url(stored.stories, place)) for place in range(1, len(stored.stories) + 1)}
            self._issues[issue_tag] = IssueTargets(stored.id, {p: loc for p, loc in places.items() if loc})
            while len(self._issues) > CACHED_ISSUES:
                self._issues.popitem(last=False)
        self._issues.move_to_end(issue_tag)
        return self._issues[issue_tag]


class ClickRedirects:
    """GET and HEAD /c/<token>, answered in front of the rest of the app.

    The morning burst is mostly these; they go through none of the pages' layers (routing, CORS,
    body limits), only the security headers the app wraps around them. Anything else, other
    methods on /c/ included, goes on to `app`.
    """

    def __init__(self, app: ASGIApp | None, settings: Settings, store: Store, renderer: Renderer) -> None:
        self.app = app
        self.renderer = renderer
        self.tokens = Tokens(settings.secret_key)
        self.links = IssueLinks(store)
        self.counting = settings.tracking is not Tracking.off
        self.rules = MachineRules()
        self.buffer = ClickBuffer(store, settings.tracking_salt_days, settings.tracking is Tracking.individual)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/c/") or "/" in path[3:] or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            status, headers, body = await self.follow(path[3:], scope["method"], scope["headers"])
        except Exception:  # noqa: BLE001 (a reader must never see a traceback; the log gets it)
            log.exception("error on %s %s", scope["method"], path)
            status, headers, body = self._page(500, None)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def follow(self, token: str, method: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, list, bytes]:
        click = self.tokens.read_click_token(token)
        if click is None:
            return self._page(404, token[:8])
        issue = await self.links.get(click.issue_tag)
        location = issue.locations.get(click.place) if issue else None
        if location is None:
            return self._page(404, click.issue_tag)
        if self.counting and click.subscriber_id != 0:  # 0: a test send
            self.buffer.add(issue.issue_id, click.place, click.subscriber_id, self.rules.is_machine(method, headers))
        return 302, [(b"location", location), (b"cache-control", b"no-store"), (b"content-length", b"0")], b""

    def _page(self, status: int, issue_tag: str | None) -> tuple[int, list, bytes]:
        archive = "/archive"
        if issue_tag and re.fullmatch(r"\d{8}", issue_tag):
            archive = f"/archive/{issue_tag[:4]}-{issue_tag[4:6]}-{issue_tag[6:]}"
        body = self.renderer.render_page("link_invalid", archive_url=archive).encode("utf-8")
        return status, [(b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(body)).encode("ascii"))], body
