"""`newsletter send` on PostgreSQL: one process, then several sharing the list, against smtp-sink.

A throw-away cluster (tests/postgres.py: initdb, pg_ctl, fsync off as in the tests) on loopback.
Measured per run: end-to-end msg/s (N / the wall time of the slowest sender), the senders' CPU per
1,000 messages (user + system, all senders added up), the same less each process's start-up (the
CPU of a `newsletter send` with nothing left to send, run after them), and the PostgreSQL server's
(the postmaster, its live backends and the backends that ended, from /proc).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from . import harness

ISSUE_DATE = "2017-05-09"


def _proc_cpu(pid: int, with_children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: backends that have ended
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(cluster) -> float:
    """CPU seconds the cluster has used so far: postmaster, its ended children, its live children."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = _proc_cpu(postmaster, with_children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == postmaster:
                    total += _proc_cpu(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile: counted in the postmaster's children time
    return total


def run_postgres(sink_bin: str, n: int, k: int, processes: int) -> dict:
    sys.path.insert(0, str(harness.PROJECT))
    from tests.postgres import PostgresCluster

    cluster = PostgresCluster()
    name = f"postgres-{processes}"
    try:
        url = cluster.url(cluster.create_database())
        insert = harness.make_store(url, n)
        with harness.SmtpSink(sink_bin, name) as sink:
            env = {**harness.newsletter_env(Path("unused"), sink.port, k), "NEWSLETTER_DATABASE_URL": url}
            runs: list[harness.Measured] = [None] * processes  # type: ignore[list-item]
            before = server_cpu(cluster)

            def send(index: int) -> None:
                runs[index] = harness.run_measured(
                    [sys.executable, "-m", "newsletter", "send", "--date", ISSUE_DATE], env=env,
                    cwd=harness.WORK_DIR, timeout=max(600, n / 20), log_prefix=harness.WORK_DIR / f"{name}-{index}")

            threads = [threading.Thread(target=send, args=(i,)) for i in range(processes)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            pg_cpu = server_cpu(cluster) - before
            # A send with nothing left to send: what each process costs before its first message
            # (interpreter, imports, settings, loading the frozen issue), paid once per process.
            idle = harness.run_measured(
                [sys.executable, "-m", "newsletter", "send", "--date", ISSUE_DATE], env=env,
                cwd=harness.WORK_DIR, timeout=600, log_prefix=harness.WORK_DIR / f"{name}-idle")
    finally:
        cluster.stop()
    stats = sink.stats
    wall = max(run.wall for run in runs)
    sent = sum((harness.parse_send_summary(run.stdout) or {}).get("sent", 0) for run in runs)
    problems = [f"sender {i} exit code {run.exit_code}" for i, run in enumerate(runs) if run.exit_code != 0]
    if stats.messages != n:
        problems.append(f"the sink saw {stats.messages} of {n} messages")
    if sent != n:
        problems.append(f"the senders report {sent} sent of {n}")
    ok = not problems
    sender_cpu = sum(run.cpu for run in runs)
    return {
        "client": f"newsletter send on PostgreSQL, {processes} process(es)", "processes": processes,
        "connections": k, "messages": n, "sink_messages": stats.messages, "status": "ok" if ok else "failed",
        "problems": problems, "wall_seconds": wall, "rate": n / wall if ok else None,
        "cpu_per_1000": sender_cpu / n * 1000, "postgres_cpu_per_1000": pg_cpu / n * 1000,
        "startup_cpu": idle.cpu, "cpu_per_1000_less_startup": (sender_cpu - processes * idle.cpu) / n * 1000,
        "peak_rss_mb": max(run.maxrss_mb for run in runs), "store_insert_seconds": insert,
        **({} if ok else {"stderr_tail": [run.stderr[-1500:] for run in runs]}),
    }
