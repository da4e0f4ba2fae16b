"""The editors' desk under /desk: sign-in, the one-time link to set a password, the first page, sign-out.

The desk exists only once `newsletter editors add` has made an editor (before that every /desk
address is a 404). Its pages are for signed-in editors: that is one dependency, `signed_in`, on
the router of those pages. Around it, for every /desk request: a POST must come from our own
origin (the Origin header), and a signed-in editor's POST must also carry the session's CSRF
token. The session is a random token in a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict)
standing for a row of the store, where only its hash is kept; it ends after NEWSLETTER_DESK_IDLE_MINUTES
without a request and NEWSLETTER_DESK_SESSION_HOURS after sign-in, by the database's clock.
Sign-in attempts are counted per account and per client by the shared rate limiter, and a wrong
address gets the same answer, after the same work, as a wrong password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..errors import SubscriberError
from ..passwords import hash_password, needs_rehash, password_problem, verify_password
from ..store.database import Store
from ..store.editors import Editors, EditorSession
from ..store.subscribers import normalise_email
from .pages import GET, Pages
from .ratelimit import SignupLimiter, client_address

log = logging.getLogger(__name__)

DESK = "/desk"
# __Host-: the browser takes it only from a secure origin, for this host alone (no Domain), path /.
COOKIE = "__Host-desk"
LOGIN_WINDOW_SECONDS = 15 * 60
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 10
MAX_NEXT_LENGTH = 200
AUDIT_ROWS = 200


class DeskRefusal(Exception):
    """A request the desk answers before any handler runs: its answer is ready."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def local_desk_path(value: str | None) -> str:
    """Where to go after signing in: `value` only when it is a path of the desk on this site.

    Anything else (another host, //host, /\\host, a scheme, a path outside the desk, control
    characters that browsers drop) is the desk's front page: `next=` is never an open redirect.
    """
    if not value or len(value) > MAX_NEXT_LENGTH or "\\" in value or not value.isprintable():
        return DESK
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == DESK or parts.path.startswith(DESK + "/")):
        return DESK
    if ".." in parts.path.split("/") or "//" in parts.path:
        return DESK
    return urlunsplit(("", "", parts.path, parts.query, ""))


@dataclass(frozen=True)
class DeskStatus:
    """What the first page shows of today's issue."""

    issue_date: str
    frozen: bool
    approved_by: str | None
    approved_at: dt.datetime | None
    counts: dict[str, int]


def desk_status(settings: Settings, store: Store) -> DeskStatus:
    issue_date = dt.datetime.now(settings.zone).date().isoformat()
    issue = store.get_issue(issue_date)
    approval = store.approvals.of(issue_date)
    counts = store.log.delivery_counts(issue.id) if issue is not None else {}
    return DeskStatus(issue_date, issue is not None, approval.approved_by if approval else None,
                      approval.approved_at if approval else None, counts)


def install_desk(app: FastAPI, settings: Settings, store: Store, pages: Pages) -> None:
    """Put the desk's routes on the app, with the answer to its refusals."""

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DeskRefusal)
        return exc.response

    app.add_exception_handler(DeskRefusal, refused)
    app.include_router(desk_routes(settings, store, pages))


def desk_routes(settings: Settings, store: Store, pages: Pages) -> APIRouter:
    editors = Editors(store.engine)
    idle_seconds = settings.desk_idle_minutes * 60
    max_seconds = settings.desk_session_hours * 3600
    by_account = SignupLimiter(store, settings.desk_login_limit, LOGIN_WINDOW_SECONDS, name="desk-account")
    by_client = SignupLimiter(store, settings.desk_login_client_limit, LOGIN_WINDOW_SECONDS, name="desk-client")
    page, notice = pages.page, pages.notice

    async def desk_open(request: Request) -> None:
        """No editor yet: there is no desk (404), not a sign-in page for accounts nobody can have."""
        if not await run_in_threadpool(editors.count):
            raise DeskRefusal(notice("الصفحة غير موجودة", "لم نجد ما تبحث عنه.", 404))

    async def same_origin(request: Request) -> None:
        """Every POST to the desk comes from the desk's own pages: another site's form gets 403."""
        if request.method in GET:
            return
        if request.headers.get("origin", "").lower() != settings.own_origin:
            log.info("desk: %s %s refused: posted from %s", request.method, request.url.path,
                     request.headers.get("origin") or "no origin")
            raise DeskRefusal(notice("طلب غير مسموح", "لا يُقبل هذا الطلب إلا من صفحات المكتب نفسها.", 403))

    async def signed_in(request: Request) -> EditorSession:
        """The editor whose live session the cookie names; others are sent to sign in.

        A POST must also carry the session's CSRF token."""
        token = request.cookies.get(COOKIE, "")
        session = await run_in_threadpool(editors.session, token, idle_seconds, max_seconds) if token else None
        if session is None:
            target = request.url.path if request.method in GET else DESK
            raise DeskRefusal(RedirectResponse(f"{DESK}/sign-in?next={quote(target, safe='/')}", status_code=303))
        if request.method not in GET:
            fields = await form_fields(request)
            if not hmac.compare_digest(fields.get("csrf", "").encode(), session.csrf_token.encode()):
                log.info("desk: %s %s refused: no valid CSRF token", request.method, request.url.path)
                raise DeskRefusal(notice("طلب غير مسموح", "انتهت صلاحية هذه الصفحة. افتحها من جديد وأعد المحاولة.",
                                         403))
        return session

    desk = APIRouter(dependencies=[Depends(desk_open), Depends(same_origin)])
    public = APIRouter()
    editor = APIRouter(dependencies=[Depends(signed_in)])  # the desk's access rule

    # Signing in ---------------------------------------------------------------

    @public.api_route(f"{DESK}/sign-in", methods=GET)
    async def sign_in_page(request: Request, next: str = "") -> Response:  # noqa: A002 (the parameter's name)
        token = request.cookies.get(COOKIE, "")
        if token and await run_in_threadpool(editors.session, token, idle_seconds, max_seconds):
            return RedirectResponse(local_desk_path(next), status_code=303)
        return page("desk/sign_in", next=local_desk_path(next), done=request.query_params.get("done") == "password")

    @public.post(f"{DESK}/sign-in")
    async def sign_in(request: Request) -> Response:
        fields = await form_fields(request)
        target = local_desk_path(fields.get("next"))
        raw_email = fields.get("email", "")[:320]
        try:
            email = normalise_email(raw_email)
        except SubscriberError:
            email = raw_email.strip().lower()
        account = "account-" + hashlib.sha256(email.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        forwarded_for = ", ".join(request.headers.getlist("x-forwarded-for")) or None
        client = client_address(request.client.host if request.client else "unknown", forwarded_for,
                                settings.trusted_proxies)
        wait = await run_in_threadpool(by_client.retry_after, client) or \
            await run_in_threadpool(by_account.retry_after, account)
        if wait:
            log.info("desk: sign-in throttled for %s", client)
            response = page("desk/sign_in", 429, next=target, email=raw_email, error="throttled", done=False)
            response.headers["Retry-After"] = str(wait)
            return response
        found = await run_in_threadpool(editors.credentials, email)
        editor_id, stored_hash = found if found else (None, None)
        # Verified even for an unknown account (against a stand-in hash): the same work, the same answer.
        if not await run_in_threadpool(verify_password, stored_hash, fields.get("password", "")) or editor_id is None:
            log.info("desk: sign-in refused from %s", client)
            return page("desk/sign_in", 422, next=target, email=raw_email, error="wrong", done=False)
        if stored_hash and needs_rehash(stored_hash):
            await run_in_threadpool(editors.replace_hash, editor_id, hash_password(fields.get("password", "")))
        # A new session every time: a cookie planted before sign-in (fixation) is never promoted.
        old = request.cookies.get(COOKIE, "")
        if old:
            stale = await run_in_threadpool(editors.session, old, idle_seconds, max_seconds)
            if stale is not None:
                await run_in_threadpool(editors.end_session, stale)
        await run_in_threadpool(editors.drop_expired, idle_seconds, max_seconds)
        token = await run_in_threadpool(editors.start_session, editor_id)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, token, max_age=max_seconds, path="/", secure=True, httponly=True,
                            samesite="strict")
        return response

    # The one-time link ----------------------------------------------------------

    @public.api_route(DESK + "/password/{token}", methods=GET)
    async def password_page(token: str) -> Response:
        email = await run_in_threadpool(editors.link_holder, token)
        if email is None:
            return page("desk/link_invalid", 404)
        return page("desk/password", email=email, problem=None)

    @public.post(DESK + "/password/{token}")
    async def set_password(request: Request, token: str) -> Response:
        fields = await form_fields(request)
        email = await run_in_threadpool(editors.link_holder, token)
        if email is None:
            return page("desk/link_invalid", 404)
        problem = password_problem(fields.get("password", ""), fields.get("repeated", ""), email)
        if problem is not None:
            return page("desk/password", 422, email=email, problem=problem.value)
        if await run_in_threadpool(editors.set_password, token, hash_password(fields["password"])) is None:
            return page("desk/link_invalid", 404)
        response = RedirectResponse(f"{DESK}/sign-in?done=password", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # Signed-in pages ----------------------------------------------------------------

    @editor.api_route(DESK, methods=GET)
    async def front_page(session: EditorSession = Depends(signed_in)) -> Response:
        status = await run_in_threadpool(desk_status, settings, store)
        return page("desk/home", editor=session.email, csrf=session.csrf_token, status=status)

    @editor.api_route(f"{DESK}/audit", methods=GET)
    async def audit_page(session: EditorSession = Depends(signed_in)) -> Response:
        entries = await run_in_threadpool(editors.audit, AUDIT_ROWS)
        return page("desk/audit", editor=session.email, csrf=session.csrf_token, entries=entries, zone=settings.zone)

    @editor.post(f"{DESK}/sign-out")
    async def sign_out(session: EditorSession = Depends(signed_in)) -> Response:
        await run_in_threadpool(editors.end_session, session)
        response = RedirectResponse(f"{DESK}/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    desk.include_router(public)
    desk.include_router(editor)
    return desk


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form's fields (the first of each name), read once; a body that is not one is a 4xx."""
    cached = getattr(request.state, "desk_form", None)
    if cached is not None:
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise DeskRefusal(Response("send the desk's form (application/x-www-form-urlencoded)\n", status_code=415,
                                   media_type="text/plain"))
    body = await request.body()
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (ValueError, UnicodeDecodeError):
        raise DeskRefusal(Response("the form could not be read\n", status_code=400, media_type="text/plain")) from None
    fields = {name: values[0] for name, values in parsed.items()}
    request.state.desk_form = fields
    return fields
