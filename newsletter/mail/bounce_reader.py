"""One run of the bounce reader: every report from every source, each read and applied on its own.

A report that cannot be read or attributed is named in one line and kept for a person (from
stdin under the keep folder, from IMAP in the kept folder, files stay where they are); the run
always goes on to the next, so one damaged report never holds back the ones behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..config import Settings
from ..store.database import Store
from ..tokens import Tokens
from .bounces import BounceSummary, FeedbackPolicy, describe, handle_report, keep_report
from .report_sources import Incoming, Unreadable, read_reports

Say = Callable[[str, bool], None]  # (line, whether a person must look at it)


@dataclass
class BounceRun:
    summary: BounceSummary = field(default_factory=BounceSummary)
    kept: int = 0  # reports from stdin saved under the keep folder: handled, as far as the MTA knows

    @property
    def complete(self) -> bool:
        """Whether every report was acted on or is safely kept; else a person must look (exit 1)."""
        return self.summary.unreadable + self.summary.unattributed <= self.kept


def read_bounces(settings: Settings, store: Store, sources: list[str], stdin: BinaryIO, keep_dir: Path,
                 use_imap: bool, say: Say, spool: Path | None = None) -> BounceRun:
    """Read and apply the reports of the IMAP mailbox (when asked), of the spool (when given) and of `sources`.

    A report from the spool leaves it once read: deleted when handled, moved to `keep_dir` for a person.
    """
    policy = FeedbackPolicy(settings.soft_bounce_limit, settings.soft_bounce_days)
    tokens = Tokens(settings.secret_key)
    run = BounceRun()

    def apply(item: Incoming | Unreadable) -> bool:
        """Act on one report and say so; False when a person must look at it."""
        if isinstance(item, Unreadable):
            run.summary.unreadable += 1
            say(f"{item.where}: {item.problem}", True)
            return False
        outcomes = handle_report(item.raw, store, tokens, settings.bounce_address, policy)
        run.summary.add(outcomes)
        for handled in outcomes:
            say(f"{item.where}: {describe(handled)}", bool(handled.unattributed))
        return not any(handled.unattributed for handled in outcomes)

    if use_imap:
        from .imap_reports import ImapReports  # IMAPClient: loaded only for a mailbox read over IMAP

        mailbox = ImapReports(settings)
        try:
            for entry in mailbox:
                mailbox.file(entry.uid, handled=apply(entry.item))
        finally:
            mailbox.close()
    if spool is not None and (spool / "new").is_dir():
        for item in read_reports([str(spool)], stdin):
            handled = apply(item)
            if isinstance(item, Incoming):
                if not handled:
                    say(f"{item.where}: kept as {keep_report(item.raw, keep_dir)}", True)
                Path(item.where).unlink(missing_ok=True)
    for item in read_reports(sources, stdin):
        if not apply(item) and item.where == "stdin" and isinstance(item, Incoming):
            say(f"stdin: kept as {keep_report(item.raw, keep_dir)}", True)
            run.kept += 1
    return run
