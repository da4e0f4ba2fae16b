"""Answering with a page of templates/pages/: Arabic, right to left, the same frame for every page."""

from __future__ import annotations

from fastapi.responses import HTMLResponse

from ..issue.render import Renderer

GET = ["GET", "HEAD"]  # uptime checks and link checkers use HEAD


class Pages:
    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def page(self, name: str, status_code: int = 200, **context: object) -> HTMLResponse:
        return HTMLResponse(self.renderer.render_page(name, **context), status_code=status_code)

    def notice(self, heading: str, text: str, status_code: int, show_form: bool = False) -> HTMLResponse:
        """A short page: a heading, a sentence, and the signup form when it helps."""
        return self.page("message", status_code, heading=heading, text=text, show_form=show_form)
