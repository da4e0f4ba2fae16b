"""Who may use the desk: it exists, a POST comes from its own pages, the editor is signed in.

The session is a random token in a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict)
standing for a row of the store, where only its hash is kept; it ends after NEWSLETTER_DESK_IDLE_MINUTES
without a request and NEWSLETTER_DESK_SESSION_HOURS after sign-in, by the database's clock.
A signed-in editor's POST must also carry the session's CSRF token.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ...config import Settings
from ...store.database import Store
from ...store.editors import Editors, EditorSession
from ..pages import GET, Pages

log = logging.getLogger(__name__)

DESK = "/desk"
# __Host-: the browser takes it only from a secure origin, for this host alone (no Domain), path /.
COOKIE = "__Host-desk"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 10
MAX_NEXT_LENGTH = 200


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
class Desk:
    """What every part of the desk works with."""

    settings: Settings
    store: Store
    pages: Pages
    editors: Editors

    def page(self, name: str, session: EditorSession, status_code: int = 200, **context: object) -> Response:
        """A signed-in page of templates/pages/desk/: its bar names the editor and carries the CSRF token."""
        return self.pages.page(f"desk/{name}", status_code, editor=session.email, csrf=session.csrf_token,
                               **context)

    async def record(self, session: EditorSession, action: str, detail: str = "") -> None:
        """One line of the audit log: this editor did this, now (the database's clock)."""
        await run_in_threadpool(self.editors.record, session.email, action, detail)


class DeskAccess:
    """The desk's dependencies: it exists, a POST is our own, and the editor is signed in."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.idle_seconds = desk.settings.desk_idle_minutes * 60
        self.max_seconds = desk.settings.desk_session_hours * 3600

    async def desk_open(self, request: Request) -> None:
        """No editor yet: there is no desk (404), not a sign-in page for accounts nobody can have."""
        if not await run_in_threadpool(self.desk.editors.count):
            raise DeskRefusal(self.desk.pages.notice("الصفحة غير موجودة", "لم نجد ما تبحث عنه.", 404))

    async def same_origin(self, request: Request) -> None:
        """Every POST to the desk comes from the desk's own pages: another site's form gets 403."""
        if request.method in GET:
            return
        if request.headers.get("origin", "").lower() != self.desk.settings.own_origin:
            log.info("desk: %s %s refused: posted from %s", request.method, request.url.path,
                     request.headers.get("origin") or "no origin")
            raise DeskRefusal(self.desk.pages.notice("طلب غير مسموح", "لا يُقبل هذا الطلب إلا من صفحات المكتب نفسها.",
                                                     403))

    async def session_of(self, request: Request) -> EditorSession | None:
        """The live session the request's cookie names, if any."""
        token = request.cookies.get(COOKIE, "")
        if not token:
            return None
        return await run_in_threadpool(self.desk.editors.session, token, self.idle_seconds, self.max_seconds)

    async def signed_in(self, request: Request) -> EditorSession:
        """The editor whose live session the cookie names; others are sent to sign in.

        A POST must also carry the session's CSRF token. The session is kept on the request for
        the handlers (`current_editor`)."""
        session = await self.session_of(request)
        if session is None:
            target = request.url.path if request.method in GET else DESK
            raise DeskRefusal(RedirectResponse(f"{DESK}/sign-in?next={quote(target, safe='/')}", status_code=303))
        if request.method not in GET:
            fields = await form_fields(request)
            if not hmac.compare_digest(fields.get("csrf", "").encode(), session.csrf_token.encode()):
                log.info("desk: %s %s refused: no valid CSRF token", request.method, request.url.path)
                raise DeskRefusal(self.desk.pages.notice(
                    "طلب غير مسموح", "انتهت صلاحية هذه الصفحة. افتحها من جديد وأعد المحاولة.", 403))
        request.state.desk_session = session
        return session


def current_editor(request: Request) -> EditorSession:
    """The signed-in editor of this request (the desk router's `signed_in` has run before any handler)."""
    return request.state.desk_session


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
