"""Plumbing shared by the benchmarks: postfix's smtp-sink, measured subprocesses, stores, machine facts.

Every client under test runs as its own process, started here and reaped with
os.wait4, so its wall time, CPU time and peak RSS are its own (not the harness's,
not the SMTP server's).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import importlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
TMP_DIR = RESULTS_DIR / "tmp"  # git-ignored: databases, captured message, logs
WORK_DIR = TMP_DIR  # this run's own folder under TMP_DIR, set by begin_run()

ISSUE_DATE = "2017-05-09"  # the day of the bundled sample feeds
FROM_ADDRESS = "morning@news.example"
BASE_URL = "https://news.example"
SECRET_KEY = "benchmark-secret-key-0123456789abcdef"
HOST = "127.0.0.1"

PACKAGES = [
    "arabic-morning-newsletter", "aiosmtplib", "aiosmtpd", "SQLAlchemy", "mjml-python", "premailer",
    "cssutils", "lxml", "Jinja2", "feedparser", "pydantic", "pydantic-settings", "itsdangerous", "typer", "rich",
]


# --- postfix tools ---------------------------------------------------------


def postfix_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_postfix() -> tuple[str, str]:
    """Paths of smtp-sink and smtp-source; installs postfix (as `make system-deps` does) when missing."""
    if not (postfix_tool("smtp-sink") and postfix_tool("smtp-source")):
        if os.geteuid() != 0:
            sys.exit("smtp-sink/smtp-source not found: install postfix (sudo apt-get install postfix) "
                     "or run `make system-deps` as root")
        print("installing postfix (for smtp-sink and smtp-source)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    sink, source = postfix_tool("smtp-sink"), postfix_tool("smtp-source")
    if not (sink and source):
        sys.exit("postfix is installed but smtp-sink/smtp-source were not found")
    return sink, source


def postfix_version() -> str:
    postconf = postfix_tool("postconf")
    if not postconf:
        return "unknown"
    try:
        out = subprocess.run([postconf, "-d", "mail_version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.split("=", 1)[-1].strip() or "unknown"


# --- sockets ---------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 10.0, host: str = HOST) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout} s")


# --- measured processes ----------------------------------------------------


@dataclass
class Measured:
    """One child process, reaped with wait4: its own wall time, CPU time and peak RSS."""

    cmd: list[str]
    wall: float
    user: float
    system: float
    maxrss_kb: int
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    machine_busy: float = 0.0  # CPU seconds used by everything on the machine during the run

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def other_cpu(self, *also_ours: float) -> float:
        """CPU seconds that neither this command nor `also_ours` (e.g. the SMTP server) used:
        other processes on the machine competing with the benchmark (plus the harness, ~0)."""
        return max(self.machine_busy - self.cpu - sum(also_ours), 0.0)

    @property
    def maxrss_mb(self) -> float:
        return self.maxrss_kb / 1024


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 3600, log_prefix: Path | None = None,
                 on_start=None, stdin: Path | None = None) -> Measured:
    """Run `cmd` to completion through benchmarks/launch.py, which reports the command's own
    wall time, CPU time and peak RSS (see there why not wait4 from here). stdout/stderr go to
    files, so no pipe can fill up and stall the command. `on_start(pid)` runs in a thread with
    the command's pid (e.g. to sample /proc while it runs). `stdin`: a file the command reads
    (else it reads nothing).
    """
    log_prefix = log_prefix or WORK_DIR / "run"
    out_path, err_path = Path(f"{log_prefix}.stdout"), Path(f"{log_prefix}.stderr")
    report_path = Path(f"{log_prefix}.rusage.json")
    report_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", "-I", str(BENCH_DIR / "launch.py"), str(report_path)]
    busy_before = machine_busy_seconds()
    with open(out_path, "wb") as out, open(err_path, "wb") as err, open(stdin or os.devnull, "rb") as given:
        # A session of its own, so a timeout can stop the launcher and the command together.
        proc = subprocess.Popen(launcher + [str(c) for c in cmd], env=env, cwd=cwd, stdout=out, stderr=err,
                                stdin=given, start_new_session=True)
        watcher = None
        if on_start is not None:
            pid = _child_of(proc.pid)
            if pid:
                watcher = threading.Thread(target=on_start, args=(pid,), daemon=True)
                watcher.start()
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        busy = machine_busy_seconds() - busy_before
        if watcher is not None:
            watcher.join(timeout=5)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        report = {"wall": float("nan"), "user": 0.0, "system": 0.0, "maxrss_kb": 0, "exit_code": proc.returncode}
    return Measured(
        cmd=[str(c) for c in cmd], wall=report["wall"], user=report["user"], system=report["system"],
        maxrss_kb=report["maxrss_kb"], exit_code=report["exit_code"],
        stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"),
        timed_out=timed_out, machine_busy=busy,
    )


def machine_busy_seconds() -> float:
    """CPU seconds all processors have spent busy since boot (/proc/stat), to spot a noisy machine."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _child_of(parent: int, timeout: float = 5.0) -> int | None:
    """The pid of the (single) child the launcher forked."""
    deadline = time.monotonic() + timeout
    children_file = Path(f"/proc/{parent}/task/{parent}/children")
    while time.monotonic() < deadline:
        try:
            pids = children_file.read_text().split()
        except OSError:
            pids = []
        if pids:
            return int(pids[0])
        time.sleep(0.005)
    return None


# --- the SMTP server: postfix's smtp-sink ----------------------------------


@dataclass
class SinkStats:
    messages: int
    sessions: int
    cpu: float  # the sink's own user + system seconds


class SmtpSink:
    """postfix's smtp-sink on loopback, keeping nothing, counting what it receives (-c).

    `-c` prints "sess=N quit=N mesg=N" each time a message ends ("." received),
    a QUIT is executed or a session ends; the last line is the total. The sink is
    single-threaded C and throws the data away, so it is the fastest real server
    there is on this machine.
    """

    def __init__(self, sink_binary: str, name: str) -> None:
        self.binary = sink_binary
        self.name = name
        self.port = free_port()
        self.counter_path = WORK_DIR / f"{name}.sink-counters"
        self.proc: subprocess.Popen | None = None
        self.stats: SinkStats | None = None

    def __enter__(self) -> SmtpSink:
        cmd = [self.binary, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root
        cmd += [f"{HOST}:{self.port}", "256"]
        self._out = open(self.counter_path, "wb")
        self._err = open(WORK_DIR / f"{self.name}.sink-stderr", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> SinkStats:
        if self.stats is not None:
            return self.stats
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._out.close()
        self._err.close()
        text = self.counter_path.read_text(errors="replace")
        counters = re.findall(r"sess=(\d+) quit=(\d+) mesg=(\d+)", text)
        sessions, _, messages = (int(x) for x in counters[-1]) if counters else (0, 0, 0)
        self.stats = SinkStats(messages=messages, sessions=sessions, cpu=usage.ru_utime + usage.ru_stime)
        return self.stats


# --- the code under test: a snapshot -----------------------------------------

def product_module(name: str, before_layers: str):
    """A module of the code under test, by its name in newsletter's layer packages.

    `before_layers` is its name in revisions from before those packages (flat newsletter/),
    so that `--code REV` can still measure them.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return importlib.import_module(before_layers)


_lock_file = None


def begin_run(stamp: str) -> Path:
    """One benchmark run at a time on this checkout, each in a folder of its own.

    Two runs at once would each measure the other's load (and, sharing scratch
    files, could even count each other's messages), so a second run waits for
    the first. Scratch folders of earlier runs are removed; this run's stays
    after it ends (logs of every command, the code snapshot) until the next run.
    """
    global WORK_DIR, _lock_file
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    _lock_file = open(TMP_DIR / ".lock", "a+")
    try:
        fcntl.flock(_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _lock_file.seek(0)
        owner = _lock_file.read().strip() or "another process"
        print(f"· another benchmark run is in progress ({owner}); waiting for it to finish, so that "
              f"neither disturbs the other …", flush=True)
        fcntl.flock(_lock_file, fcntl.LOCK_EX)
    _lock_file.seek(0)
    _lock_file.truncate()
    _lock_file.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
    _lock_file.flush()
    for old in TMP_DIR.glob("run-*"):
        shutil.rmtree(old, ignore_errors=True)
    WORK_DIR = TMP_DIR / f"run-{stamp}-{os.getpid()}"
    WORK_DIR.mkdir(parents=True)
    return WORK_DIR


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def use_code_snapshot(rev: str | None = None) -> dict:
    """Copy the product (everything but benchmarks/) to results/tmp/code and import it from there.

    The whole run then measures one version of the code, even while people keep
    editing the working tree (with an editable install every child process would
    otherwise import whatever is on disk at that moment). `rev` snapshots a commit
    instead of the working tree, to compare versions. Children find the snapshot
    through PYTHONPATH, which comes before the editable install's finder.
    """
    code_dir = WORK_DIR / "code"
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir(parents=True)
    if rev:
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=PROJECT, capture_output=True)
        if archive.returncode != 0:
            sys.exit(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(code_dir, members=[m for m in tar.getmembers()
                                              if not m.name.startswith("benchmarks/")], filter="data")
        source = f"commit {_git('rev-parse', rev)}"
    else:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=PROJECT, capture_output=True)
        names = [n for n in listed.stdout.decode().split("\0") if n] if listed.returncode == 0 else []
        if not names:  # not a git checkout: the package and the templates are what matter
            names = [str(p.relative_to(PROJECT)) for d in ("newsletter", "templates") for p in (PROJECT / d).rglob("*")]
        for name in names:
            if name.startswith("benchmarks/"):
                continue
            src = PROJECT / name
            if src.is_file():
                dest = code_dir / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
        modified = _git("status", "--porcelain", "--", "newsletter", "templates", "pyproject.toml")
        source = f"working tree at commit {_git('rev-parse', 'HEAD')}" + (
            f", with local changes to: {', '.join(line.split(None, 1)[-1] for line in modified.splitlines())}"
            if modified else "")
    if not (code_dir / "newsletter" / "__init__.py").exists():
        sys.exit(f"no newsletter package in the snapshot of {rev or 'the working tree'}")
    if "newsletter" in sys.modules:
        raise RuntimeError("use_code_snapshot must run before anything imports newsletter")
    sys.path.insert(0, str(code_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_dir), os.environ.get("PYTHONPATH")]))
    return {"source": source, "snapshot": str(code_dir.relative_to(PROJECT)),
            "newsletter_sha256_16": _digest(code_dir / "newsletter"),
            "templates_sha256_16": _digest(code_dir / "templates") if (code_dir / "templates").exists() else None}


# --- stores and settings ---------------------------------------------------


def subscriber_rows(start: int, stop: int) -> list[tuple[str, str]]:
    return [(f"reader{i}@example.com", "") for i in range(start, stop)]


def make_store(where: Path | str, n: int, chunk: int = 50_000) -> float:
    """A fresh store with n active subscribers (Store.add_subscribers, as an import); returns seconds taken.

    `where` is a SQLite file (made anew) or the URL of an empty database.
    """
    Store = product_module("newsletter.store.database", "newsletter.store").Store

    if isinstance(where, Path):
        for leftover in where.parent.glob(where.name + "*"):
            leftover.unlink()
        where = f"sqlite:///{where}"
    started = time.perf_counter()
    store = Store(where)
    try:
        for first in range(1, n + 1, chunk):
            store.add_subscribers(subscriber_rows(first, min(first + chunk, n + 1)))
        # As `newsletter subscribers import` does (revisions before it had no such step: --code).
        getattr(store, "refresh_statistics", lambda: None)()
    finally:
        store.close()
    return time.perf_counter() - started


def newsletter_env(db: Path, port: int, connections: int = 10) -> dict[str, str]:
    """Environment for the real `newsletter` command (as tests/conftest.py's `env` fixture)."""
    values = {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{db}",
        "NEWSLETTER_SMTP_HOST": HOST,
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_TLS": "none",
        "NEWSLETTER_SMTP_CONNECTIONS": str(connections),
        "NEWSLETTER_FROM_ADDRESS": FROM_ADDRESS,
        # VERP on, as a newsroom that reads its bounces runs it: a signed return path per message.
        "NEWSLETTER_BOUNCE_ADDRESS": "bounces@" + FROM_ADDRESS.rpartition("@")[2],
        "NEWSLETTER_BASE_URL": BASE_URL,
        "NEWSLETTER_SECRET_KEY": SECRET_KEY,
    }
    return {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}, **values}


SEND_SUMMARY = re.compile(r"Sent (\d+), failed (\d+) .*?refused (\d+).*?; ([\d.]+) s, (\d+) msg/s")


def parse_send_summary(stdout: str) -> dict | None:
    """The numbers `newsletter send` prints: sent, failed, refused, send-phase seconds and msg/s."""
    match = SEND_SUMMARY.search(stdout)
    if not match:
        return None
    sent, failed, refused, seconds, rate = match.groups()
    return {"sent": int(sent), "failed": int(failed), "refused": int(refused),
            "send_seconds": float(seconds), "send_rate": float(rate)}


# --- the machine -----------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        mem_kb = 0
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "newsletter", "templates", "pyproject.toml", "constraints.txt"))
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "postfix": postfix_version(),
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
        "git_commit": commit,
        "git_product_code_modified": dirty,
    }


@dataclass
class Step:
    """Prints what the harness is doing, with the time it took."""

    title: str
    started: float = field(default_factory=time.perf_counter)

    def __enter__(self) -> Step:
        print(f"· {self.title} …", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        print(f"  done in {time.perf_counter() - self.started:.1f} s", flush=True)
