"""Where `newsletter send` spends its time: the real command, profiled in every thread.

cProfile only sees the thread it was enabled in, and `newsletter send` does its
store work in asyncio.to_thread workers; so the profiled child here wraps
threading.Thread.run with one profiler per thread and merges them all with the
main thread's (in that child process only; no product code is touched). A second,
unprofiled run samples each thread's CPU time from /proc, which cProfile's
overhead cannot distort.

    python -m benchmarks.profile_send [-n 20000] [--connections 10] [--top 25]

Writes benchmarks/results/profile-<stamp>.prof (open with `python -m pstats` or
snakeviz) and .txt, and prints the hotspots.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (the profiled child): find `benchmarks` last, so that
    sys.path.append(str(Path(__file__).resolve().parent.parent))  # newsletter comes from PYTHONPATH

from benchmarks import harness  # noqa: E402

# --- the profiled child ----------------------------------------------------


def _child(prof_out: str, cli_args: list[str]) -> int:
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(self):
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = profiled_run
    main_profile = cProfile.Profile()
    code = 0
    main_profile.enable()
    try:
        from newsletter.cli import main

        sys.argv = ["newsletter", *cli_args]
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        main_profile.disable()
        stats = pstats.Stats(main_profile)
        with lock:
            for profile in profiles:
                try:
                    stats.add(profile)
                except TypeError:  # a thread that never ran a profiled call
                    pass
        stats.dump_stats(prof_out)
    return code


# --- per-thread CPU from /proc ----------------------------------------------


class ThreadCpuSampler:
    """Polls /proc/PID/task/*/stat until the process ends; keeps each thread's last CPU time."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.cpu: dict[int, float] = {}
        self.pid = 0
        self.tick = os.sysconf("SC_CLK_TCK")

    def __call__(self, pid: int) -> None:
        self.pid = pid
        task_dir = Path(f"/proc/{pid}/task")
        while True:
            try:
                tids = os.listdir(task_dir)
            except OSError:
                return
            for tid in tids:
                try:
                    fields = (task_dir / tid / "stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if fields[0] == "Z":
                    return
                self.cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / self.tick
            time.sleep(self.interval)

    def summary(self) -> dict:
        main = self.cpu.get(self.pid, 0.0)
        others = sorted((cpu for tid, cpu in self.cpu.items() if tid != self.pid), reverse=True)
        return {"main_thread_cpu": main, "other_threads_cpu": sum(others), "other_threads": len(others),
                "busiest_other_thread_cpu": others[0] if others else 0.0}


# --- reading the profile -------------------------------------------------------

AREAS = [
    ("/aiosmtplib/", "aiosmtplib (SMTP client)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/sqlite3/", "sqlite3"),
    ("/asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("/email/", "stdlib email (address parsing)"),
    ("/itsdangerous/", "tokens (HMAC; itsdangerous for confirmations)"),
    ("/hmac.py", "tokens (HMAC; itsdangerous for confirmations)"),
    ("/newsletter/", "newsletter"),
    ("/concurrent/", "thread pool (to_thread)"),
    ("threading.py", "thread pool (to_thread)"),
    ("queue.py", "thread pool (to_thread)"),
    ("/logging/", "logging"),
    ("/rich/", "rich/typer CLI"),
    ("/typer/", "rich/typer CLI"),
    ("<frozen", "imports"),
    ("/importlib/", "imports"),
]
BUILD_PACKAGES = ("/feedparser/", "/premailer/", "/cssutils/", "/mjml/", "/jinja2/", "/lxml/", "/sgmllib",
                  "/markupsafe/", "/cachetools/", "/cssselect/", "/pydantic", "/tomllib/", "/selection.py")


IDLE = "idle waits (epoll, thread-pool queue, locks)"


def _builtin_area(name: str) -> str | None:
    if "epoll" in name or ("SimpleQueue" in name and "'get'" in name) or "acquire' of '_thread" in name:
        return IDLE
    if "_socket.socket" in name:
        return "socket I/O (send/recv syscalls)"
    if "sqlite3" in name:
        return "sqlite3"
    if "marshal" in name or "_imp." in name or "posix.stat" in name or "io.open_code" in name:
        return "imports"
    return None


def _area(filename: str) -> str:
    if any(p in filename for p in BUILD_PACKAGES):
        return "issue build (feeds/select/render)"
    for pattern, area in AREAS:
        if pattern in filename:
            return area
    return "other"


def _label(func: tuple) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else filename
    return f"{short}:{line}({name})"


def attribute_areas(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time (tottime) per area; built-ins go to their caller's area unless they are I/O."""
    totals: dict[str, float] = {}
    for func, (_, _, tt, _, callers) in stats.stats.items():
        filename, _, name = func
        if filename != "~":
            area = _area(filename)
            totals[area] = totals.get(area, 0.0) + tt
            continue
        area = _builtin_area(name)
        if area or not callers:
            totals[area or "other"] = totals.get(area or "other", 0.0) + tt
            continue
        caller_tt = sum(v[2] for v in callers.values()) or 1.0
        for caller, values in callers.items():
            share = tt * values[2] / caller_tt
            caller_area = _area(caller[0]) if caller[0] != "~" else (_builtin_area(caller[2]) or "other")
            totals[caller_area] = totals.get(caller_area, 0.0) + share
    return sorted(totals.items(), key=lambda kv: -kv[1])


def top_functions(stats: pstats.Stats, top: int) -> list[dict]:
    rows = []
    for func, (cc, nc, tt, ct, callers) in stats.stats.items():
        if func[0] == "~" and _builtin_area(func[2]) == IDLE:
            continue
        caller = ""
        if callers:
            best = max(callers.items(), key=lambda kv: kv[1][2])
            caller = _label(best[0])
        rows.append({"function": _label(func), "calls": nc, "tottime": tt, "cumtime": ct, "top_caller": caller})
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:top]


# --- the driver ----------------------------------------------------------------


def profile(sink_binary: str, n: int, connections: int = 10, top: int = 25, stamp: str | None = None) -> dict:
    stamp = stamp or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    prof_path = harness.TMP_DIR / f"profile-{stamp}.prof"  # 1 MB or more: kept out of git, kept after the run
    db = harness.WORK_DIR / "profile.sqlite3"
    result: dict = {"messages": n, "connections": connections}

    # 1. Unprofiled, per-thread CPU from /proc.
    harness.make_store(db, n)
    sampler = ThreadCpuSampler()
    with harness.SmtpSink(sink_binary, "profile-plain") as sink:
        env = harness.newsletter_env(db, sink.port, connections)
        plain = harness.run_measured([sys.executable, "-m", "newsletter", "send", "--date", harness.ISSUE_DATE],
                                     env=env, cwd=harness.WORK_DIR, timeout=max(600, n / 20),
                                     log_prefix=harness.WORK_DIR / "profile-plain", on_start=sampler)
    summary = harness.parse_send_summary(plain.stdout) or {}
    result["plain"] = {"wall": plain.wall, "cpu": plain.cpu, "user": plain.user, "system": plain.system,
                       "exit_code": plain.exit_code, "sink_messages": sink.stats.messages,
                       "sink_cpu": sink.stats.cpu, **summary, "threads": sampler.summary()}

    # 2. Profiled in every thread.
    harness.make_store(db, n)
    with harness.SmtpSink(sink_binary, "profile-cprofile") as sink:
        env = harness.newsletter_env(db, sink.port, connections)
        profiled = harness.run_measured(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(prof_path), "--",
             "send", "--date", harness.ISSUE_DATE],
            env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(harness.PROJECT)]))},
            cwd=harness.WORK_DIR, timeout=max(900, n / 10),
            log_prefix=harness.WORK_DIR / "profile-cprofile")
    summary = harness.parse_send_summary(profiled.stdout) or {}
    result["profiled"] = {"wall": profiled.wall, "cpu": profiled.cpu, "exit_code": profiled.exit_code,
                          "sink_messages": sink.stats.messages, **summary}
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()

    components = harness.run_measured(
        [sys.executable, str(harness.BENCH_DIR / "components.py"), "--workdir", str(harness.WORK_DIR / "components"),
         "--messages", str(min(n, 20_000)), "--connections", str(connections),
         "--from-address", harness.FROM_ADDRESS, "--base-url", harness.BASE_URL, "--secret-key", harness.SECRET_KEY],
        cwd=harness.WORK_DIR, timeout=900, log_prefix=harness.WORK_DIR / "components")
    if components.exit_code == 0:
        import json

        result["components"] = json.loads(components.stdout.strip().splitlines()[-1])
    else:
        result["components"] = {"error": components.stderr[-2000:]}

    stats = pstats.Stats(str(prof_path))
    result["component_calls"] = component_calls(stats, n)
    areas = attribute_areas(stats)
    busy = sum(s for a, s in areas if a != IDLE)
    result["profile_file"] = str(prof_path.relative_to(harness.PROJECT))
    result["profiled_busy_time_total"] = busy
    result["areas"] = [{"area": a, "seconds": s, "share": s / busy if a != IDLE else None,
                        "us_per_message": s / n * 1e6} for a, s in areas]
    result["top"] = [{**row, "us_per_call": row["tottime"] / row["calls"] * 1e6 if row["calls"] else 0.0,
                      "us_per_message": row["tottime"] / n * 1e6}
                     for row in top_functions(stats, top)]

    text = format_report(result, stats, top)
    (harness.RESULTS_DIR / f"profile-{stamp}.txt").write_text(text, encoding="utf-8")
    result["report_file"] = str((harness.RESULTS_DIR / f"profile-{stamp}.txt").relative_to(harness.PROJECT))
    return result


# (key in components.py's output, label, the function whose calls in the real send show
# whether and how often that cost is paid: (file suffix, function name)).
COMPONENT_ROWS = [
    ("aiosmtplib_data_preparation", "aiosmtplib's DATA preparation (line-ending regex + dot-stuffing regex on the "
     "whole message)", ("aiosmtplib/protocol.py", "normalize_message_line_endings")),
    ("store_record_outcomes_cpu", "delivery log group commit, rounds of K outcomes (CPU)", ("store/deliverylog.py", "record")),
    ("aiosmtplib_address_checks", "aiosmtplib's address checks (email.utils.parseaddr ×4)",
     ("aiosmtplib/email.py", "parse_address")),
    ("personalise", "MessageTemplate.personalise (incl. the unsubscribe token)", ("newsletter/mail/message.py", "personalise")),
    ("store_claim_batch", "delivery log claim_fresh, per subscriber", ("", "claim_fresh")),
]


def component_calls(stats: pstats.Stats, n: int) -> dict[str, float]:
    """Calls per message, in the profiled send, of the function behind each component."""
    calls = {}
    for key, _, (suffix, name) in COMPONENT_ROWS:
        total = sum(v[1] for (filename, _, func), v in stats.stats.items()
                    if func == name and filename.endswith(suffix) and filename != "~")
        calls[key] = total / n
    return calls


def component_rows(result: dict) -> list[tuple[str, float, float | None]]:
    """(label, µs per message timed alone, calls per message in the real send or None)."""
    comp = result.get("components") or {}
    calls = result.get("component_calls") or {}
    return [(label, comp[key], calls.get(key)) for key, label, _ in COMPONENT_ROWS
            if isinstance(comp.get(key), (int, float))]


def _calls(value: float | None) -> str:
    if value is None:
        return "?"
    if value == 0:
        return "0 (not on the send path)"
    return f"{value:.2f}" if value >= 0.01 else f"{value:.4f}"


def format_report(result: dict, stats: pstats.Stats, top: int) -> str:
    n = result["messages"]
    plain, profiled = result["plain"], result["profiled"]
    threads = plain["threads"]
    cpu_us = plain["cpu"] / n * 1e6
    lines = [f"# `newsletter send` profile: {n:,} messages, {result['connections']} connections, smtp-sink", ""]
    lines.append(f"Unprofiled run: {plain['wall']:.1f} s wall, {n / plain['wall']:.0f} msg/s end to end "
                 f"(send phase {plain.get('send_rate', 0):.0f} msg/s); CPU {plain['cpu']:.1f} s = {cpu_us:.0f} µs per "
                 f"message (user {plain['user']:.1f} s, system {plain['system']:.1f} s); the sink saw "
                 f"{plain['sink_messages']:,} and used {plain['sink_cpu']:.1f} s CPU.")
    lines.append(f"CPU by thread (/proc): main thread (event loop) {threads['main_thread_cpu']:.1f} s = "
                 f"{threads['main_thread_cpu'] / n * 1e6:.0f} µs/message; {threads['other_threads']} to_thread "
                 f"worker(s) {threads['other_threads_cpu']:.1f} s = {threads['other_threads_cpu'] / n * 1e6:.0f} µs/message "
                 f"(they share the GIL with the main thread).")
    lines.append(f"Profiled run: {profiled['wall']:.1f} s wall ({n / profiled['wall']:.0f} msg/s); cProfile inflates "
                 f"Python-heavy code, and a built-in that releases the GIL (socket send, sqlite3) is charged the "
                 f"time it then waits to get the GIL back.")
    rows = component_rows(result)
    if rows:
        comp = result["components"]
        lines += ["", "## Per-message costs, each timed alone (benchmarks/components.py)", "",
                  "| component | µs per message, alone | calls per message in the send | share of the send's CPU |",
                  "|---|---:|---:|---:|"]
        for label, us, calls in rows:
            share = "—" if calls == 0 else f"{us / cpu_us:.0%}"
            lines.append(f"| {label} | {us:.0f} | {_calls(calls)} | {share} |")
        lines.append(f"| kernel (system time of the real send: socket writes of {comp.get('message_bytes', 0):,}-byte "
                     f"messages, SQLite I/O) | {plain['system'] / n * 1e6:.0f} | | {plain['system'] / plain['cpu']:.0%} |")
        if "store_record_outcomes_fixed_per_transaction_us" in comp:
            lines += ["", f"delivery-log group commit by round size (µs per row, wall / CPU): " + ", ".join(
                f"{g}: {comp['store_record_outcomes_by_group_size'][g]:.0f} / "
                f"{comp['store_record_outcomes_cpu_by_group_size'][g]:.0f}" for g in comp["store_record_outcomes_by_group_size"])
                + f"; fit: {comp['store_record_outcomes_fixed_per_transaction_us'] / 1000:.2f} ms per transaction "
                  f"+ {comp['store_record_outcomes_per_row_us']:.0f} µs per row."]
        if "message_lines_starting_with_dot" in comp:
            lines += ["", f"Our message has {comp['message_lines_starting_with_dot']} line(s) starting with '.' and "
                          f"{comp['message_lone_cr_or_lf']} lone CR/LF: aiosmtplib's two passes change nothing in it. "
                          f"Our bytes are CRLF by construction; looking for a line that starts with '.' "
                          f"(`b'\\r\\n.' in message`) costs {comp.get('check_no_leading_dot', float('nan')):.0f} µs."]
    lines += ["", "## Own time by area in the profiled run (built-ins charged to their caller, except "
                  "socket, sqlite3 and idle waits)", "",
              "| area | seconds | share of busy time | µs per message |", "|---|---:|---:|---:|"]
    for a in result["areas"]:
        if a["share"] is None or a["share"] >= 0.002:
            share = "idle" if a["share"] is None else f"{a['share']:.1%}"
            lines.append(f"| {a['area']} | {a['seconds']:.2f} | {share} | {a['us_per_message']:.0f} |")
    lines += ["", f"## Top {top} functions by own time (profiled run)", "",
              "| function | calls | own s | µs/call | µs/message | cumulative s | main caller |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for row in result["top"]:
        lines.append(f"| `{row['function']}` | {row['calls']} | {row['tottime']:.2f} | {row['us_per_call']:.1f} | "
                     f"{row['us_per_message']:.1f} | {row['cumtime']:.2f} | `{row['top_caller']}` |")
    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats("cumulative").print_stats(40)
    lines += ["", "## pstats, by cumulative time (top 40)", "", "```", buffer.getvalue().strip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        prof_out, rest = argv[1], argv[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return _child(prof_out, rest)
    parser = argparse.ArgumentParser(description="Profile `newsletter send` against smtp-sink, in every thread.")
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--code", metavar="REV", default=None,
                        help="profile this git revision instead of the working tree (snapshot either way)")
    args = parser.parse_args(argv)
    sink, _ = harness.ensure_postfix()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    harness.begin_run(stamp)
    code = harness.use_code_snapshot(args.code)
    print(f"code under test: {code['source']}", flush=True)
    result = profile(sink, args.messages, args.connections, args.top, stamp=stamp)
    print((harness.PROJECT / result["report_file"]).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
