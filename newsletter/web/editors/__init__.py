"""The editors' desk under /desk of `newsletter serve`: one router per part of the newsroom's work.

The desk exists only once `newsletter editors add` has made an editor (before that every /desk
address is a 404). Around every /desk request: a POST must come from our own origin (the Origin
header). Its pages are for signed-in editors: that is one dependency, `DeskAccess.signed_in`, on
the router that holds every part below (it also checks a POST's CSRF token). Signing in and the
one-time password link are the only pages outside it.

Parts, each a module with a `routes(desk)` factory, listed in `desk_routes`: `accounts` (signing in
and out, setting a password), `home` (the first page and the audit log), `today` (steer, approve
and test the next issue), `sending` (the morning's send live), `results` (issue history, story
clicks, list growth; SVG from `charts`), `subscribers` (readers: search, history, remove, forget,
export).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from ...config import Settings
from ...store.database import Store
from ...store.editors import Editors
from ..pages import Pages
from . import accounts, home, results, sending, subscribers, today
from .access import COOKIE, DESK, Desk, DeskAccess, DeskRefusal

__all__ = ["COOKIE", "DESK", "install_desk"]


def install_desk(app: FastAPI, settings: Settings, store: Store, pages: Pages) -> None:
    """Put the desk's routes on the app, with the answer to its refusals."""

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DeskRefusal)
        return exc.response

    app.add_exception_handler(DeskRefusal, refused)
    app.include_router(desk_routes(Desk(settings, store, pages, Editors(store.engine))))


def desk_routes(desk: Desk) -> APIRouter:
    access = DeskAccess(desk)
    routes = APIRouter(dependencies=[Depends(access.desk_open), Depends(access.same_origin)])
    routes.include_router(accounts.public_routes(desk, access))
    editor = APIRouter(dependencies=[Depends(access.signed_in)])  # the desk's access rule
    for part in (accounts.routes(desk), home.routes(desk), today.routes(desk), sending.routes(desk),
                 results.routes(desk), subscribers.routes(desk)):
        editor.include_router(part)
    routes.include_router(editor)
    return routes
