"""The click benchmark's baseline: the least a redirect can do under the same uvicorn.

One Starlette route answering every /c/<token> with a constant 302, nothing checked, nothing
counted: `newsletter serve`'s /c/ is measured against it (benchmarks/clicks.py).
"""

from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route


async def redirect(request) -> RedirectResponse:
    return RedirectResponse("https://outlet.example/story/1", status_code=302)


app = Starlette(routes=[Route("/c/{token}", redirect, methods=["GET", "HEAD"])])
