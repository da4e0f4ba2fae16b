"""The web app `newsletter serve` runs, grouped by who is on the other side.

- readers (readers.py): signup and the signup box, confirm, unsubscribe (RFC 8058 one-click),
  the archive; a signed token where a page acts on a reader;
- machines: relays' delivery reports (webhooks.py: each relay's signature or secret) and story
  links followed from the email (clicks.py: a signed token, answered in front of the pages);
  /healthz for uptime checks.

Built by `create_app(settings)`; every page is Arabic and right to left, from templates/pages/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings, load_settings
from ..issue.render import Renderer
from ..mail.confirmations import ConfirmationMailer
from ..store.database import Status, Store
from ..tokens import Tokens
from .editors import install_desk
from .machines.clicks import ClickRedirects
from .machines.prometheus import metrics_routes
from .machines.webhooks import Fetch, fetch_over_https, webhook_routes
from .metrics import CountResponses, WebMetrics
from .pages import GET, Pages
from .ratelimit import SignupLimiter
from .readers.manage import manage_routes
from .readers.subscription import forget_unconfirmed_readers, reader_routes
from .security import SecurityHeaders, SignupCors, redact_access_log

log = logging.getLogger(__name__)

BUSY_RETRY_SECONDS = 5
# How uvicorn must run the app. proxy_headers=False: uvicorn would believe
# X-Forwarded-For from any loopback peer; the app reads it itself, from
# NEWSLETTER_TRUSTED_PROXIES only.
UVICORN_OPTIONS = {"proxy_headers": False, "server_header": False}


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """UVICORN_OPTIONS and the limits the settings give a serving process."""
    return {**UVICORN_OPTIONS, "limit_concurrency": settings.web_max_connections,
            "timeout_keep_alive": settings.web_keep_alive_seconds}


class TooLarge:
    """A body over the limit is answered in Arabic (or JSON to a JSON client), not Starlette's "Content Too Large".

    Starlette answers a declared Content-Length over the limit itself,
    outside every handler: the answer is replaced on its way out.
    """

    def __init__(self, app: ASGIApp, pages: Pages) -> None:
        self.app = app
        self.pages = pages

    def answer(self, scope: Scope) -> Response:
        if Headers(scope=scope).get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        return self.pages.notice("الطلب كبير جدًا", "ما أرسلته أكبر مما تقبله هذه الصفحة. لم يتغيّر شيء.", 413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replacing = False

        async def send_in_arabic(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 413:
                replacing = True
            if not replacing:
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await self.answer(scope)(scope, receive, send)

        await self.app(scope, receive, send_in_arabic)


class SiteApp(FastAPI):
    """The FastAPI app with SecurityHeaders as its outermost layer, and story links answered in front."""

    clicks: ClickRedirects | None = None
    metrics: WebMetrics | None = None
    pages: Pages | None = None

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        if self.pages is not None:
            app = TooLarge(app, self.pages)
        if self.clicks is not None:
            self.clicks.app = app
            app = self.clicks
        app = SecurityHeaders(app)
        return app if self.metrics is None else CountResponses(app, self.metrics)


def create_app(settings: Settings, store: Store | None = None, fetch: Fetch = fetch_over_https) -> FastAPI:
    """The app; `fetch` GETs the URLs webhooks need (Amazon SNS certificates)."""
    settings.require_secret_key()
    store = store or Store(settings.database_url, busy_timeout_seconds=settings.web_db_wait_seconds)
    renderer = Renderer(settings.templates_dir, settings.base_url)
    tokens = Tokens(settings.secret_key, settings.confirm_max_age_seconds)
    mailer = ConfirmationMailer(settings, store)
    limiter = SignupLimiter(store, settings.signup_rate_limit, settings.signup_rate_window_seconds)
    clicks = ClickRedirects(None, settings, store, renderer)  # put in front of the pages by SiteApp
    metrics = WebMetrics()
    metrics.time_statements(store)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Clicks are written in batches while the app runs; a graceful stop (SIGTERM) writes the rest.
        writer = asyncio.create_task(clicks.buffer.run())
        expiry = asyncio.create_task(forget_unconfirmed_readers(store, settings, tokens))
        try:
            yield
        finally:
            for task in (writer, expiry):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = SiteApp(title="الرسالة الإخبارية", docs_url=None, redoc_url=None, openapi_url=None,
                  max_body_size=settings.max_request_bytes, lifespan=lifespan)
    app.clicks = clicks
    app.metrics = metrics
    app.state.click_buffer = clicks.buffer

    # The optional script of the signup box posts JSON from the allowed sites.
    app.add_middleware(SignupCors, allow_origins=settings.allowed_origins)
    redact_access_log()

    pages = Pages(renderer)
    app.pages = pages
    notice = pages.notice

    @app.exception_handler(404)
    async def not_found(request: Request, exc) -> Response:
        return notice("الصفحة غير موجودة", "لم نجد ما تبحث عنه.", 404)

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc) -> Response:
        response = notice("طلب غير مسموح", "لا يمكن إرسال هذا الطلب إلى هذه الصفحة.", 405)
        response.headers.update(getattr(exc, "headers", None) or {})  # Allow: the methods that work
        return response

    @app.exception_handler(OperationalError)
    async def store_busy(request: Request, exc: OperationalError) -> Response:
        # The SQLite write lock outlasted NEWSLETTER_WEB_DB_WAIT_SECONDS (a send
        # or an import is writing), or the database server is unreachable.
        log.warning("store unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
        metrics.store_unavailable.inc()
        headers = {"Retry-After": str(BUSY_RETRY_SECONDS)}
        if request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": "busy, try again shortly"}, status_code=503, headers=headers)
        response = notice("الخدمة مشغولة", "لم نتمكن من إتمام طلبك الآن. أعد المحاولة بعد لحظات.", 503)
        response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("error on %s %s", request.method, request.url.path)
        return notice("حدث خطأ", "حدث خطأ من جهتنا. أعد المحاولة بعد قليل.", 500)

    @app.api_route("/healthz", methods=GET)
    async def healthz() -> JSONResponse:
        await run_in_threadpool(store.count_subscribers, Status.active)
        return JSONResponse({"status": "ok"})

    app.include_router(reader_routes(settings, store, pages, tokens, mailer, limiter, metrics))
    app.include_router(manage_routes(settings, store, pages, tokens, metrics))
    app.include_router(webhook_routes(settings, store, fetch, count=metrics.count_reports))
    install_desk(app, settings, store, pages)
    if settings.metrics_token:
        app.include_router(metrics_routes(settings.metrics_token, metrics))
    return app


def app_from_environment() -> FastAPI:
    """The app built from .env and the environment: what each `serve --workers N` process runs."""
    return create_app(load_settings())

