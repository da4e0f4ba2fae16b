"""What `newsletter serve` counts, for Prometheus (machines/prometheus.py answers GET /metrics).

The figures live in a `CollectorRegistry` made by the app factory;
with `serve --workers N` each worker process writes its figures to files under
PROMETHEUS_MULTIPROC_DIR (`prepare_workers`, called before the workers start) and /metrics, in
whichever worker answers, adds up every worker's.

What `newsletter send` reports goes to a file for node_exporter instead (newsletter/metrics.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from prometheus_client import (CollectorRegistry, Counter, Histogram, PlatformCollector,
                               ProcessCollector, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..mail.bounces import ReportKind
from ..store.database import Store

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
BOUNCE_KINDS = (ReportKind.hard, ReportKind.soft, ReportKind.blocked)
# From a fast index lookup to the longest a request waits for a lock (NEWSLETTER_WEB_DB_WAIT_SECONDS ≤ 60).
STATEMENT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WebMetrics:
    """The counters of one serving process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV) or None
        if self.multiprocess_dir is None:
            # One process: its CPU, memory and start time too (not summable across workers).
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        r = self.registry
        self.signups = Counter("newsletter_signups", "Signups with a valid address (new, pending or already "
                               "on the list alike: they get the same answer).", registry=r)
        self.rate_limited = Counter("newsletter_signups_rate_limited", "Signups refused by the rate limit "
                                    "(NEWSLETTER_SIGNUP_RATE_LIMIT).", registry=r)
        self.confirmations = Counter("newsletter_confirmations", "Confirm buttons pressed that left the reader "
                                     "active.", registry=r)
        self.unsubscribes = Counter("newsletter_unsubscribes", "Unsubscribes (the page's button or a mail "
                                    "client's one-click POST).", registry=r)
        self.bounces = Counter("newsletter_bounces", "Bounces reported by relays' webhooks, by kind "
                               "(hard, soft, blocked: refused by policy).", ["kind"], registry=r)
        self.complaints = Counter("newsletter_complaints", "Spam complaints reported by relays' webhooks.",
                                  registry=r)
        self.click_redirects = Counter("newsletter_click_redirects", "Story links followed (/c/…): redirected, "
                                       "or invalid (the 404 page).", ["outcome"], registry=r)
        self.responses = Counter("newsletter_http_responses", "HTTP responses by status class.", ["code"],
                                 registry=r)
        self.store_unavailable = Counter("newsletter_store_unavailable", "Requests answered 503 because the "
                                         "store was locked past NEWSLETTER_WEB_DB_WAIT_SECONDS or unreachable.",
                                         registry=r)
        self.statement_seconds = Histogram("newsletter_store_statement_seconds", "Time each SQL statement of "
                                           "the web app took, waits for locks included.", registry=r,
                                           buckets=STATEMENT_BUCKETS)
        # Every series from the start: increase() over a series that appears at its first event misses it.
        for kind in BOUNCE_KINDS:
            self.bounces.labels(kind.value)
        for outcome in ("redirected", "invalid"):
            self.click_redirects.labels(outcome)
        for code in RESPONSE_CLASSES:
            self.responses.labels(code)

    def count_reports(self, kinds: list[ReportKind]) -> None:
        """Count what a relay's webhook reported (auto-replies, delay warnings and the like are not bounces)."""
        for kind in kinds:
            if kind is ReportKind.complaint:
                self.complaints.inc()
            elif kind in BOUNCE_KINDS:
                self.bounces.labels(kind.value).inc()

    def time_statements(self, store: Store) -> None:
        """Observe how long each statement on the store's engine takes."""
        def before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            conn.info.setdefault("newsletter_started", []).append(time.perf_counter())

        def after(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            started = conn.info.get("newsletter_started")
            if started:
                self.statement_seconds.observe(time.perf_counter() - started.pop())

        def failed(context) -> None:  # noqa: ANN001 (a statement that timed out waiting is a wait too)
            started = context.connection.info.get("newsletter_started") if context.connection else None
            if started:
                self.statement_seconds.observe(time.perf_counter() - started.pop())

        event.listen(store.engine, "before_cursor_execute", before)
        event.listen(store.engine, "after_cursor_execute", after)
        event.listen(store.engine, "handle_error", failed)

    def exposition(self) -> bytes:
        """The figures in Prometheus's text format: every worker's, when there are several."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


class CountResponses:
    """The outermost layer: counts every response by status class, and the story links' redirects.

    Story links are answered in front of the app (clicks.py) and never reach its routes, so they
    are counted here, by their answer: 302 is a redirect, anything else the invalid-link page.
    """

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        story_link = scope.get("path", "").startswith("/c/") and scope["method"] in ("GET", "HEAD")

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.responses.labels(f"{status // 100}xx").inc()
                if story_link:
                    self.metrics.click_redirects.labels("redirected" if status == 302 else "invalid").inc()
            await send(message)

        await self.app(scope, receive, counted)


def prepare_workers() -> Path:
    """Before `serve --workers N` starts its workers: the directory where they keep their figures.

    PROMETHEUS_MULTIPROC_DIR when the operator set it (emptied of an earlier run's files, which
    prometheus_client would otherwise add to this run's), else a new temporary directory, removed
    at exit. The workers inherit it through the environment.
    """
    given = os.environ.get(MULTIPROCESS_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.db"):
            old.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="newsletter-metrics-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ[MULTIPROCESS_ENV] = str(directory)
    log.info("workers add up their metrics in %s", directory)
    return directory
