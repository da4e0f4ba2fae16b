"""How one issue's send stands now, as the store has it: what `newsletter status` prints and /desk/send shows.

Every `newsletter send` run writes to the store as it goes, so these figures are the same on any
machine, while the send runs and after it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from .store.database import Store


@dataclass(frozen=True)
class SendProgress:
    """One issue's send as the store has it now."""

    issue_date: str
    state: str  # "none" (no issue yet), "waiting" (frozen, not started), "running", "complete", "incomplete"
    subject: str = ""
    approved_by: str = ""
    approved_at: dt.datetime | None = None
    folded: bool = False  # the delivery log was folded into totals: final, never sent again
    delivered: int = 0
    in_flight: int = 0  # claimed by a run, its answer not in yet
    waiting: int = 0  # active readers not claimed yet
    retrying: int = 0  # a transient failure: the next run tries again
    refused: int = 0  # the server said no for good during the send
    withdrawn: int = 0  # left the list between the claim and the message
    paused: int = 0  # readers who paused past this date: not sent to
    hard_bounces: int = 0  # reported by the readers' servers afterwards
    soft_bounces: int = 0
    complained: int = 0  # readers who marked it as spam
    blocked: int = 0  # refused by a policy (spam filter, SPF, DKIM, DMARC) afterwards
    delayed: int = 0  # delay warnings: not failures
    runs: int = 0  # `newsletter send` runs at work on it now

    @property
    def pending(self) -> int:
        return self.in_flight + self.waiting

    @property
    def bounced(self) -> int:
        return self.hard_bounces + self.soft_bounces

    @property
    def total(self) -> int:
        return self.delivered + self.refused + self.retrying + self.pending

    @property
    def finished(self) -> int:
        """Readers the send is done with for now: delivered, or refused for good."""
        return self.delivered + self.refused

    @property
    def percent(self) -> int:
        return round(100 * self.finished / self.total) if self.total else 0

    @property
    def incomplete(self) -> bool:
        """Readers are left to try (pending or retrying) and the next run will: the morning's job is not done."""
        return bool(self.pending or self.retrying) and not self.folded

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "approved_at": self.approved_at.isoformat() if self.approved_at else None,
                "pending": self.pending, "bounced": self.bounced, "total": self.total, "finished": self.finished,
                "percent": self.percent}


def send_progress(store: Store, date: dt.date, stale_after: dt.timedelta) -> SendProgress:
    """How the send of `date`'s issue stands, and whether a run (its heartbeat newer than `stale_after`) is at work."""
    day = date.isoformat()
    # The outline, not the issue: /desk/send asks every few seconds, and the HTML is the bulk of the row.
    issue = store.issue_outline(day)
    if issue is None:
        return SendProgress(day, "none")
    approval = store.approvals.of(day)
    counts = store.log.delivery_counts(issue.id)
    folded = issue.log_folded_at is not None
    waiting = 0 if folded else store.log.never_claimed(issue.id)
    runs = 0 if folded else store.log.live_runs(issue.id, stale_after)
    feedback = store.feedback.counts_by_issue(day)
    in_flight = counts.get("sending", 0)
    if runs:
        state = "running"
    elif not counts:
        state = "waiting"
    elif in_flight or waiting or counts.get("failed", 0):
        state = "incomplete"
    else:
        state = "complete"
    return SendProgress(
        day, state, issue.subject, approval.approved_by if approval else "",
        approval.approved_at if approval else None, folded,
        delivered=counts.get("sent", 0), in_flight=in_flight, waiting=waiting, retrying=counts.get("failed", 0),
        refused=counts.get("refused", 0), withdrawn=counts.get("withdrawn", 0),
        paused=0 if folded else store.log.paused(issue.id),
        hard_bounces=feedback.get("hard", 0), soft_bounces=feedback.get("soft", 0),
        complained=feedback.get("complaint", 0), blocked=feedback.get("blocked", 0),
        delayed=feedback.get("delayed", 0), runs=runs)
