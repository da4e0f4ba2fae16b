"""Results: what each issue delivered, lost and got read, and how the list grew day by day.

/desk/issues: the issues newest first, a keyset page at a time (?before=<the last date shown>), with
the figures of `newsletter stats` (newsletter/stats.py): delivered, bounce, complaint and unsubscribe
rates, unique click rate. /desk/issues/<date>: one issue, each story's clicks as a bar chart.
/desk/growth: signups, confirmations, unsubscribes, bounces and net per day over the last 30 or 90
days (the newsroom's time zone, the database's clock), from store/list_changes.py, as charts and a
table. Clicks are read from the counts the click redirect keeps, never from who clicked. Read-only:
nothing here writes, so nothing here is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...stats import IssueStats, issue_stats
from ...store.clicks import StoryClicks
from ...store.database import Store
from ...store.editors import EditorSession
from ...store.history import IssueHistory
from ...store.list_changes import DayChanges
from ..pages import GET
from .access import DESK, Desk, current_editor
from .charts import DayChart, StoryChart, day_chart, story_chart

PAGE_ISSUES = 20
GROWTH_DAYS = (30, 90)  # the periods offered; the first is the default
GROWTH_SERIES = ("signups", "confirmations", "unsubscribes", "bounces", "net")


@dataclass(frozen=True)
class HistoryPage:
    rows: list[IssueStats]  # newest first
    older: str | None  # the `before` of the next page, None on the last


def history_page(store: Store, before: str | None, size: int = PAGE_ISSUES) -> HistoryPage:
    """One page of the history: up to `size` issues before `before`, newest first, with their figures."""
    history = IssueHistory(store.engine)
    dates = history.dates_before(before, size + 1)
    shown = dates[:size]
    issues = store.issue_outlines(shown[-1], shown[0]) if shown else []  # `shown` is newest first
    after_last = history.date_after(shown[0]) if shown else None
    rows = list(issue_stats(store, issues, after_last))
    return HistoryPage(rows[::-1], shown[-1] if len(dates) > size else None)


@dataclass(frozen=True)
class StoryResult:
    place: int
    title: str
    source: str
    url: str
    clicks: StoryClicks


@dataclass(frozen=True)
class IssueResult:
    stats: IssueStats
    stories: list[StoryResult]
    chart: StoryChart


def issue_result(store: Store, day: str) -> IssueResult | None:
    """One issue's figures and its stories' clicks (the lead first); None when no issue has that date."""
    issue = store.issue_outline(day)
    if issue is None:
        return None
    [stats] = issue_stats(store, [issue], IssueHistory(store.engine).date_after(day))
    counted = store.clicks.by_story(issue.id)
    stories = [StoryResult(place, str(story.get("title", "")), str(story.get("source", "")),
                           str(story.get("url", "")), counted.get(place, StoryClicks(place, 0, 0, 0)))
               for place, story in enumerate(issue.stories, start=1)]
    return IssueResult(stats, stories, story_chart([(s.place, s.clicks.clicks) for s in stories]))


@dataclass(frozen=True)
class Growth:
    days: list[DayChanges]  # oldest first
    charts: dict[str, DayChart]  # one per series of GROWTH_SERIES
    totals: DayChanges  # the whole period, dated its last day


def growth(store: Store, days: int, zone) -> Growth:
    """The list's changes over the last `days` days, today included (today by the database's clock)."""
    today = store.changes.today(zone)
    per_day = store.changes.per_day(today - dt.timedelta(days=days - 1), today, zone)
    charts = {series: day_chart([(d.day, getattr(d, series)) for d in per_day]) for series in GROWTH_SERIES}
    totals = DayChanges(today, sum(d.signups for d in per_day), sum(d.confirmations for d in per_day),
                        sum(d.unsubscribes for d in per_day), sum(d.bounces for d in per_day))
    return Growth(per_day, charts, totals)


def _issue_date(value: str | None) -> str | None:
    """`value` when it is a date like 2026-12-06 (the form issues are dated in), else None."""
    try:
        return dt.date.fromisoformat(value).isoformat() if value and len(value) == 10 else None
    except ValueError:
        return None


def routes(desk: Desk) -> APIRouter:
    router = APIRouter()

    @router.api_route(f"{DESK}/issues", methods=GET)
    async def issues_page(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        given = request.query_params.get("before")
        before = _issue_date(given)
        if given is not None and before is None:
            return desk.page("results_missing", session, 404, what=given)
        page = await run_in_threadpool(history_page, desk.store, before)
        return desk.page("issues", session, page=page, first_page=before is None, part="issues")

    @router.api_route(DESK + "/issues/{day}", methods=GET)
    async def issue_page(day: str, session: EditorSession = Depends(current_editor)) -> Response:
        found = _issue_date(day)
        result = await run_in_threadpool(issue_result, desk.store, found) if found else None
        if result is None:
            return desk.page("results_missing", session, 404, what=day)
        return desk.page("issue", session, result=result, part="issues")

    @router.api_route(f"{DESK}/growth", methods=GET)
    async def growth_page(request: Request, session: EditorSession = Depends(current_editor)) -> Response:
        asked = request.query_params.get("days", str(GROWTH_DAYS[0]))
        if asked not in {str(d) for d in GROWTH_DAYS}:
            return desk.page("results_missing", session, 404, what=asked)
        figures = await run_in_threadpool(growth, desk.store, int(asked), desk.settings.zone)
        return desk.page("growth", session, growth=figures, days=int(asked), periods=GROWTH_DAYS,
                         series=GROWTH_SERIES, part="growth")

    return router
