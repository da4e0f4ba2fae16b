"""The `newsletter` command: a thin layer that parses arguments and calls the library.

A user's mistake (bad setting, unreadable file, SMTP refusing to talk) is one
line on stderr and an exit code a cron wrapper can act on; see docs/operating.md (exit codes).
"""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from sqlalchemy.exc import OperationalError

from . import logs
from .config import PROJECT_DIR, Settings, load_settings, write_env_file
from .errors import ConfigError, NewsletterError, NotApprovedError
from .store.database import Status, Store
from .store.feedback import blocked_warning
from .store.migrate import SCHEMA_HEAD, describe_mismatch, schema_revision, upgrade_schema
from .store.subscribers import add_unless_forgotten, clean_name, export_csv, import_csv, normalise_email
from .tokens import Tokens

# The morning edition (feeds, selection, rendering, delivery) loads inside the commands that use it:
# `newsletter bounces -` runs once per report piped by the MTA, and must not pay for it at start-up.
if TYPE_CHECKING:
    from rich.progress import Progress

    from .mail.delivery import DeliveryReport
    from .store.editors import Editors

EXIT_INCOMPLETE = 75  # EX_TEMPFAIL: some subscribers are left for the next run
EXIT_BUG = 70  # EX_SOFTWARE: an exception nobody expected; the traceback is in the log
COMPLAINT_RATE_WARNING = 0.001  # Gmail's and Yahoo's bulk-sender guideline (2024): under 0.1 %

app = typer.Typer(
    help="The Arabic morning newsletter: the day's main international stories, every morning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
subscribers_app = typer.Typer(help="Manage the subscriber list.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")
db_app = typer.Typer(help="The store: see where its schema stands, upgrade it, compact it.", no_args_is_help=True)
app.add_typer(db_app, name="db")
editors_app = typer.Typer(help="The editors who may sign in to the desk (/desk of `newsletter serve`).",
                          no_args_is_help=True)
app.add_typer(editors_app, name="editors")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("newsletter")

DateOption = Annotated[
    Optional[str],
    typer.Option("--date", help="Issue date, YYYY-MM-DD (default: today in NEWSLETTER_TIMEZONE)."),
]


def _settings() -> Settings:
    settings = load_settings()
    logs.use_format(settings.log_format.value)
    return settings


def _collect_less_while_sending() -> None:
    """Spare the send the garbage collector's walks over start-up's objects (measured: ~6.5 % less CPU).

    What the imports made lives as long as the process: frozen, the collector
    no longer walks it at every full collection. A message's objects are freed
    by reference counting, so the youngest generation can wait longer between
    collections too.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


def _settings_for_links() -> Settings:
    """Settings of a command that sends mail or serves pages: it signs links, so the key must be real."""
    settings = _settings()
    settings.require_secret_key()
    return settings


def _issue_date(settings: Settings, value: str | None) -> dt.date:
    if value is None:
        from . import edition

        return edition.today(settings)
    return _date_option(value, "--date")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False) -> None:
    logs.setup(verbose)


# --- the morning edition --------------------------------------------------


@app.command()
def select(
    date: DateOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every event with all its reports, and what was "
                                                          "left out and why, as JSON.")] = False,
) -> None:
    """Show which stories the issue would carry, why, and what was left out.

    Exit codes: 0 stories chosen, 3 no international story in the window.
    """
    from . import edition
    from .issue.selection import selection_json

    settings = _settings()
    store = Store(settings.database_url)
    draft = edition.draft_edition(settings, store, _issue_date(settings, date))
    selection = draft.selection
    if as_json:
        feeds = {"items": len(draft.feeds.stories), "failed": [{"feed": f.source, "reason": f.reason}
                                                                for f in draft.feeds.failures]}
        print(json.dumps({"date": draft.date.isoformat(), "feeds": feeds, **selection_json(selection)},
                         ensure_ascii=False, indent=1))
        raise typer.Exit(0 if selection.events else 3)
    out.print(f"Window: {selection.window_start:%Y-%m-%d %H:%M} → {selection.window_end:%Y-%m-%d %H:%M} UTC; "
              f"{len(draft.feeds.stories)} item(s) from {len(settings.feeds) - len(draft.feeds.failures)} feed(s)")
    for failure in draft.feeds.failures:
        out.print(f"[red]feed failed[/red] {failure}")
    weight = selection.ranking.home_weight
    out.print(f"Lead: a story about NEWSLETTER_HOME_COUNTRIES counts {weight:g} more outlet(s), as the desk's leads of "
              f"the last {edition.LEAD_HISTORY_DAYS} days teach" if weight else
              f"Lead: by coverage (the desk's leads of the last {edition.LEAD_HISTORY_DAYS} days show no preference "
              "for NEWSLETTER_HOME_COUNTRIES)")
    out.print("\n[bold]Chosen[/bold]")
    for rank, event in enumerate(selection.events, start=1):
        out.print(f"{rank}. {event.story.title}", markup=False)
        out.print(f"   {event.story.url}", markup=False)
        out.print(f"   score {event.score}: {event.reasons()}", markup=False)
        for merged in event.merged:
            out.print(f"   + same event: {merged.source}: {merged.title}", markup=False)
            out.print(f"     {merged.url}", markup=False)  # for the editorial file's `apart`, if it is not
    out.print("\n[bold]Left out[/bold]")
    for dropped in selection.dropped:
        out.print(f"- {dropped.story.source}: {dropped.story.title}", markup=False)
        out.print(f"  {dropped.reason}", markup=False)
    if not selection.events:
        raise typer.Exit(3)


@app.command()
def render(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write issue.html, issue.txt, issue.json into.")],
    date: DateOption = None,
) -> None:
    """Build the issue and write it to files, without sending anything."""
    from . import edition

    settings = _settings()
    store = Store(settings.database_url)
    issue_date = _issue_date(settings, date)
    # The outline, not the issue: current_issue reads the stored HTML itself, and it is the bulk of the row.
    frozen = store.issue_outline(issue_date.isoformat()) is not None
    rendered = edition.current_issue(settings, store, issue_date)
    if frozen:  # what readers got: the feeds and the editorial file of today no longer change it
        err.print(f"note: the issue of {issue_date} was sent (frozen): written as sent; feeds and "
                  "the editorial file were not read", markup=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "issue.html").write_text(rendered.with_outlet_links(rendered.html, escape=True), encoding="utf-8")
    (out_dir / "issue.txt").write_text(rendered.with_outlet_links(rendered.text, escape=False), encoding="utf-8")
    manifest = {"date": issue_date.isoformat(), "subject": rendered.subject, "preheader": rendered.preheader,
                "stories": rendered.stories}
    (out_dir / "issue.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    out.print(f"Wrote {out_dir / 'issue.html'} ({rendered.size_label}), "
              f"issue.txt and issue.json: {len(rendered.stories)} stories.")


class _ProgressReporter:
    """A progress bar on a terminal, a log line per batch otherwise."""

    def __init__(self, total: int, every: int) -> None:
        self.total = total
        self.every = every
        self.next_line = every
        self.progress: Progress | None = None
        self.task = None
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("Sending"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"), TimeRemainingColumn(), console=err,
            )
            self.task = self.progress.add_task("send", total=total, failed=0)

    def __enter__(self) -> _ProgressReporter:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def __call__(self, report: DeliveryReport) -> None:
        if self.progress:
            self.progress.update(self.task, completed=report.attempted, failed=report.failed + report.refused)
        elif report.attempted and (report.attempted >= self.next_line or report.finished):
            self.next_line = report.attempted + self.every
            rate = report.sent / max(time.monotonic() - report.started, 1e-9)
            log.info("progress: %d/%d attempted, %d sent, %d failed, %d refused (%.0f msg/s)",
                     report.attempted, self.total, report.sent, report.failed, report.refused, rate)


@app.command()
def send(
    date: DateOption = None,
    test: Annotated[
        Optional[list[str]],
        typer.Option("--test", help="Send only to this address (repeatable), subject marked «[تجربة]»; "
                                    "the list and the delivery log are not touched."),
    ] = None,
) -> None:
    """Send the day's issue to every active subscriber who has not received it yet.

    Safe to run again: only subscribers without a delivery are sent to.
    Exit codes: 0 complete, 75 some left for the next run, 2 bad setting,
    3 no story to send, 65 the issue is over Gmail's 102 KB clipping limit (nothing sent),
    70 a bug stopped it (the traceback is in the log; a rerun sends only to who is missing).
    """
    from . import edition, metrics

    settings = _settings_for_links()
    store = Store(settings.database_url, stalled_session_seconds=settings.stale_run_seconds)
    issue_date = _issue_date(settings, date)
    if test:
        _send_test(settings, store, issue_date, test)
        return
    pending_estimate = store.count_subscribers(Status.active)
    _collect_less_while_sending()
    with _ProgressReporter(pending_estimate, settings.batch_size) as progress:
        result = edition.send_edition(settings, store, issue_date, on_progress=progress)
    metrics.record_send(settings, store, result)
    report = result.report
    state = "built and frozen" if result.built_now else "already frozen, resending to whoever is missing it"
    out.print(f"Issue {result.issue.issue_date} ({state}, {edition.as_rendered(result.issue).size_label}): "
              f"{result.issue.subject}", markup=False)
    out.print(
        f"Sent {report.sent}, failed {report.failed} (will retry), refused {report.refused}, "
        + (f"withdrawn {report.withdrawn} (unsubscribed during the send), " if report.withdrawn else "")
        + f"skipped {result.already_done} (already delivered) of {result.active} active; "
        f"paused {result.paused}; {report.elapsed:.1f} s, {report.rate:.0f} msg/s"
        + (f"; {result.left_since} who had it have left since" if result.left_since else "")
    )
    if report.lost or report.uncredited:
        err.print(f"This run stalled past NEWSLETTER_STALE_RUN_SECONDS: another run took over {report.lost} "
                  f"subscriber(s) before this one sent to them (left to it), and {report.uncredited} while "
                  "this one was sending (they may have the issue twice). `newsletter status` shows the issue.")
    if not report.complete:
        err.print(f"Incomplete: {report.failed} subscriber(s) left for the next `newsletter send`."
                  + (" Interrupted." if report.interrupted else ""))
        raise typer.Exit(EXIT_INCOMPLETE)


def _send_test(settings: Settings, store: Store, issue_date: dt.date, addresses: list[str]) -> None:
    from . import edition

    result = edition.send_test(settings, store, issue_date, [normalise_email(a) for a in addresses])
    out.print(f"Test issue ({result.size_label}) sent to {len(result.sent)} address(es): {result.subject}",
              markup=False)
    for address, reply in result.failed:
        err.print(f"not sent to {address}: {reply}", markup=False)
    if result.failed:
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def approve(
    date: DateOption = None,
    by: Annotated[Optional[str], typer.Option("--by", help="Who approves (default: your login name).")] = None,
) -> None:
    """Approve the day's issue: freeze it exactly as it is now; with NEWSLETTER_APPROVAL=required, send sends only this."""
    import getpass

    from . import edition

    settings = _settings()
    store = Store(settings.database_url)
    issue_date = _issue_date(settings, date)
    approver = clean_name(by or "") or getpass.getuser()  # one line in the log and the audit, whatever was typed
    approval = edition.approve_edition(settings, store, issue_date, approver)
    out.print(f"Approved the issue of {issue_date} as {approval.approved_by} (HTML sha256 {approval.html_sha256[:16]}…): "
              "`newsletter send` sends exactly this. Changing the editorial file withdraws the approval.",
              markup=False)


@app.command()
def status(date: DateOption = None) -> None:
    """Show an issue's delivery: delivered, pending, retrying, bounced, and the commonest replies."""
    from .send_progress import send_progress

    settings = _settings()
    store = Store(settings.database_url)
    issue_date = _issue_date(settings, date)
    progress = send_progress(store, issue_date, dt.timedelta(seconds=settings.stale_run_seconds))
    waiting_for_approval = settings.approval.value == "required" and progress.approved_at is None
    if progress.state == "none":
        if waiting_for_approval:
            err.print(f"No issue for {issue_date} yet: it is waiting for an editor's approval (the preview's button, "
                      f"or `newsletter approve --date {issue_date}`).")
            raise typer.Exit(NotApprovedError.exit_code)
        err.print(f"No issue for {issue_date} yet: `newsletter send --date {issue_date}` builds and sends it.")
        raise typer.Exit(1)
    issue = store.issue_outline(progress.issue_date)
    out.print(f"Issue {progress.issue_date}: {progress.subject}", markup=False)
    if progress.approved_at is not None:
        out.print(f"approved by {progress.approved_by} at {progress.approved_at:%Y-%m-%d %H:%M} UTC", markup=False)
    elif waiting_for_approval:
        out.print("waiting for an editor's approval (NEWSLETTER_APPROVAL=required): nothing is sent until then")
    if issue.log_folded_at:
        out.print(f"(delivery log folded into totals on {issue.log_folded_at:%Y-%m-%d}: final, never sent again)")
    out.print(f"delivered {progress.delivered}, pending {progress.pending}, retrying {progress.retrying}, "
              f"refused during the send {progress.refused}")
    if not progress.folded:
        out.print(f"paused {progress.paused} (readers who paused their subscription past this date)")
    for outcome, reply, count in store.log.common_replies(issue.id):
        label = {"failed": "retrying", "sending": "in flight"}.get(outcome, outcome)
        out.print(f"  {count:>7}  {label:<9} {reply or '(no reply yet)'}", markup=False)
    delivered = progress.delivered
    reported = {"hard bounces": progress.hard_bounces, "soft bounces": progress.soft_bounces,
                "policy blocks": progress.blocked, "complaints": progress.complained}
    out.print("reported after the send (`newsletter bounces`): " + ", ".join(
        f"{label} {count} ({(count / delivered if delivered else 0.0):.2%})" for label, count in reported.items())
        + f"; delay warnings {progress.delayed}")
    for domain, readers in store.feedback.blocked_by_domain(progress.issue_date):
        err.print(blocked_warning(domain, readers), markup=False)
    complaint_rate = progress.complained / delivered if delivered else 0.0
    if complaint_rate > COMPLAINT_RATE_WARNING:
        err.print(f"warning: {complaint_rate:.2%} of this issue's readers marked it as spam; Gmail and Yahoo "
                  f"want bulk senders under {COMPLAINT_RATE_WARNING:.1%} and start refusing mail at 0.3%")
    _print_clicks(store, issue, delivered, settings)
    if progress.incomplete:
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def stats(
    first: Annotated[Optional[str], typer.Option("--from", help="First issue date, YYYY-MM-DD (default: 30 days ago).")] = None,
    last: Annotated[Optional[str], typer.Option("--to", help="Last issue date, YYYY-MM-DD (default: today).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Write CSV to stdout (issues, then outlets) for a spreadsheet.")] = False,
) -> None:
    """Issues side by side: delivered, bounce, complaint and unsubscribe rates, unique click rate, top story; then clicks per outlet."""  # noqa: E501
    import csv

    from .stats import issue_stats, issues_between, outlet_clicks

    settings = _settings()
    store = Store(settings.database_url)
    to_date = _date_option(last, "--to") if last else _issue_date(settings, None)
    from_date = _date_option(first, "--from") if first else to_date - dt.timedelta(days=30)
    if from_date > to_date:
        raise typer.BadParameter(f"{from_date} is after --to {to_date}", param_hint="--from")
    frozen = issues_between(store, from_date, to_date)  # each issue read once, for both tables
    issues = list(issue_stats(store, frozen))
    outlets = outlet_clicks(store, frozen)
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["date", "subject", "delivered", "bounce_rate", "complaint_rate", "unsubscribe_rate",
                         "unique_click_rate", "top_story", "top_story_readers"])
        for i in issues:
            writer.writerow([i.issue_date, i.subject, i.delivered, f"{i.rate(i.bounces):.4f}",
                             f"{i.rate(i.complaints):.4f}", f"{i.rate(i.unsubscribes):.4f}",
                             f"{i.rate(i.unique_clickers):.4f}", i.top_story, i.top_story_readers])
        writer.writerow([])
        writer.writerow(["outlet", "stories", "unique_readers", "clicks"])
        for o in outlets:
            writer.writerow([o.outlet, o.stories, o.unique_readers, o.clicks])
        return
    if not issues:
        out.print(f"No issue between {from_date} and {to_date}.")
        return
    out.print(f"{'date':<10} {'delivered':>9} {'bounce':>7} {'complnt':>7} {'unsub':>7} {'clicked':>7}  top story")
    for i in issues:
        top = f"{i.top_story} ({i.top_story_readers})" if i.top_story else "-"
        out.print(f"{i.issue_date:<10} {i.delivered:>9} {i.rate(i.bounces):>7.2%} {i.rate(i.complaints):>7.2%} "
                  f"{i.rate(i.unsubscribes):>7.2%} {i.rate(i.unique_clickers):>7.2%}  {top}", markup=False)
    out.print(f"\nClicks per outlet, {from_date} to {to_date}:")
    for o in outlets:
        out.print(f"  {o.unique_readers:>7} reader(s) {o.clicks:>7} click(s) {o.stories:>4} stor(ies)  {o.outlet}",
                  markup=False)


def _date_option(value: str, option: str) -> dt.date:
    try:
        date = dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-11-24", param_hint=option) from None
    if not 1970 <= date.year <= 9000:  # the issues of the months around a date are looked at: keep them datable
        raise typer.BadParameter(f"{value!r} is not a date of this newsletter's issues", param_hint=option)
    return date


def _print_clicks(store: Store, issue, delivered: int, settings: Settings) -> None:
    """Per story: unique readers, reader clicks, machine clicks, and the click rate of the delivered."""
    clicks = store.clicks.by_story(issue.id)
    if not clicks and settings.tracking.value == "off":
        out.print("clicks: not counted (NEWSLETTER_TRACKING=off)")
        return
    whole = clicks.get(0)
    readers = whole.unique_readers if whole else 0
    rate = readers / delivered if delivered else 0.0
    out.print(f"clicks: {readers} reader(s) clicked a story ({rate:.2%} of delivered), "
              f"{whole.clicks if whole else 0} click(s) by readers, {whole.machine_clicks if whole else 0} by machines "
              "(mail scanners, prefetch; not counted as readers)")
    out.print(f"  {'readers':>7} {'rate':>7} {'clicks':>7} {'machine':>7}  story")
    for place, story in enumerate(issue.stories, start=1):
        found = clicks.get(place)
        unique, reader_clicks, machine = (found.unique_readers, found.clicks, found.machine_clicks) if found else (0, 0, 0)
        share = unique / delivered if delivered else 0.0
        out.print(f"  {unique:>7} {share:>7.2%} {reader_clicks:>7} {machine:>7}  {place}. {story.get('title', '')} "
                  f"({story.get('source', '')})", markup=False)


@app.command()
def preview(
    date: DateOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 8001,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a browser.")] = True,
) -> None:
    """Preview the issue locally, re-rendered whenever templates/ or the editorial file change."""
    import uvicorn

    from .web.preview import create_preview_app

    settings = _settings()
    issue_date = _issue_date(settings, date)
    url = f"http://127.0.0.1:{port}/"
    out.print(f"Preview of {issue_date} at {url} (Ctrl-C to stop); editorial file: "
              f"{settings.editorial_dir / (issue_date.isoformat() + '.toml')}")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.5, webbrowser.open, args=(url,)).start()
    uvicorn.run(create_preview_app(settings, issue_date), host="127.0.0.1", port=port, log_level="warning")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; they share the store and its rate limits.")] = 1,
) -> None:
    """Run the readers' pages (signup, confirm, manage, unsubscribe, archive) and the editors' desk at /desk
    (put a TLS proxy in front)."""
    import uvicorn

    from .web.app import create_app, uvicorn_options
    from .web.metrics import prepare_workers

    settings = _settings().served_on(port)
    settings.require_secret_key(listening_publicly=not _is_loopback(host))
    # Each of several workers loads the settings anew: they must see the same public address.
    os.environ["NEWSLETTER_BASE_URL"] = settings.base_url
    # The schema is made (or checked) once here, not raced for by every worker.
    Store(settings.database_url).close()
    proxies = ", ".join(str(p) for p in settings.trusted_proxies) or "none (X-Forwarded-For is ignored)"
    out.print(f"Serving on http://{host}:{port} with {workers} worker(s) (public address: {settings.base_url}; "
              f"trusted proxies: {proxies})")
    common = {"host": host, "port": port, "log_level": "info", **uvicorn_options(settings)}
    if (log_config := logs.uvicorn_log_config(settings.log_format.value)) is not None:
        common["log_config"] = log_config
    if workers == 1:
        uvicorn.run(create_app(settings), **common)
    else:
        prepare_workers()  # /metrics in any worker adds up all of theirs
        uvicorn.run("newsletter.web.app:app_from_environment", factory=True, workers=workers, **common)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def confirmations() -> None:
    """Send the confirmation emails that could not go out at signup (SMTP was down)."""
    from . import edition

    settings = _settings_for_links()
    report = edition.retry_confirmations(settings, Store(settings.database_url))
    out.print(f"Confirmations sent {report.sent}, failed {report.failed}.")
    if report.failed:
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def bounces(
    sources: Annotated[Optional[list[str]], typer.Argument(
        help="Where the reports are: .eml files, Maildir folders, mbox files, folders of files; "
             "- reads one report from stdin (a Postfix pipe).", show_default=False)] = None,
    imap: Annotated[bool, typer.Option(
        "--imap", help="Also read the IMAP mailbox of the NEWSLETTER_IMAP_* settings, filing each report "
                       "read into NEWSLETTER_IMAP_DONE_FOLDER or NEWSLETTER_IMAP_KEPT_FOLDER.")] = False,
    keep_dir: Annotated[Path, typer.Option(
        "--keep-dir", help="Where a report from stdin or the spool that cannot be attributed or read is saved "
                           "(reports in files stay where they are).")] = PROJECT_DIR / "subscribers" / "unattributed",
    spool: Annotated[Optional[Path], typer.Option(
        "--spool", help="With -: only queue the piped report in this Maildir (a few ms, for the MTA's pipe). "
                        "Without -: read every queued report and take each out of it.")] = None,
) -> None:
    """Read bounces and complaints; hard bounces and complaints take readers off the list.

    A hard bounce (no such mailbox, or the relay gave up after days) makes the reader bounced at once, soft ones (mailbox full, over quota) after NEWSLETTER_SOFT_BOUNCE_LIMIT within NEWSLETTER_SOFT_BOUNCE_DAYS; a complaint unsubscribes. Policy blocks (5.7.x: spam filter, SPF, DKIM, DMARC) and delay warnings are counted and change nobody. A report read twice counts once. Exit 1 when a report could not be read or attributed (each is named; none is deleted), 75 when the IMAP server could not be reached.
    """  # noqa: E501 (one paragraph: the help text wraps it to the terminal)
    # Bounce detectors and the IMAP client load only here: every other command starts faster without them.
    from .mail.bounce_reader import read_bounces
    from .metrics import record_bounces

    if spool is not None and "-" in (sources or []):
        from .mail.spool import queue_report

        raise typer.Exit(queue_report(sys.stdin.buffer, spool, sys.stderr))
    settings = _settings()
    if not sources and not imap and spool is None:
        raise typer.BadParameter("name at least one file or folder, - for stdin, --spool or --imap",
                                 param_hint="SOURCES")
    if imap and not settings.imap_host:
        raise ConfigError("setting NEWSLETTER_IMAP_HOST is empty: --imap needs the mailbox's server")
    store = Store(settings.database_url)
    run = read_bounces(settings, store, sources or [], sys.stdin.buffer, keep_dir, imap,
                       lambda line, problem: (err if problem else out).print(line, markup=False), spool)
    record_bounces(settings, run.summary.by_kind)
    out.print(run.summary.line(), markup=False)
    for warning in run.summary.warnings():
        err.print(warning, markup=False)
    # A report from stdin (a Postfix pipe) kept on disk is handled: a non-zero exit would make
    # Postfix bounce the report itself. Reports filed in the IMAP kept folder still need a person.
    if not run.complete:
        raise typer.Exit(1)


@app.command()
def dkim() -> None:
    """Print the DNS records that go with the DKIM keys in the settings, and SPF and DMARC to match."""
    from .mail.dkim import dkim_keys

    settings = _settings()
    keys = dkim_keys(settings)
    if not keys:
        raise ConfigError("no DKIM key is set: NEWSLETTER_DKIM_RSA_KEY_FILE and _SELECTOR "
                          "(and/or NEWSLETTER_DKIM_ED25519_…); see docs/deliverability.md")
    domain = settings.dkim_domain or settings.sender_domain
    for key in keys:
        out.print(key.dns_record(domain), markup=False)
    envelope_domain = (settings.bounce_address or settings.from_address).rpartition("@")[2]
    out.print(f'{envelope_domain}. IN TXT "v=spf1 ip4:<your relay\'s address> -all"', markup=False)
    out.print(f'_dmarc.{settings.sender_domain}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@{settings.sender_domain}"',
              markup=False)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON, for scripts.")] = False,
) -> None:
    """Check the install and the world around it before a send: settings, store, feeds, relay, SPF, DKIM, DMARC, mailbox, site.

    One line a check, ✓ or ✗ with what to do; nothing is sent or changed. Exit 1 when any check fails.
    """  # noqa: E501 (one paragraph: the help text wraps it to the terminal)
    from .doctor import report_json, run_doctor

    checks = []
    for check in run_doctor():
        checks.append(check)
        if not as_json:
            out.print(check.line(), markup=False)
    if as_json:
        print(json.dumps(report_json(checks), ensure_ascii=False, indent=1))
    if any(check.ok is False for check in checks):
        raise typer.Exit(1)


@app.command()
def init(
    path: Annotated[Path, typer.Option("--path", help="Where to write the settings file.")] = Path(".env"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Start a new install: write a .env from .env.example with a random NEWSLETTER_SECRET_KEY."""
    written = write_env_file(path, force)
    out.print(f"Wrote {written} with a new random NEWSLETTER_SECRET_KEY (keep it: changing it breaks the "
              "links in every email already sent). Now set the feeds, SMTP, FROM_ADDRESS and BASE_URL in it.")


@app.command(hidden=True)
def outbox(
    folder: Annotated[Path, typer.Option("--outbox", help="Folder for received .eml files.")] = Path("outbox"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 2525,
) -> None:
    """Run a local SMTP server that saves every message as an .eml file (for demos)."""
    from .mail.outbox import start_outbox  # aiosmtpd: only the demos need it, not every command's start-up

    controller, _ = start_outbox(folder, port=port)
    err.print(f"Outbox SMTP server on 127.0.0.1:{controller.port}, saving to {folder}/ (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


# --- the store's schema ---------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database's schema up to this version (data kept). Back the database up first."""
    settings = _settings()
    store = Store(settings.database_url, check_schema=False)
    before, after = store.run_on_database(upgrade_schema)
    if before == after:
        out.print(f"The database is already at schema {after}; nothing to do.")
    else:
        out.print(f"Upgraded the database from schema {before or '(empty)'} to {after}.")


@db_app.command("status")
def db_status() -> None:
    """Show the database's schema revision and the one this version needs (exit 2 when they differ)."""
    settings = _settings()
    store = Store(settings.database_url, check_schema=False)
    revision = store.run_on_database(lambda engine: _revision_of(engine))
    out.print(f"Database schema: {revision or '(empty)'}; this version needs {SCHEMA_HEAD}.")
    if revision not in (SCHEMA_HEAD, None):
        err.print(describe_mismatch(revision), markup=False)
        raise typer.Exit(2)


@db_app.command("compact")
def db_compact() -> None:
    """Fold old issues' per-reader delivery rows into per-issue totals (NEWSLETTER_LOG_RETENTION_DAYS), and expired click salts into counts (NEWSLETTER_TRACKING_SALT_DAYS); forget addresses never confirmed (NEWSLETTER_PENDING_DAYS)."""  # noqa: E501
    from . import edition

    settings = _settings()
    store = Store(settings.database_url)
    report = edition.compact_delivery_log(settings, store)
    out.print(f"Folded {report.issues} issue(s) dated before {report.before} into totals "
              f"({report.rows} delivery row(s) removed), and the expired click salts of {report.click_salts} "
              f"issue(s) into counts; {report.click_history} individual click(s) of that age deleted.")
    forgotten = store.forget_unconfirmed(dt.timedelta(days=settings.pending_days),
                                         Tokens(settings.secret_key).email_hash)
    out.print(f"Forgot {forgotten} address(es) never confirmed within {settings.pending_days:g} day(s) "
              "(NEWSLETTER_PENDING_DAYS).")


def _revision_of(engine) -> str | None:
    with engine.connect() as conn:
        return schema_revision(conn)


# --- subscribers ------------------------------------------------------------

StatusOption = Annotated[Optional[Status], typer.Option("--status", help="Only subscribers with this status.")]


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    name: Annotated[str, typer.Option(help="The reader's name, used in the To: header.")] = "",
    status: Annotated[Status, typer.Option(help="Initial status.")] = Status.active,
) -> None:
    """Add one subscriber (active unless told otherwise)."""
    settings = _settings()
    address = normalise_email(email)
    if add_unless_forgotten(Store(settings.database_url), address, clean_name(name), status,
                            Tokens(settings.secret_key).email_hash):
        out.print(f"Added {address} ({status.value}).")
    else:
        out.print(f"{address} is already on the list; nothing changed.")


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV with an email column (and optionally name), header optional; "
                                                   "Mailchimp's Email Address / First Name / Last Name are read too.")],
) -> None:
    """Import subscribers from CSV; bad rows are reported by line, the rest go in."""
    settings = _settings()
    report = import_csv(Store(settings.database_url), file, Tokens(settings.secret_key).email_hash)
    for line in report.rejected:
        err.print(f"rejected {line}", markup=False)
    suppressed = f", {report.suppressed} previously unsubscribed and forgotten" if report.suppressed else ""
    out.print(f"Imported {report.added}, skipped {report.duplicates} duplicate(s){suppressed}, "
              f"rejected {len(report.rejected)}.")
    if report.rejected:
        raise typer.Exit(1)


@subscribers_app.command("export")
def subscribers_export(status: StatusOption = None) -> None:
    """Write the list as CSV (email, name, status, dates) to stdout."""
    settings = _settings()
    export_csv(Store(settings.database_url), sys.stdout, status)


@subscribers_app.command("list")
def subscribers_list(status: StatusOption = None) -> None:
    """Show subscribers and their status, with a count per status."""
    settings = _settings()
    store = Store(settings.database_url)
    for row in store.iter_subscribers(status):
        out.print(f"{row['email']}\t{row['status']}\t{row['name']}", markup=False)
    counts = {s.value: store.count_subscribers(s) for s in Status}
    err.print(", ".join(f"{n} {s}" for s, n in counts.items()))


@subscribers_app.command("forget")
def subscribers_forget(email: str) -> None:
    """Erase a reader's data (GDPR). If they had unsubscribed, a keyed hash stays so no import re-adds them."""
    settings = _settings()
    address = normalise_email(email)
    store = Store(settings.database_url)
    if store.forget(address, Tokens(settings.secret_key).email_hash(address)):
        out.print(f"Erased {address} and its delivery history.")
    else:
        err.print(f"{address} is not on the list.")
        raise typer.Exit(1)


@subscribers_app.command("remove")
def subscribers_remove(email: str) -> None:
    """Unsubscribe an address (kept as unsubscribed so it is never mailed again)."""
    settings = _settings()
    address = normalise_email(email)
    store = Store(settings.database_url)
    subscriber = store.get_subscriber(address)
    if subscriber is not None and store.unsubscribe(subscriber.id):
        out.print(f"{address} is unsubscribed.")
    else:
        err.print(f"{address} is not on the list.")
        raise typer.Exit(1)


def _editors() -> tuple[Settings, Editors]:
    from .store.editors import Editors

    settings = _settings()
    return settings, Editors(Store(settings.database_url).engine)


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@editors_app.command("add")
def editors_add(email: str) -> None:
    """Add an editor, and print their one-time link to set a password (valid 24 hours)."""
    from .store.editors import PASSWORD_LINK_HOURS

    settings, editors = _editors()
    address = normalise_email(email)
    token = editors.add(address, _cli_actor(), PASSWORD_LINK_HOURS * 3600)
    out.print(f"Added {address}. Send them this link to set their password; it works once, "
              f"for {PASSWORD_LINK_HOURS} hours:\n{settings.base_url}/desk/password/{token}", markup=False)


@editors_app.command("list")
def editors_list() -> None:
    """The editors: address, whether their password is set, signed-in sessions, since when."""
    _, editors = _editors()
    everyone = editors.list()
    for editor in everyone:
        state = "password set" if editor.has_password else "no password yet"
        out.print(f"{editor.email}\t{state}\t{editor.sessions} session(s)\tsince {editor.created_at:%Y-%m-%d}",
                  markup=False)
    err.print(f"{len(everyone)} editor(s)" + ("" if everyone else ": `newsletter editors add EMAIL` adds the first"))


@editors_app.command("remove")
def editors_remove(email: str) -> None:
    """Remove an editor: their sessions end at once, their unused link stops working."""
    _, editors = _editors()
    address = normalise_email(email)
    editors.remove(address, _cli_actor())
    out.print(f"Removed {address}; their sessions are ended.", markup=False)


def _os_error_line(exc: OSError) -> str:
    """What an OSError says about its paths, as one line: "/proc/x: No such file or directory"."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def main() -> None:
    try:
        app()
    except NewsletterError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as exc:
        # A path given on the command line or in a setting that cannot be made, read or written (a missing or
        # read-only folder, a directory where a file was meant): the user's to fix, in one line.
        err.print(f"error: {_os_error_line(exc)}", markup=False)
        sys.exit(1)
    except OperationalError as exc:
        # The database refused mid-command (a read-only file, a lock held too long, a server gone).
        reason = " ".join(str(exc.orig).split())
        err.print(f"error: the database (NEWSLETTER_DATABASE_URL) refused: {reason}; check that the file or server "
                  "is writable and reachable, then run the command again", markup=False)
        sys.exit(75)
    except Exception as exc:
        # A bug, not a user's mistake: the traceback goes to the log for whoever fixes it, and a
        # send has already handed back its claims, so a rerun (once fixed) sends only to who is missing.
        log.critical("bug: %s", exc, exc_info=exc)
        err.print(f"error: a bug stopped the command ({type(exc).__name__}: {exc}); the traceback is in the log "
                  "above; report it", markup=False)
        sys.exit(EXIT_BUG)
