"""One day's issue as editors work on it, before it is frozen: built from the feeds, steered by forms.

`newsletter preview` (a local page) and the desk's today page (/desk/today of `newsletter serve`)
both show an `EditedIssue` and hand each posted steering form to `apply_steering`, so the two
write the editorial file, check its version and approve the issue in exactly the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import edition
from .config import Settings
from .errors import NewsletterError
from .issue.editorial import EditorialError
from .issue.feeds import FeedBatch, read_feeds_async
from .issue.render import GMAIL_CLIP_BYTES, UNSUBSCRIBE_SLOT, RenderedIssue, html_digest
from .issue.steering import Change, StaleVersion, can_undo, current_version, steer, undo
from .sample_pictures import with_sample_pictures
from .stats import issues_between, outlet_clicks
from .store.approvals import Approval
from .store.database import Store

log = logging.getLogger(__name__)

APPROVE = "approve"
UNDO = "undo"


async def read_configured_feeds(settings: Settings) -> FeedBatch:
    """Every configured feed, read now; a feed that fails is a line of the batch's failures, not an error."""
    return await read_feeds_async(settings.feeds, settings.feed_timeout, settings.feed_max_bytes,
                                  settings.feed_outlets)


@dataclass
class EditedIssue:
    """The issue of `date` as last built from `feeds` and the editorial file, and what went wrong if it could not be."""

    settings: Settings
    store: Store
    date: dt.date
    feeds: FeedBatch | None = None
    draft: edition.Draft | None = None
    rendered: RenderedIssue | None = None
    error: str = ""
    # The error is the editorial file's: the buttons, which write that file, wait until it is mended. Other
    # errors (no story in the window, an issue too big) are mended with the buttons: pull a story in, drop one.
    editorial_broken: bool = False

    def rebuild(self) -> None:
        """Select and render again from the feeds already read (templates or the editorial file changed)."""
        try:
            self.draft = edition.draft_edition(self.settings, self.store, self.date, self.feeds)
            self.rendered = edition.render_draft(self.settings, self.draft)
            self.error, self.editorial_broken = "", False
        except NewsletterError as exc:  # the last good build stays on the page, under the error
            self.error, self.editorial_broken = str(exc), isinstance(exc, EditorialError)
            log.warning("issue of %s cannot be built: %s", self.date, exc)

    def email_html(self, sample_picture_url: Callable[[Path], str]) -> str:
        """The email as a reader's client shows it, with the outlets' links and the sample feeds' pictures."""
        if self.rendered is None:
            return ""
        html = self.rendered.with_outlet_links(self.rendered.html, escape=True)  # editors check the outlets' links
        html = with_sample_pictures(html, sample_picture_url)
        return html.replace(UNSUBSCRIBE_SLOT, "preview")

    def shown_digest(self) -> str:
        """What the approve form says the page showed: the email's SHA-256 ("" when it cannot be built)."""
        return html_digest(self.rendered.html) if self.rendered else ""

    def email_text(self) -> str:
        return self.rendered.with_outlet_links(self.rendered.text, escape=False) if self.rendered else ""

    def shown_urls(self) -> list[str]:
        """The issue's stories as the page shows them, lead first."""
        return [e.story.url for e in self.draft.selection.events] if self.draft else []

    def offered_urls(self) -> set[str]:
        return {s.url for s in self.feeds.stories} if self.feeds else set()

    def listed_urls(self) -> set[str]:
        """Every story the page lists: chosen, and left out."""
        return set(self.shown_urls()) | ({d.story.url for d in self.draft.selection.dropped} if self.draft else set())

    def yesterdays_readers_by_outlet(self) -> dict[str, int]:
        """Per outlet, the readers who clicked its stories in the issue before this one (beside each story)."""
        day = self.date - dt.timedelta(days=1)
        yesterday = issues_between(self.store, day, day)
        return {o.outlet: o.unique_readers for o in outlet_clicks(self.store, yesterday)}

    def steering_context(self) -> dict[str, object]:
        """What templates/pages/_steering.html.j2 shows: the selection, its forms, the approval, the size."""
        rendered, draft = self.rendered, self.draft
        size = rendered.html_bytes if rendered else 0
        return {
            "build_error": self.error,
            "editorial_broken": self.editorial_broken,
            "rendered": rendered,
            "selection": draft.selection if draft else None,
            "issue_stories": draft.issue.stories if draft else [],
            "overridden": set(draft.editorial.overrides) if draft and draft.editorial else set(),
            "apart": set(draft.editorial.apart) if draft and draft.editorial else set(),
            "failures": self.feeds.failures if self.feeds else [],
            "size_kb": round(size / 1024, 1),
            "clip_kb": GMAIL_CLIP_BYTES // 1024,
            "clipped": size > GMAIL_CLIP_BYTES,
            "email_text": self.email_text(),
            "yesterday": self.yesterdays_readers_by_outlet(),
            "file_version": current_version(self.settings.editorial_dir, self.date),
            "shown_digest": self.shown_digest(),
            "approval": self.store.approvals.of(self.date.isoformat()),
            "approval_required": self.settings.approval.value == "required",
            "can_undo": can_undo(self.settings.editorial_dir, self.date),
            "intro": draft.issue.intro if draft else "",
        }


class ShownIssueChanged(StaleVersion):
    """The issue rebuilt for the approval is not the one the page showed (the feeds brought news since)."""

    def __init__(self, current: str) -> None:
        super().__init__(current, "the issue changed since the page was loaded (the feeds brought news): the page "
                                  "now shows it as it is; approve it again if it is right")


@dataclass(frozen=True)
class Steered:
    """What one steering form did: its action, the story it named, and the approval when it approved."""

    action: str
    url: str = ""
    approval: Approval | None = None


def apply_steering(issue: EditedIssue, fields: Mapping[str, str], approved_by: str) -> Steered:
    """Apply one posted steering form (action, version, url, title, summary, intro) to the day's editorial file.

    The form names the file's version it was made on: StaleVersion when the file changed since.
    `approve` freezes the issue as the page showed it (the form names the SHA-256 of the email it
    showed: ShownIssueChanged when the rebuild differs, as after the feeds brought news) and records
    `approved_by`; any other change
    withdraws an earlier approval (the issue changed). Raises EditorialError when the change or the
    approval cannot be made; nothing is written then. The caller rebuilds `issue` afterwards.
    """
    settings, store, date = issue.settings, issue.store, issue.date
    action, url, version = fields.get("action", ""), fields.get("url", "").strip(), fields.get("version", "")
    folder = settings.editorial_dir
    if action == APPROVE:
        if issue.error or issue.rendered is None:
            raise EditorialError("the issue cannot be built: fix what the page shows first")
        current = current_version(folder, date)
        if version != current:
            raise StaleVersion(current)
        if fields.get("shown", "") != issue.shown_digest():
            raise ShownIssueChanged(current)
        approval = edition.approve_edition(settings, store, date, approved_by, issue.rendered)
        return Steered(action, approval=approval)
    if action == UNDO:
        undo(folder, date, version)
    else:
        change = Change(action, url, fields.get("title", ""), fields.get("summary", ""), fields.get("intro", ""))
        steer(folder, date, change, version, issue.shown_urls(), issue.offered_urls(), settings.max_stories)
    edition.withdraw_approval(store, date)  # the issue changed
    return Steered(action, url)
