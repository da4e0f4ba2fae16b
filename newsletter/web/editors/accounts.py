"""Signing in and out, and setting a password from the one-time link `newsletter editors add` prints.

Sign-in attempts are counted per account and per client by the shared rate limiter, and a wrong
address gets the same answer, after the same work, as a wrong password.

Refused sign-ins to an existing account go to the audit log (the account, the client's address; never
what was typed as a password), at most one line per account, kind (wrong password, throttled) and
15-minute window: a guesser cannot flood the table, and the editors still see that someone tried.
An address that is no editor's is not logged there: nothing of ours was at risk, and a stranger
could otherwise write whatever they like into the log. The line is written after the answer has
gone, so the answer takes no longer for an existing account than for an unknown one.
"""

from __future__ import annotations

import hashlib
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ...errors import SubscriberError
from ...passwords import hash_password, needs_rehash, password_problem, verify_password
from ...store.editors import EditorSession
from ...store.subscribers import normalise_email
from ..pages import GET
from ..ratelimit import SignupLimiter, client_address
from .access import COOKIE, DESK, Desk, DeskAccess, current_editor, form_fields, local_desk_path

log = logging.getLogger(__name__)

LOGIN_WINDOW_SECONDS = 15 * 60


def public_routes(desk: Desk, access: DeskAccess) -> APIRouter:
    """The pages before signing in: the sign-in form and the one-time link."""
    settings, editors, page = desk.settings, desk.editors, desk.pages.page
    by_account = SignupLimiter(desk.store, settings.desk_login_limit, LOGIN_WINDOW_SECONDS, name="desk-account")
    by_client = SignupLimiter(desk.store, settings.desk_login_client_limit, LOGIN_WINDOW_SECONDS, name="desk-client")
    public = APIRouter()

    def audit_refusal(email: str, account: str, action: str, client: str) -> None:
        """The first refusal of its kind this window for an existing account, into the audit log."""
        if editors.credentials(email) is None:
            return
        _, hits, _ = desk.store.count_request(f"audit-{action}:{account}", LOGIN_WINDOW_SECONDS)
        if hits == 1:
            editors.record(email, action, client)

    @public.api_route(f"{DESK}/sign-in", methods=GET)
    async def sign_in_page(request: Request, next: str = "") -> Response:  # noqa: A002 (the parameter's name)
        if await access.session_of(request):
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
            response.background = BackgroundTask(audit_refusal, email, account, "sign-in-throttled", client)
            return response
        found = await run_in_threadpool(editors.credentials, email)
        editor_id, stored_hash = found if found else (None, None)
        # Verified even for an unknown account (against a stand-in hash): the same work, the same answer.
        if not await run_in_threadpool(verify_password, stored_hash, fields.get("password", "")) or editor_id is None:
            log.info("desk: sign-in refused from %s", client)
            response = page("desk/sign_in", 422, next=target, email=raw_email, error="wrong", done=False)
            response.background = BackgroundTask(audit_refusal, email, account, "sign-in-failed", client)
            return response
        if stored_hash and needs_rehash(stored_hash):
            await run_in_threadpool(editors.replace_hash, editor_id, hash_password(fields.get("password", "")))
        # A new session every time: a cookie planted before sign-in (fixation) is never promoted.
        stale = await access.session_of(request)
        if stale is not None:
            await run_in_threadpool(editors.end_session, stale)
        await run_in_threadpool(editors.drop_expired, access.idle_seconds, access.max_seconds)
        token = await run_in_threadpool(editors.start_session, editor_id)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, token, max_age=access.max_seconds, path="/", secure=True, httponly=True,
                            samesite="strict")
        return response

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
        forget_session_cookie(response)
        return response

    return public


def routes(desk: Desk) -> APIRouter:
    """Signing out: a signed-in editor's POST."""
    router = APIRouter()

    @router.post(f"{DESK}/sign-out")
    async def sign_out(session: EditorSession = Depends(current_editor)) -> Response:
        await run_in_threadpool(desk.editors.end_session, session)
        response = RedirectResponse(f"{DESK}/sign-in", status_code=303)
        forget_session_cookie(response)
        return response

    return router


def forget_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
