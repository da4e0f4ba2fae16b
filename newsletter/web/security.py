"""What keeps readers' links and pages safe, whoever answers: the headers every response carries (a 500,
a 413 and a 405 included), no caching of pages reached by a reader's token, tokens kept out of the
access log, and CORS for the signup alone."""

from __future__ import annotations

import logging

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin: our own forms send their real Origin (no-referrer would make it "null");
    # other sites never see a page address, and with it a confirm or unsubscribe token.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

# Paths whose last part is a token standing for one reader: confirm, unsubscribe, story links, the
# manage page, a new address's confirmation.
# Whoever holds one acts as that reader, so no cache keeps their pages and no log keeps the token.
READER_TOKEN_PATHS = ("/confirm/", "/unsubscribe/", "/c/", "/manage/", "/change/")
# An editor's one-time link to set a password is such a token too. Every page of the desk is an
# editor's own: never stored by a browser or a proxy either.
SECRET_PATHS = (*READER_TOKEN_PATHS, "/desk/password/")
NO_STORE_PATHS = (*READER_TOKEN_PATHS, "/desk")
REDACTED = "<token>"
NO_STORE = (b"cache-control", b"no-store")


# The desk's queries hold what an editor searched for: readers' addresses, which a log must not keep
# (a forgotten reader's would outlive them there).
PRIVATE_QUERY_PATHS = ("/desk",)


def redact_token(path: str) -> str:
    """A request's path (and query) as the access log may keep it: /confirm/<token>, /desk/readers?<query>."""
    for prefix in SECRET_PATHS:
        if path.startswith(prefix):
            return prefix + REDACTED
    if path.startswith(PRIVATE_QUERY_PATHS) and "?" in path:
        return path.split("?", 1)[0] + "?<query>"
    return path


class TokenRedaction(logging.Filter):
    """Takes readers' tokens out of uvicorn's access log lines.

    Uvicorn logs `'%s - "%s %s HTTP/%s" %d'` with the path and query as the
    third argument; a token there would let whoever reads the log act as
    the reader (confirm or unsubscribe them).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], redact_token(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install TokenRedaction on uvicorn's access logger, once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, TokenRedaction) for f in access.filters):
        access.addFilter(TokenRedaction())


class SignupCors:
    """CORS for POST /subscribe alone: the signup box's script on the allowed sites posts there.

    No other page answers another site's script: a reader's token page, read
    cross-origin, would hand that site the token.
    """

    def __init__(self, app: ASGIApp, allow_origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=allow_origins, allow_methods=["POST"],
                                   allow_headers=["Content-Type"], max_age=3600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/subscribe":
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers to every response, whoever produced it.

    It wraps the whole app, outside Starlette's error middleware, so a 500,
    a 413 from the body limit and a 405 from the router carry them too. A
    route may set its own value (the archive's CSP): it is kept. Pages reached
    by a reader's token are never stored by a browser or a proxy.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        no_store = scope["path"].startswith(NO_STORE_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                if no_store:
                    message = {**message, "headers": [(n, v) for n, v in message.get("headers", [])
                                                      if n.lower() != NO_STORE[0]]}
                    extra.append(NO_STORE)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
