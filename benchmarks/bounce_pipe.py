"""What one report piped by the MTA costs: a process per report.

`newsletter bounces - --spool DIR` (queued only: the way docs/deliverability.md pipes) and `newsletter bounces -`
(read and applied in that process), side by side with `python -c pass` (the interpreter alone), the
runs alternating so that a slow minute weighs on both; then the spool's reports applied by one
`newsletter bounces --spool DIR`, and the batch way, one `newsletter bounces MAILDIR` over many
reports, for the cost per report when the MTA delivers to a Maildir and cron reads it.

Every report is a Postfix DSN (tests/data/reports/postfix_hard_5.1.1.eml) about a different
reader, with its own Message-ID and a valid return-path token, so every run does the real work:
parse, attribute, record the bounce, change the reader. Bytecode is cached (in this run's own
folder, PYTHONPYCACHEPREFIX), as on a server where the package has been imported once; a warm-up
run of each command writes it.
"""

from __future__ import annotations

import mailbox
import statistics
import sys
from pathlib import Path

from benchmarks import harness

REPORT = harness.PROJECT / "tests" / "data" / "reports" / "postfix_hard_5.1.1.eml"
ISSUE_TAG = harness.ISSUE_DATE.replace("-", "")
BOUNCED = "is now bounced"


def _reports(first: int, count: int) -> list[bytes]:
    """`count` reports, each bouncing reader `first + i` (a subscriber id of the store) with its own Message-ID."""
    Tokens = harness.product_module("newsletter.tokens", "newsletter.tokens").Tokens
    tokens = Tokens(harness.SECRET_KEY)
    template = REPORT.read_text(encoding="utf-8")
    domain = harness.FROM_ADDRESS.rpartition("@")[2]
    reports = []
    for subscriber_id in range(first, first + count):
        email, _ = harness.subscriber_rows(subscriber_id, subscriber_id + 1)[0]
        text = template
        for placeholder, value in {
            "{{RETURN_PATH}}": f"bounces+{tokens.return_path_token(ISSUE_TAG, subscriber_id)}@{domain}",
            "{{READER}}": email,
            "{{MESSAGE_ID}}": f"<morning.{ISSUE_TAG}.{subscriber_id}@{domain}>",
            "{{UNSUBSCRIBE_URL}}": f"{harness.BASE_URL}/unsubscribe/none",
        }.items():
            text = text.replace(placeholder, value)
        text = text.replace("Message-Id: <20261130040211.4F2C81A0B2@relay.news.example>",
                            f"Message-Id: <bench.{subscriber_id}.4F2C81A0B2@relay.{domain}>")
        reports.append(text.encode("utf-8"))
    return reports


def _env(db: Path) -> dict[str, str]:
    env = harness.newsletter_env(db, port=25)  # no mail is sent: the SMTP settings are never used
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(harness.WORK_DIR / "pycache")
    return env


def run_bounce_pipe(runs: int = 10, batch: int = 1000) -> dict:
    """Median CPU (user + system) of a piped report and of `python -c pass`, and the batch's per report."""
    work = harness.WORK_DIR / "bounce-pipe"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "bounces.sqlite3"
    piped = runs + 1  # the first one is the warm-up
    harness.make_store(db, piped * 2 + batch)
    env = _env(db)
    pipe_cmd = [sys.executable, "-m", "newsletter", "bounces", "-", "--keep-dir", str(work / "kept")]
    spool = work / "spool"
    queue_cmd = [sys.executable, "-m", "newsletter", "bounces", "-", "--spool", str(spool)]
    pass_cmd = [sys.executable, "-c", "pass"]
    problems: list[str] = []
    pipe_cpu: list[float] = []
    queue_cpu: list[float] = []
    pass_cpu: list[float] = []
    for i, raw in enumerate(_reports(1, piped * 2)):
        report = work / f"report-{i}.eml"
        report.write_bytes(raw)
        queued = i % 2 == 1  # every other report goes through the spool, applied below
        run = harness.run_measured(queue_cmd if queued else pipe_cmd, env=env, cwd=work, stdin=report, timeout=60,
                                   log_prefix=work / f"pipe-{i}")
        expected = "queued as" if queued else BOUNCED
        if run.exit_code != 0 or expected not in run.stdout + run.stderr:
            problems.append(f"piped report {i}: exit {run.exit_code}, {(run.stdout + run.stderr).strip()[-300:]}")
        if queued:
            baseline = harness.run_measured(pass_cmd, env=env, cwd=work, timeout=60, log_prefix=work / f"pass-{i}")
        if i >= 2:  # the warm-ups wrote the bytecode
            (queue_cpu if queued else pipe_cpu).append(run.cpu)
            if queued:
                pass_cpu.append(baseline.cpu)
    drain = harness.run_measured([sys.executable, "-m", "newsletter", "bounces", "--spool", str(spool)],
                                 env=env, cwd=work, timeout=600, log_prefix=work / "drain")
    if drain.exit_code != 0 or drain.stdout.count(BOUNCED) != piped:
        problems.append(f"spool: exit {drain.exit_code}, {drain.stdout.count(BOUNCED)} of {piped} readers bounced")

    maildir = mailbox.Maildir(work / "Maildir", create=True)
    for raw in _reports(piped * 2 + 1, batch):
        maildir.add(raw)
    run = harness.run_measured([sys.executable, "-m", "newsletter", "bounces", str(work / "Maildir")],
                               env=env, cwd=work, timeout=600, log_prefix=work / "batch")
    bounced = run.stdout.count(BOUNCED)
    if run.exit_code != 0 or bounced != batch:
        problems.append(f"batch: exit {run.exit_code}, {bounced} of {batch} readers bounced")
    pipe, queue, plain = statistics.median(pipe_cpu), statistics.median(queue_cpu), statistics.median(pass_cpu)
    return {
        "status": "failed" if problems else "ok", "problems": problems, "runs": runs,
        "pipe_cpu": pipe, "queue_cpu": queue, "pass_cpu": plain, "ratio": queue / plain if plain else None,
        "samples_pipe_cpu": pipe_cpu, "samples_queue_cpu": queue_cpu, "samples_pass_cpu": pass_cpu,
        "drain_reports": piped, "drain_cpu_per_report": drain.cpu / piped,
        "batch_reports": batch, "batch_cpu": run.cpu, "batch_wall": run.wall,
        "batch_cpu_per_report": run.cpu / batch,
    }
