"""One finding of `newsletter doctor`: a name, whether it is fine, what was seen, and what to do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not applicable with these settings (a feature not configured)
    detail: str
    fix: str = ""

    @property
    def status(self) -> str:
        return {True: "ok", False: "fail", None: "skip"}[self.ok]

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "–"}[self.ok]
        fix = f" → {self.fix}" if self.fix and self.ok is False else ""
        return f"{mark} {self.name}: {self.detail}{fix}"

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def skipped(name: str, detail: str) -> Check:
    return Check(name, None, detail)
