"""The morning send's figures for Prometheus, as a file node_exporter's textfile collector reads.

`newsletter send` is a cron job, gone before anything could scrape it: at the end of each run it
writes its figures to NEWSLETTER_METRICS_FILE (a `*.prom` file in the collector's directory). The
file is replaced whole (a temporary file in the same directory, fsynced, then renamed over it):
node_exporter, reading at any moment, sees the previous run's file or this one's, never half of one,
and a run that dies while writing leaves the previous file as it was.

`newsletter bounces` (from cron, or a mail server's pipe) adds what it read to counters kept in a
file of its own beside that one (`newsletter-bounces.prom` next to `newsletter.prom`): the same
`newsletter_bounces_total` and `newsletter_complaints_total` that `serve` counts from relays'
webhooks, so the alert rules add up both. Each run reads the file's totals and writes them back
increased, under a lock, since Postfix may pipe several reports at once.

What `newsletter serve` counts while it runs is in web/metrics.py.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from .config import Settings
from .store.database import Store

if TYPE_CHECKING:
    from .edition import SendResult

log = logging.getLogger(__name__)

# node_exporter runs as another user: the figures are not secret, the file must be readable.
FILE_MODE = 0o644


@dataclass(frozen=True)
class SendFigures:
    """What one run of `newsletter send` did."""

    issue_date: dt.date
    finished: dt.datetime  # when the run ended (aware)
    delivered: int  # accepted by the relay in this run
    failed: int  # failed transiently: left for the next run
    refused: int  # refused for good (5xx)
    duration_seconds: float
    issue_delivered: int  # the issue's deliveries so far, this run's and earlier runs' (a rate's denominator)


def send_registry(figures: SendFigures) -> CollectorRegistry:
    """The figures as Prometheus gauges, in a registry of their own."""
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(name, documentation, registry=registry).set(value)

    midnight = dt.datetime.combine(figures.issue_date, dt.time(), tzinfo=dt.timezone.utc)
    gauge("newsletter_send_issue_date_seconds", "The date of the issue the last send sent (00:00 UTC of that day).",
          midnight.timestamp())
    gauge("newsletter_send_finished_timestamp_seconds", "When the last send finished (Unix time).",
          figures.finished.timestamp())
    gauge("newsletter_send_delivered", "Messages the relay accepted in the last send.", figures.delivered)
    gauge("newsletter_send_failed", "Deliveries of the last send that failed transiently (left for the next run).",
          figures.failed)
    gauge("newsletter_send_refused", "Deliveries of the last send refused for good (5xx).", figures.refused)
    gauge("newsletter_send_duration_seconds", "How long the last send took.", figures.duration_seconds)
    gauge("newsletter_send_issue_delivered", "Messages of the last send's issue delivered so far, all runs.",
          figures.issue_delivered)
    return registry


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """Replace `path` with the registry's figures in the text format, atomically.

    The temporary file starts with a dot and does not end in .prom, so the collector never reads
    it; it is fsynced before the rename and the directory after, so a power cut leaves the old
    file or the new one, not an empty one.
    """
    body = generate_latest(registry)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(body)
            file.flush()
            os.fchmod(file.fileno(), FILE_MODE)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_send_figures(path: Path, figures: SendFigures) -> None:
    write_textfile(path, send_registry(figures))


def record_send(settings: Settings, store: Store, result: SendResult) -> None:
    """Write a finished run's figures to NEWSLETTER_METRICS_FILE, when it is set.

    A file that cannot be written is logged and does not fail the send (the readers have their
    issue); the alert on a missing morning send then fires, and the log says why.
    """
    if settings.metrics_file is None:
        return
    report = result.report
    figures = SendFigures(
        issue_date=dt.date.fromisoformat(str(result.issue.issue_date)),
        finished=dt.datetime.now(dt.timezone.utc),
        delivered=report.sent, failed=report.failed, refused=report.refused,
        duration_seconds=report.finished - report.started,
        issue_delivered=store.log.delivery_counts(result.issue.id).get("sent", 0),
    )
    try:
        write_send_figures(settings.metrics_file, figures)
    except OSError as exc:
        log.error("could not write NEWSLETTER_METRICS_FILE=%s: %s", settings.metrics_file, exc)


# What a bounce run counts, by the report kinds of mail/bounces.py; the rest (delay warnings,
# auto-replies) are not bounces.
BOUNCE_KINDS = ("hard", "soft", "blocked")


def bounces_file(metrics_file: Path) -> Path:
    """The bounce reader's file, beside the send's: newsletter.prom → newsletter-bounces.prom."""
    return metrics_file.with_name(f"{metrics_file.stem}-bounces.prom")


class _BounceTotals:
    """Counters with no `_created` sample: the file is rewritten by every run, not created."""

    def __init__(self, totals: dict[str, float], now: float) -> None:
        self.totals = totals
        self.now = now

    def collect(self):  # noqa: ANN201 (a prometheus_client collector)
        bounces = CounterMetricFamily("newsletter_bounces", "Bounces read from mail by `newsletter bounces`, "
                                      "by kind (hard, soft, blocked: refused by policy).", labels=["kind"])
        for kind in BOUNCE_KINDS:
            bounces.add_metric([kind], self.totals.get(kind, 0))
        yield bounces
        yield CounterMetricFamily("newsletter_complaints", "Spam complaints read from mail by `newsletter bounces`.",
                                  value=self.totals.get("complaint", 0))
        yield GaugeMetricFamily("newsletter_bounces_last_read_timestamp_seconds",
                                "When `newsletter bounces` last finished reading (Unix time).", value=self.now)


def _read_totals(path: Path) -> dict[str, float]:
    """The totals an earlier run wrote; none when there is no file (a counter starting again is a reset
    Prometheus understands)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    totals: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "newsletter_bounces_total":
                    totals[sample.labels.get("kind", "")] = sample.value
                elif sample.name == "newsletter_complaints_total":
                    totals["complaint"] = sample.value
    except ValueError as exc:
        log.warning("%s could not be read (%s): its counters start again from 0", path, exc)
        return {}
    return totals


def add_bounces(path: Path, by_kind: dict[str, int]) -> None:
    """Add one run's reports (ReportKind values → how many) to the counters in `path`."""
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        totals = _read_totals(path)
        for kind in (*BOUNCE_KINDS, "complaint"):
            totals[kind] = totals.get(kind, 0) + by_kind.get(kind, 0)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_BounceTotals(totals, time.time()))
        write_textfile(path, registry)


def record_bounces(settings: Settings, by_kind: dict[str, int]) -> None:
    """After `newsletter bounces`: add what it read to the counters beside NEWSLETTER_METRICS_FILE, when set."""
    if settings.metrics_file is None:
        return
    path = bounces_file(settings.metrics_file)
    try:
        add_bounces(path, by_kind)
    except OSError as exc:
        log.error("could not write %s (beside NEWSLETTER_METRICS_FILE): %s", path, exc)
