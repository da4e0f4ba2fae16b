"""Story links under the morning burst: `newsletter serve`'s /c/ against a constant 302.

wrk (Debian's; installed here when missing, as root) drives both over loopback with the same
uvicorn, one worker each, the same connections and a script that cycles through genuine click
tokens (1,000 readers × 6 stories) with a phone browser's User-Agent:

- throughput: ours and the baseline (benchmarks/redirect_baseline.py) alternate, `ROUNDS` runs
  each; the medians' ratio is judged (≥ 0.7×);
- latency at a fixed 1,000 requests/s (wrk's delay(): each of 20 connections sends every 20 ms):
  the 99th percentile is judged (< 50 ms);
- nothing lost: a client that counts its 302s sends N clicks while `serve` gets SIGTERM halfway;
  after it stopped, the store must hold exactly as many clicks as the client saw redirects.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks import harness

ROUNDS = 3
SECONDS = 8
CONNECTIONS = 32
RATE = 1000  # requests per second for the latency run
RATE_CONNECTIONS = 20
READERS = 1000
STORIES = 6
AGENT = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/131.0.0.0 Mobile Safari/537.36")
COUNTED_CLICKS = 3000
THROUGHPUT_RATIO = 0.7
P99_MS = 50.0


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is not installed: apt-get install wrk (as root)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def _paths() -> list[str]:
    Tokens = harness.product_module("newsletter.tokens", "newsletter.tokens").Tokens
    tokens = Tokens(harness.SECRET_KEY)
    tag = harness.ISSUE_DATE.replace("-", "")
    return [f"/c/{tokens.click_token(tag, place, reader)}"
            for reader in range(1, READERS + 1) for place in range(1, STORIES + 1)]


def _script(work: Path, paths: list[str], delay_ms: float | None) -> Path:
    lines = ["paths = {" + ",".join(f'"{p}"' for p in paths) + "}", "counter = math.random(#paths)",
             "request = function()", "  counter = counter % #paths + 1",
             f'  return wrk.format("GET", paths[counter], {{["User-Agent"] = "{AGENT}"}})', "end"]
    if delay_ms is not None:
        lines += ["delay = function()", f"  return {delay_ms}", "end"]
    script = work / ("rate.lua" if delay_ms is not None else "burst.lua")
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


def _store(db: Path) -> None:
    """Readers 1..READERS and the benchmark's issue, frozen with STORIES stories."""
    harness.make_store(db, READERS)
    Store = harness.product_module("newsletter.store.database", "newsletter.store").Store
    store = Store(f"sqlite:///{db}")
    stories = [{"url": f"https://outlet.example/story/{n}", "title": f"الخبر {n}", "summary": "", "source": "وكالة"}
               for n in range(1, STORIES + 1)]
    store.save_issue(harness.ISSUE_DATE, "موضوع", "", "<p>NLLINK01SLOT</p>", "NLLINK01SLOT", stories)
    store.close()


def _start(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, cwd=harness.WORK_DIR, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    harness.wait_for_port(port, proc, timeout=30)
    return proc


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(wrk: str, url: str, script: Path, connections: int, seconds: int) -> dict:
    result = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                            capture_output=True, text=True, timeout=seconds + 60)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", result.stdout)
    latency = {f"p{m.group(1)}_ms": float(m.group(2)) * _UNITS[m.group(3)] for m in _LATENCY.finditer(result.stdout)}
    return {"rate": float(rate.group(1)) if rate else 0.0, "requests": int(total.group(1)) if total else 0,
            "errors": errors.group(0) if errors else "", **latency}


def _count_with_sigterm(port: int, proc: subprocess.Popen, paths: list[str]) -> int:
    """Send COUNTED_CLICKS clicks over 8 connections, SIGTERM the server halfway; how many got their 302."""
    import httpx

    redirected = 0
    lock = threading.Lock()
    sent = iter(range(COUNTED_CLICKS))

    def client() -> None:
        nonlocal redirected
        with httpx.Client(base_url=f"http://{harness.HOST}:{port}", timeout=10, headers={"User-Agent": AGENT}) as c:
            for n in sent:
                try:
                    status = c.get(paths[n % len(paths)]).status_code
                except httpx.HTTPError:
                    continue
                with lock:
                    redirected += status == 302
                    if n == COUNTED_CLICKS // 2:
                        proc.send_signal(signal.SIGTERM)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    proc.wait(timeout=30)
    return redirected


def run_clicks() -> dict:
    wrk = ensure_wrk()
    work = harness.WORK_DIR / "clicks"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "clicks.sqlite3"
    _store(db)
    paths = _paths()
    # Each connection waits this long before its next request; ~1 ms of answer comes on top.
    burst, rate = _script(work, paths, None), _script(work, paths, RATE_CONNECTIONS * 1000 / RATE - 1)
    ours_port, base_port = harness.free_port(), harness.free_port()
    env = {**harness.newsletter_env(db, port=25), "NEWSLETTER_BASE_URL": f"http://{harness.HOST}:{ours_port}"}
    ours_cmd = [sys.executable, "-m", "newsletter", "serve", "--port", str(ours_port)]
    base_cmd = [sys.executable, "-m", "uvicorn", "benchmarks.redirect_baseline:app", "--port", str(base_port),
                "--host", harness.HOST, "--no-proxy-headers", "--no-server-header", "--log-level", "info"]
    base_env = {**env, "PYTHONPATH": str(harness.PROJECT)}
    problems: list[str] = []
    runs: dict[str, list[dict]] = {"ours": [], "baseline": []}
    ours = _start(ours_cmd, env, ours_port, work / "serve.log")
    base = _start(base_cmd, base_env, base_port, work / "baseline.log")
    try:
        for _ in range(ROUNDS):
            runs["ours"].append(_wrk(wrk, f"http://{harness.HOST}:{ours_port}", burst, CONNECTIONS, SECONDS))
            runs["baseline"].append(_wrk(wrk, f"http://{harness.HOST}:{base_port}", burst, CONNECTIONS, SECONDS))
        paced = _wrk(wrk, f"http://{harness.HOST}:{ours_port}", rate, RATE_CONNECTIONS, SECONDS)
        paced_base = _wrk(wrk, f"http://{harness.HOST}:{base_port}", rate, RATE_CONNECTIONS, SECONDS)
    finally:
        _stop(base)
        served_ok = _stop(ours) in (0, -signal.SIGTERM)
    if not served_ok:
        problems.append(f"newsletter serve did not stop cleanly: see {work / 'serve.log'}")
    for name, rows in runs.items():
        problems += [f"{name}: {row['errors']}" for row in rows if row["errors"]]
    Store = harness.product_module("newsletter.store.database", "newsletter.store").Store

    def counted() -> int:
        store = Store(f"sqlite:///{db}")
        try:
            whole = store.get_issue(harness.ISSUE_DATE)
            totals = store.clicks.by_story(whole.id).get(0)
            return (totals.clicks + totals.machine_clicks) if totals else 0
        finally:
            store.close()

    before = counted()
    ours = _start(ours_cmd, env, ours_port, work / "serve-sigterm.log")
    redirected = _count_with_sigterm(ours_port, ours, paths)
    after = counted()
    if after - before != redirected:
        problems.append(f"SIGTERM mid-run: {redirected} clicks redirected, {after - before} counted")
    ours_rate = statistics.median(r["rate"] for r in runs["ours"])
    base_rate = statistics.median(r["rate"] for r in runs["baseline"])
    return {
        "status": "failed" if problems else "ok", "problems": problems, "rounds": ROUNDS, "seconds": SECONDS,
        "connections": CONNECTIONS, "ours_rate": ours_rate, "baseline_rate": base_rate,
        "ratio": ours_rate / base_rate if base_rate else None, "runs": runs,
        "paced_rate_target": RATE, "paced": paced, "paced_baseline": paced_base,
        "counted_clicks": after - before, "redirected_clicks": redirected, "sent_clicks": COUNTED_CLICKS,
        "burst_clicks_counted": before,
    }
