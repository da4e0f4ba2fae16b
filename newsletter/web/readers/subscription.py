"""Readers' pages: signup (and the signup box for article pages), confirm, unsubscribe, the archive.

Anyone may ask for these; where a page acts on a reader, the link's signed token says which
(confirmations expire, unsubscribe links never do). Every page is Arabic and right to left, from
templates/pages/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from urllib.parse import parse_qs, urlsplit, urlunsplit

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ...config import Settings
from ...errors import SubscriberError
from ...issue.render import shared_copy
from ...mail.confirmations import ConfirmationMailer
from ...store.database import Status, Store
from ...store.subscribers import normalise_email
from ...tokens import Tokens
from ..metrics import WebMetrics
from ..pages import GET, Pages
from ..ratelimit import SignupLimiter, client_address
from ..security import SECURITY_HEADERS

log = logging.getLogger(__name__)

# The archived issues are emails: their inline styles and remote images must show.
ARCHIVE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
               "base-uri 'none'; frame-ancestors 'self'")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# How often `serve` forgets addresses never confirmed (NEWSLETTER_PENDING_DAYS).
PENDING_SWEEP_SECONDS = 3600
# A link from an email: GET and HEAD show its page, the reader's POST acts (Allow lists all three).
READER_LINK = [*GET, "POST"]
INVALID_EMAIL = "هذا العنوان لا يبدو بريدًا إلكترونيًا صحيحًا. تحقق منه وأعد المحاولة."


def reader_routes(settings: Settings, store: Store, pages: Pages, tokens: Tokens, mailer: ConfirmationMailer,
                  limiter: SignupLimiter, metrics: WebMetrics) -> APIRouter:
    router = APIRouter()
    renderer = pages.renderer
    page, notice = pages.page, pages.notice

    @router.api_route("/", methods=GET, response_class=HTMLResponse)
    async def signup_page() -> HTMLResponse:
        return page("signup")

    def asset(name: str, media_type: str) -> Response:
        """A file of templates/pages/, read on each request so editors' changes show at once."""
        body = (settings.templates_dir / "pages" / name).read_text(encoding="utf-8")
        # Article pages on other sites load the box's stylesheet and script.
        return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600",
                                                              "Cross-Origin-Resource-Policy": "cross-origin"})

    def snippet() -> str:
        return renderer.render_page("embed_snippet").strip() + "\n"

    @router.api_route("/static/site.css", methods=GET)
    async def stylesheet() -> Response:
        return asset("site.css", "text/css; charset=utf-8")

    trusted_origins = frozenset([settings.own_origin, *settings.allowed_origins])

    def embed_return(fields: dict[str, str]) -> str | None:
        """The article to send a no-JavaScript embed signup back to, if it is on an allowed site."""
        url = fields.get("return_to", "").strip()
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and f"{parts.scheme}://{parts.netloc.lower()}" in trusted_origins:
            return urlunsplit(parts._replace(fragment=""))
        return None

    @router.post("/subscribe")
    async def subscribe(request: Request, background: BackgroundTasks) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        wants_json = content_type == "application/json"
        if not wants_json and content_type not in FORM_TYPES:
            return JSONResponse({"error": "send a form or JSON"}, status_code=415)
        if not _from_trusted_page(request, trusted_origins):
            log.info("signup refused: posted from %s", request.headers.get("origin") or "another site")
            if wants_json:
                return JSONResponse({"error": "sign-ups are not accepted from this site"}, status_code=403)
            return notice("طلب غير مسموح", "لا يقبل هذا الموقع الاشتراك من هذه الصفحة. اشترك من صفحتنا.", 403,
                          show_form=True)
        fields = await _read_fields(request, wants_json)
        if fields is None:
            if wants_json:
                return JSONResponse({"error": "the body is not valid JSON with an email field"}, status_code=400)
            return page("signup", 400, error=INVALID_EMAIL)
        back = None if wants_json else embed_return(fields)

        # Every X-Forwarded-For line, in order: a proxy may add its own line after the client's.
        forwarded_for = ", ".join(request.headers.getlist("x-forwarded-for")) or None
        client = client_address(request.client.host if request.client else "unknown", forwarded_for,
                                settings.trusted_proxies)
        wait = await run_in_threadpool(limiter.retry_after, client)
        if wait:
            metrics.rate_limited.inc()
            headers = {"Retry-After": str(wait)}
            if wants_json:
                return JSONResponse({"error": "too many requests"}, status_code=429, headers=headers)
            if back:
                return RedirectResponse(f"{back}#nl-later", status_code=303, headers=headers)
            response = notice("طلبات كثيرة", "حاولت مرات كثيرة في وقت قصير. انتظر قليلًا ثم أعد المحاولة.", 429)
            response.headers.update(headers)
            return response

        raw_email = fields.get("email", "")
        if fields.get("website"):  # the honeypot: only bots fill a field nobody can see
            log.info("signup honeypot filled from %s; ignored", client)
        else:
            try:
                email = normalise_email(raw_email)
            except SubscriberError:
                if wants_json:
                    return JSONResponse({"error": "invalid email address"}, status_code=422)
                if back:
                    return RedirectResponse(f"{back}#nl-invalid", status_code=303)
                return page("signup", 422, error=INVALID_EMAIL, email=raw_email[:320])
            # The web form has no name field: a name from a stranger would go into
            # the To: of a mail sent to any address.
            subscriber = await run_in_threadpool(store.request_subscription, email)
            metrics.signups.inc()
            if subscriber is not None:
                background.add_task(mailer.send, subscriber)
        # The same answer whether the address was new, pending or already active.
        if wants_json:
            response = JSONResponse({"status": "pending", "message": "check your inbox to confirm"}, status_code=202)
        elif back:
            response = RedirectResponse(f"{back}#nl-thanks", status_code=303)
        else:
            response = page("thanks")
        response.background = background
        return response

    @router.api_route("/embed", methods=GET)
    async def embed_page() -> HTMLResponse:
        response = page("embed", snippet=snippet(), origins=settings.allowed_origins)
        # The page shows the box working, script included.
        response.headers["Content-Security-Policy"] = SECURITY_HEADERS["Content-Security-Policy"] \
            .replace("default-src 'none';", "default-src 'none'; script-src 'self'; connect-src 'self';")
        return response

    @router.api_route("/embed/snippet", methods=GET)
    async def embed_snippet() -> Response:
        return PlainTextResponse(snippet())

    @router.api_route("/embed.css", methods=GET)
    async def embed_css() -> Response:
        return asset("embed.css", "text/css; charset=utf-8")

    @router.api_route("/embed.js", methods=GET)
    async def embed_js() -> Response:
        return asset("embed.js", "text/javascript; charset=utf-8")

    # A GET (or HEAD) on a link from an email only shows a page: mail scanners (Safe Links, Proofpoint,
    # Mimecast) open every link of a message. The reader's press of the page's button, a POST, acts.
    @router.api_route("/confirm/{token}", methods=READER_LINK)
    async def confirm(token: str, request: Request) -> Response:
        check = tokens.check_confirm(token)
        if check.subscriber_id is None or check.expired:
            known = await run_in_threadpool(store.subscriber_by_id, check.subscriber_id) \
                if check.subscriber_id else None
            return page("confirm_invalid", 400, expired=check.expired, email=known.email if known else "")
        welcome = None
        if request.method == "POST":
            await _drain(request)
            subscriber, newly = await run_in_threadpool(store.confirm_telling, check.subscriber_id)
            if subscriber is not None:
                metrics.confirmations.inc()
                await run_in_threadpool(store.lift_suppression, tokens.email_hash(subscriber.email))
            if newly and settings.welcome:  # once, after the page is sent: the reader does not wait on SMTP
                welcome = BackgroundTask(mailer.send_welcome, subscriber)
        else:
            subscriber = await run_in_threadpool(store.subscriber_by_id, check.subscriber_id)
        if subscriber is None or subscriber.status not in (Status.pending.value, Status.active.value):
            return page("confirm_invalid", 400, expired=False, email="")
        if subscriber.status == Status.active.value:
            response = page("confirmed")
            response.background = welcome
            return response
        return page("confirm", action=f"{settings.base_url}/confirm/{token}", email=subscriber.email)

    @router.api_route("/unsubscribe", methods=GET)
    async def unsubscribe_help() -> HTMLResponse:
        return notice("إلغاء الاشتراك", "استخدم رابط «إلغاء الاشتراك» في أسفل أي رسالة وصلتك منا.", 200)

    @router.api_route("/unsubscribe/{token}", methods=READER_LINK)
    async def unsubscribe(token: str, request: Request) -> Response:
        subscriber_id = tokens.subscriber_from_unsubscribe(token)
        if subscriber_id is None:
            return notice("رابط غير صالح", "رابط إلغاء الاشتراك هذا غير صالح. استخدم الرابط كما وصلك في الرسالة.", 400)
        if request.method != "POST":
            return page("unsubscribe", action=f"{settings.base_url}/unsubscribe/{token}")
        # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click; our own
        # button posts the same. No cookie, no confirmation step.
        await _drain(request)
        if await run_in_threadpool(store.unsubscribe, subscriber_id):
            metrics.unsubscribes.inc()
        return page("unsubscribed")

    @router.api_route("/archive", methods=GET)
    async def archive() -> HTMLResponse:
        issues = [
            {"date": day, "subject": subject, "date_label": renderer.date_label(dt.date.fromisoformat(day))}
            for day, subject in await run_in_threadpool(store.list_issue_dates)
        ]
        return page("archive", issues=issues)

    @router.api_route("/archive/{day}", methods=GET)
    async def archived_issue(day: str) -> Response:
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            return notice("تاريخ غير صحيح", "اكتب التاريخ بالشكل 2026-11-24.", 404)
        if day != date.isoformat():  # 20170509 and the like: one address per issue
            return RedirectResponse(f"/archive/{date.isoformat()}", status_code=308)
        issue = await run_in_threadpool(store.get_issue, day)
        if issue is None:
            return notice("لا رسالة في هذا اليوم", "لم تُرسل رسالة في هذا التاريخ.", 404)
        return HTMLResponse(shared_copy(issue.html, issue.stories), headers={"Content-Security-Policy": ARCHIVE_CSP})

    return router


async def forget_unconfirmed_readers(store: Store, settings: Settings, tokens: Tokens) -> None:
    """Forget, at start and then hourly, addresses never confirmed within NEWSLETTER_PENDING_DAYS.

    Every worker process does it: the deletes are idempotent, and cheap when
    there is nothing to forget. A store that cannot be reached is tried again
    at the next hour.
    """
    age = dt.timedelta(days=settings.pending_days)
    while True:
        try:
            forgotten = await run_in_threadpool(store.forget_unconfirmed, age, tokens.email_hash)
        except SQLAlchemyError as exc:
            log.warning("unconfirmed readers not forgotten this time: %s", " ".join(str(exc).split())[:300])
        else:
            if forgotten:
                log.info("forgot %d address(es) never confirmed within %g day(s) (NEWSLETTER_PENDING_DAYS)",
                         forgotten, settings.pending_days)
        await asyncio.sleep(PENDING_SWEEP_SECONDS)


async def _drain(request: Request) -> None:
    """Read the (ignored) body of a button's POST, so that one over NEWSLETTER_MAX_REQUEST_BYTES is refused
    with a 413 before anything changes."""
    await request.body()


def _from_trusted_page(request: Request, trusted_origins: frozenset[str]) -> bool:
    """Whether a signup was posted from our own pages, an allowed site, or no browser at all.

    Browsers send Origin with every POST ("null" when the page's referrer policy
    hides it, as ours does) and Sec-Fetch-Site; a request with neither comes from
    a program (curl, a newsroom's server), which no other site can make a reader's
    browser send.
    """
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin and origin != "null":
        return origin.lower() in trusted_origins
    if origin == "null":
        return site == "same-origin"
    return site in (None, "same-origin", "none")


async def _read_fields(request: Request, wants_json: bool) -> dict[str, str] | None:
    """The submitted fields as strings, or None when the body cannot be read as such."""
    body = await request.body()
    try:
        if wants_json:
            data = json.loads(body or b"null")
        else:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                try:
                    form = await request.form()
                except HTTPException:  # Starlette's own English 400 for a broken multipart body: ours is Arabic
                    return None
                data = {k: v for k, v in form.items() if isinstance(v, str)}
            else:
                data = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested a thousand levels deep. Whatever cannot be
        # read as a flat object is the client's mistake, never a 500.
        return None
    if not isinstance(data, dict) or not isinstance(data.get("email", ""), str):
        return None
    return {k: v for k, v in data.items() if isinstance(v, str)}
