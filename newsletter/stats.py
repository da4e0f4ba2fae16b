"""Issues side by side, for editors: what each issue delivered, lost and got read; and whose reports readers pick.

Rates are of the delivered. An issue's unsubscribes are the readers who left between its date and
the next issue's (the unsubscribe link names the reader, not the issue).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .store.clicks import ANY_STORY
from .store.database import IssueOutline, Store


@dataclass(frozen=True)
class IssueStats:
    issue_date: str
    subject: str
    delivered: int
    bounces: int  # hard and soft, reported after the send
    complaints: int
    unsubscribes: int
    unique_clickers: int
    top_story: str  # the title of the story most readers clicked, "" when nobody clicked
    top_story_readers: int

    def rate(self, count: int) -> float:
        return count / self.delivered if self.delivered else 0.0


@dataclass(frozen=True)
class OutletClicks:
    outlet: str
    stories: int  # stories of theirs in the issues
    unique_readers: int  # summed over those stories
    clicks: int


def issues_between(store: Store, first: dt.date, last: dt.date) -> list[IssueOutline]:
    """Every frozen issue dated from `first` to `last`, oldest first."""
    return store.issue_outlines(first.isoformat(), last.isoformat())


def issue_stats(store: Store, issues: Sequence[IssueOutline], after_last: str | None = None) -> Iterator[IssueStats]:
    """Each issue's figures (`issues` oldest first, as issues_between gives them).

    `after_last`: the date of the issue that followed the last of them, if any (a page of the
    desk's history ends before the newest issue), where that one's unsubscribes stop."""
    following = {issue.issue_date: (issues[n + 1].issue_date if n + 1 < len(issues) else after_last)
                 for n, issue in enumerate(issues)}
    for issue in issues:
        day = issue.issue_date
        delivered = store.log.delivery_counts(issue.id).get("sent", 0)
        feedback = store.feedback.counts_by_issue(day)
        clicks = store.clicks.by_story(issue.id)
        top_place = max((p for p in clicks if p != ANY_STORY), key=lambda p: clicks[p].unique_readers, default=None)
        top = issue.stories[top_place - 1] if top_place and top_place <= len(issue.stories) else {}
        whole = clicks.get(ANY_STORY)
        yield IssueStats(day, issue.subject, delivered, feedback.get("hard", 0) + feedback.get("soft", 0),
                         feedback.get("complaint", 0), store.unsubscribed_between(day, following[day]),
                         whole.unique_readers if whole else 0, str(top.get("title", "")),
                         clicks[top_place].unique_readers if top_place else 0)


def outlet_clicks(store: Store, issues: Sequence[IssueOutline]) -> list[OutletClicks]:
    """Per outlet, over `issues`: readers who clicked its stories; most read first."""
    stories, readers, clicks = Counter(), Counter(), Counter()
    for issue in issues:
        counted = store.clicks.by_story(issue.id)
        for place, story in enumerate(issue.stories, start=1):
            outlet = str(story.get("source", "")) or "?"
            stories[outlet] += 1
            if place in counted:
                readers[outlet] += counted[place].unique_readers
                clicks[outlet] += counted[place].clicks
    return sorted((OutletClicks(o, stories[o], readers[o], clicks[o]) for o in stories),
                  key=lambda o: (-o.unique_readers, -o.clicks, o.outlet))
