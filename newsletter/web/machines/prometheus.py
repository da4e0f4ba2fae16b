"""GET /metrics, for Prometheus: the figures of web/metrics.py, to one scraper.

Only a scraper that presents NEWSLETTER_METRICS_TOKEN as `Authorization: Bearer <token>` gets an
answer (compared in constant time); anyone else gets 401 and no metric name. With no token set,
/metrics does not exist (404).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..metrics import WebMetrics
from ..pages import GET


def bearer_token(token: str):  # noqa: ANN201 (a FastAPI dependency)
    """The dependency that lets through only `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    def require_token(request: Request) -> None:
        given = request.headers.get("authorization", "").encode("latin-1", errors="replace")
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "a valid bearer token is needed", headers={"WWW-Authenticate": "Bearer"})

    return require_token


def metrics_routes(token: str, metrics: WebMetrics) -> APIRouter:
    """GET /metrics, for Prometheus holding NEWSLETTER_METRICS_TOKEN."""
    router = APIRouter(dependencies=[Depends(bearer_token(token))])

    @router.api_route("/metrics", methods=GET)
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    return router
