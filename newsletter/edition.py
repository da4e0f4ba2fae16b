"""One morning's edition, end to end: feeds → selection → render → freeze → send.

The CLI (and later the preview server) call these functions; each takes the
settings and the store it needs instead of reading them from globals.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TypeVar

import aiosmtplib

from .config import Approval as ApprovalSetting
from .config import EventLoop, Settings
from .errors import ConfigError, NewsletterError, NoStoriesError, NotApprovedError
from .issue.editorial import Editorial, apply_editorial, load_editorial
from .issue.feeds import FeedBatch, read_feeds
from .issue.ranking import Ranking, Standing, learn_home_weight, standing_from_json
from .issue.render import Issue, RenderedIssue, Renderer, html_digest, issue_from_selection
from .issue.selection import Selection, SentStory, select_stories
from .issue.steering import current_version
from .mail.confirmations import ConfirmationMailer, ConfirmationReport
from .mail.delivery import DeliveryReport, ProgressCallback, Sender
from .mail.message import MessageTemplate, Recipient, ascii_address
from .mail.smtp import SmtpConnection, reply_of
from .store.approvals import Approval
from .store.database import Status, Store, StoredIssue

log = logging.getLogger(__name__)
T = TypeVar("T")


def today(settings: Settings) -> dt.date:
    return dt.datetime.now(settings.zone).date()


def window_end(settings: Settings, date: dt.date, now: dt.datetime | None = None) -> dt.datetime:
    """The edition's cut-off: the morning send time that day, or now if that is still ahead."""
    cutoff = dt.datetime.combine(date, settings.edition_time, tzinfo=settings.zone)
    now = now or dt.datetime.now(dt.timezone.utc)
    return min(cutoff, now).astimezone(dt.timezone.utc)


@dataclass
class Draft:
    """Everything known about an edition before it is frozen."""

    date: dt.date
    feeds: FeedBatch
    selection: Selection
    issue: Issue
    editorial: Editorial | None = None


# How far back today's reports are compared with what earlier issues told.
FOLLOW_UP_DAYS = 7
# How far back the desk's leads teach the ranking: a season of mornings, so one odd lead weighs little.
LEAD_HISTORY_DAYS = 90


def recent_stories(store: Store, date: dt.date) -> list[SentStory]:
    """The stories of the last week's issues: today's reports of them are follow-ups or repeats."""
    since = date - dt.timedelta(days=FOLLOW_UP_DAYS)
    return [SentStory(s["url"], s["title"], s.get("summary", ""), issue_date, frozen)
            for issue_date, frozen, s in store.recent_stories(before_date=date.isoformat(), since_date=since.isoformat())]


def desk_ranking(settings: Settings, store: Store, date: dt.date) -> Ranking:
    """The ranking as the desk's leads of the last LEAD_HISTORY_DAYS teach it (each issue's stories in the
    order sent; issues from before stories kept their standing are left out)."""
    since = date - dt.timedelta(days=LEAD_HISTORY_DAYS)
    issues: dict[str, list[Standing]] = {}
    for issue_date, _, story in store.recent_stories(before_date=date.isoformat(), since_date=since.isoformat()):
        if "standing" in story:
            issues.setdefault(issue_date, []).append(standing_from_json(story["standing"]))
    home = frozenset(settings.home_countries)
    return Ranking(home, learn_home_weight(issues.values(), home))


def draft_edition(settings: Settings, store: Store, date: dt.date, batch: FeedBatch | None = None) -> Draft:
    """Choose the stories from the feeds (read now unless given); failed feeds are reported, not fatal."""
    if batch is None:
        batch = read_feeds(settings.feeds, settings.feed_timeout, settings.feed_max_bytes, settings.feed_outlets)
        for failure in batch.failures:
            log.warning("feed skipped: %s", failure)
    selection = select_stories(
        batch.stories,
        window_end=window_end(settings, date),
        window=dt.timedelta(hours=settings.window_hours),
        sections=settings.sections,
        max_stories=settings.max_stories,
        already_sent=store.sent_story_urls(before_date=date.isoformat()),
        sent=recent_stories(store, date),
        ranking=desk_ranking(settings, store, date),
    )
    editorial = load_editorial(settings.editorial_dir, date)
    if editorial is not None:
        selection = apply_editorial(selection, batch.stories, editorial, settings.max_stories)
    return Draft(date, batch, selection, issue_from_selection(selection, date, editorial), editorial)


def render_draft(settings: Settings, draft: Draft) -> RenderedIssue:
    if not draft.issue.stories:
        start, end = draft.selection.window_start, draft.selection.window_end
        raise NoStoriesError(
            f"no international story published between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC "
            f"in {len(settings.feeds)} feed(s) ({len(draft.feeds.failures)} failed); nothing to send"
        )
    return Renderer(settings.templates_dir, settings.base_url).render(draft.issue)


def freeze_edition(settings: Settings, store: Store, date: dt.date) -> tuple[StoredIssue, bool]:
    """The issue for `date` as first sent; built now if this is the first run that day.

    Returns the issue and whether it was built by this call. Freezing makes
    a re-run send exactly what the first run sent, even if feeds changed.
    """
    stored = store.get_issue(date.isoformat())
    if stored is not None:
        as_rendered(stored).check_size()
        return stored, False
    rendered = render_draft(settings, draft_edition(settings, store, date))
    rendered.check_size()  # before freezing: editors can still cut the issue down and run again
    stored = store.save_issue(date.isoformat(), rendered.subject, rendered.preheader, rendered.html,
                              rendered.text, rendered.stories)
    return stored, True


def as_rendered(stored: StoredIssue) -> RenderedIssue:
    return RenderedIssue(dt.date.fromisoformat(stored.issue_date), stored.subject, stored.preheader,
                         stored.html, stored.text, stored.stories)


def run_on_event_loop(work: Coroutine[None, None, T], settings: Settings) -> T:
    """Run sending work on NEWSLETTER_EVENT_LOOP's loop (asyncio.run's work, on uvloop by default)."""
    with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
        return runner.run(work)


def _loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice is EventLoop.asyncio:
        return None
    try:
        import uvloop
    except ImportError:
        if choice is EventLoop.uvloop:
            raise ConfigError("setting NEWSLETTER_EVENT_LOOP=uvloop: uvloop is not installed "
                              "(pip install uvloop, or set NEWSLETTER_EVENT_LOOP=auto)") from None
        return None
    return uvloop.new_event_loop


async def _stop_cleanly_on_sigterm(work: Coroutine[None, None, DeliveryReport]) -> DeliveryReport:
    """SIGTERM (systemd, kill) stops a send the way Ctrl-C does: in-flight messages finish."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def current_issue(settings: Settings, store: Store, date: dt.date) -> RenderedIssue:
    """The issue as sent if it was frozen already, else as it would be built now (not frozen)."""
    stored = store.get_issue(date.isoformat())
    return as_rendered(stored) if stored else render_draft(settings, draft_edition(settings, store, date))


@dataclass
class SendResult:
    issue: StoredIssue
    built_now: bool
    report: DeliveryReport
    paused: int  # active readers who paused past the issue's date: not sent to
    already_done: int  # of the active readers
    active: int
    left_since: int = 0  # readers who had the issue and are no longer active


def retry_confirmations(settings: Settings, store: Store) -> ConfirmationReport:
    """Send the signup confirmations that SMTP refused or missed earlier."""
    report = run_on_event_loop(ConfirmationMailer(settings, store).retry_pending(), settings)
    if report.sent or report.failed:
        log.info("confirmations retried: %d sent, %d failed", report.sent, report.failed)
    return report


def send_edition(settings: Settings, store: Store, date: dt.date,
                 on_progress: ProgressCallback | None = None) -> SendResult:
    """Send the day's issue to every active subscriber who has not received it.

    Confirmations left over from signups while SMTP was down go out first.
    """
    retry_confirmations(settings, store)
    check_approval(settings, store, date)
    issue, built_now = freeze_edition(settings, store, date)
    if issue.log_folded_at is not None:
        # Without its per-reader rows nobody can tell who already has it.
        raise NewsletterError(f"issue {issue.issue_date} was sent long ago and its delivery log folded into "
                              f"totals on {issue.log_folded_at:%Y-%m-%d}; it is not sent again")
    active = store.count_subscribers(Status.active)
    already_done, left_since = store.log.done_by_readers_now(issue.id)
    paused = store.log.paused(issue.id)
    template = MessageTemplate(as_rendered(issue), settings)
    sender = Sender(store, template, issue.id, settings, on_progress)
    report = run_on_event_loop(_stop_cleanly_on_sigterm(sender.run()), settings)
    counts = {"sent": report.sent, "failed": report.failed, "refused": report.refused, "withdrawn": report.withdrawn,
              "skipped": already_done, "paused": paused, "active": active, "left_since": left_since}
    # For log shippers (NEWSLETTER_LOG_FORMAT=json): the run's figures as fields of one record.
    log.info("send of %s %s: %d sent, %d failed, %d refused", issue.issue_date,
             "complete" if report.complete else "incomplete", report.sent, report.failed, report.refused,
             extra={"issue": issue.issue_date, "complete": report.complete, "counts": counts,
                    "duration_seconds": round(report.elapsed, 3)})
    return SendResult(issue, built_now, report, paused, already_done, active, left_since)


def approve_edition(settings: Settings, store: Store, date: dt.date, approved_by: str,
                    seen: RenderedIssue | None = None) -> Approval:
    """Freeze the day's issue exactly as the editor saw it (`seen`; else as it builds now) and record who approved it.

    What `send` sends is then this frozen issue, byte for byte; changing the editorial file
    withdraws the approval (see `approval_problem`, and the preview's steering).
    """
    version = current_version(settings.editorial_dir, date)
    stored = store.get_issue(date.isoformat())
    if stored is None:
        rendered = seen or render_draft(settings, draft_edition(settings, store, date))
        rendered.check_size()
        stored = store.save_issue(date.isoformat(), rendered.subject, rendered.preheader, rendered.html,
                                  rendered.text, rendered.stories)
    digest = html_digest(stored.html)
    approval = store.approvals.record(date.isoformat(), digest, version, approved_by)
    log.info("issue %s approved by %s (HTML sha256 %s…)", date, approved_by, digest[:12])
    return approval


def withdraw_approval(store: Store, date: dt.date) -> bool:
    """The issue changed after approval: the approval goes, and the issue is unfrozen if nobody has it yet."""
    withdrawn = store.approvals.withdraw(date.isoformat())
    if withdrawn:
        log.info("approval of %s withdrawn: the issue changed", date)
    return withdrawn


def approval_problem(settings: Settings, store: Store, date: dt.date, approval: Approval | None) -> str:
    """Why the day's issue may not be sent yet under NEWSLETTER_APPROVAL=required, given its approval; "" when it may."""
    if approval is None:
        return f"the issue of {date} is not approved yet: approve it in `newsletter preview` or with " \
               f"`newsletter approve --date {date}`"
    if approval.editorial_version != current_version(settings.editorial_dir, date):
        return f"the editorial file of {date} changed after {approval.approved_by} approved the issue: approve it again"
    frozen = store.get_issue(date.isoformat())
    if frozen is None or html_digest(frozen.html) != approval.html_sha256:
        return f"the frozen issue of {date} is not the one {approval.approved_by} approved: approve it again"
    return ""


def check_approval(settings: Settings, store: Store, date: dt.date, now: dt.datetime | None = None) -> None:
    """Raise NotApprovedError unless the issue may go: approved, approval not required, or past the deadline."""
    if settings.approval is not ApprovalSetting.required:
        return
    approval = store.approvals.of(date.isoformat())
    problem = approval_problem(settings, store, date, approval)
    if not problem:
        return
    if approval is not None:  # approved, then changed: the approval goes
        withdraw_approval(store, date)
    deadline = settings.approval_deadline
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(settings.zone)
    if deadline is not None and now >= dt.datetime.combine(date, deadline, tzinfo=settings.zone):
        log.warning("%s; sending anyway: it is past NEWSLETTER_APPROVAL_DEADLINE=%s", problem, deadline.strftime("%H:%M"))
        return
    raise NotApprovedError(problem)


@dataclass
class CompactReport:
    before: dt.date
    issues: int = 0
    rows: int = 0
    click_salts: int = 0  # issues whose hashed clickers were folded into counts (NEWSLETTER_TRACKING_SALT_DAYS)
    click_history: int = 0  # individual clicks older than NEWSLETTER_LOG_RETENTION_DAYS deleted (counts kept)


def compact_delivery_log(settings: Settings, store: Store) -> CompactReport:
    """Fold the per-reader delivery rows of issues older than NEWSLETTER_LOG_RETENTION_DAYS into totals,
    and the hashed clickers of salts older than NEWSLETTER_TRACKING_SALT_DAYS into click counts; individual
    click history as old as the delivery log's is deleted (its counts stay)."""
    report = CompactReport(today(settings) - dt.timedelta(days=settings.log_retention_days))
    for issue in store.issues_to_fold(report.before.isoformat()):
        report.rows += store.log.fold(issue.id)
        report.issues += 1
        log.info("folded the delivery log of %s", issue.issue_date)
    report.click_salts = store.clicks.fold_expired_salts(settings.tracking_salt_days)
    before = dt.datetime.combine(report.before, dt.time(), tzinfo=dt.timezone.utc)
    report.click_history = store.clicks.drop_history_before(before)
    return report


@dataclass
class TestSendResult:
    subject: str
    sent: list[str]
    failed: list[tuple[str, str]]
    size_label: str = ""


def send_test(settings: Settings, store: Store, date: dt.date, addresses: list[str],
              seen: RenderedIssue | None = None) -> TestSendResult:
    """Send the day's issue to a few addresses only, marked as a test.

    `seen` is the issue as the editor's page showed it (the desk), else it is the frozen issue or
    built now. The subscriber list and the delivery log are not touched, and the issue is
    not frozen: editors can keep changing it after a test.
    """
    rendered = seen or current_issue(settings, store, date)
    renderer = Renderer(settings.templates_dir, settings.base_url)
    rendered = replace(rendered, subject=renderer.test_subject(rendered.subject))
    rendered.check_size()
    template = MessageTemplate(rendered, settings, test_send=True)
    result = run_on_event_loop(_send_test_messages(settings, template, rendered.subject, addresses), settings)
    return replace(result, size_label=rendered.size_label)


async def _send_test_messages(settings: Settings, template: MessageTemplate, subject: str,
                              addresses: list[str]) -> TestSendResult:
    result = TestSendResult(subject, [], [])
    connection = SmtpConnection(settings)
    try:
        for address in addresses:
            message = template.personalise(Recipient(0, address))
            try:
                await connection.send(template.envelope_from, ascii_address(address), message)
                result.sent.append(address)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                result.failed.append((address, reply_of(exc)))
    finally:
        await connection.close()
    return result
