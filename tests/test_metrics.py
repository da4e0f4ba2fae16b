"""Metrics: a real Prometheus (Debian's) scrapes `newsletter serve`; `send`'s file for node_exporter;
the alert rules of deploy/prometheus checked and unit-tested by promtool."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from newsletter.config import Settings
from .ports import free_port
from newsletter.tokens import Tokens
from newsletter.web.app import create_app

from .conftest import PROJECT, SAMPLE_DATE, LiveApp, run_cli
from .listening import wait_listening

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
RULES_DIR = PROJECT / "deploy" / "prometheus"
TOKEN = "metrics-token-for-tests-0123456789"
POSTMARK_SECRET = "postmark-webhook-secret-0123456789"
MISSING = "Debian's prometheus package is missing: `make system-deps` installs it"


class Prometheus:
    """Debian's Prometheus in the foreground, scraping one target every second; stopped with its process group."""

    def __init__(self, directory: Path, target: str, token_file: Path) -> None:
        assert PROMETHEUS.exists(), MISSING
        self.port = free_port()
        directory.mkdir()
        config = directory / "prometheus.yml"
        config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: newsletter
    authorization:
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
""")
        self.log = directory / "prometheus.log"
        self.process: subprocess.Popen | None = None
        self.command = [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def __enter__(self) -> Prometheus:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(self.port, "prometheus", self.log.read_text, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def query(self, expression: str) -> list[dict]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expression}, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def values(self, expression: str) -> dict[str, float]:
        """{the one label's value of an aggregate (`sum by (kind)`), else "": the value} of an instant query."""
        return {next(iter(r["metric"].values())) if len(r["metric"]) == 1 else "": float(r["value"][1])
                for r in self.query(expression)}

    def wait_for(self, expression: str, expected: float, timeout: float = 15) -> None:
        """Wait until the query's single value is `expected` (Prometheus scrapes every second)."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            result = self.query(expression)
            seen = [float(r["value"][1]) for r in result]
            if seen == [expected]:
                return
            time.sleep(0.3)
        targets = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5).json()
        raise AssertionError(f"{expression}: {seen}, expected {expected}; targets: {targets}; "
                             f"log: {self.log.read_text()}")


@pytest.fixture
def metrics_settings(settings):
    return settings.model_copy(update={"metrics_token": TOKEN, "postmark_webhook_secret": POSTMARK_SECRET,
                                       "signup_rate_limit": 1, "web_db_wait_seconds": 0.3})


def test_prometheus_scrapes_serve_and_reads_what_readers_and_relays_did(metrics_settings, store, tmp_path):
    settings = metrics_settings
    tokens = Tokens(settings.secret_key)
    store.save_issue("2026-12-06", "عنوان", "", "<p>x</p>", "x",
                     [{"url": "https://outlet.example/1", "title": "خبر"}])
    store.add_subscriber("reader@example.com")
    store.add_subscriber("second@example.com")
    reader_id = store.get_subscriber("reader@example.com").id
    second_id = store.get_subscriber("second@example.com").id
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    # The app opens its own store, waiting NEWSLETTER_WEB_DB_WAIT_SECONDS (0.3 s) for a lock.
    with LiveApp(create_app(settings)) as site, Prometheus(tmp_path / "prometheus", f"127.0.0.1:{site.port}",
                                                           token_file) as prometheus:
        prometheus.wait_for('up{job="newsletter"}', 1)
        with httpx.Client(base_url=site.url, timeout=10) as client:
            assert client.post("/subscribe", data={"email": "new@example.com"}).status_code == 200
            assert client.post("/subscribe", data={"email": "other@example.com"}).status_code == 429
            pending = store.get_subscriber("new@example.com")
            assert client.post(f"/confirm/{tokens.confirm_token(pending.id)}").status_code == 200
            assert client.post(f"/unsubscribe/{tokens.unsubscribe_token(reader_id)}").status_code == 200
            followed = client.get(f"/c/{tokens.click_token('20261206', 1, reader_id)}")
            assert followed.status_code == 302 and followed.headers["location"] == "https://outlet.example/1"
            assert client.get(f"/c/{tokens.click_token('20261206', 1, reader_id)}x").status_code == 404
            assert client.get("/no-such-page").status_code == 404
            for record_type, kind in (("Bounce", "HardBounce"), ("Bounce", "SoftBounce"), ("SpamComplaint", "")):
                payload = {"RecordType": record_type, "Type": kind, "ID": f"{record_type}{kind}",
                           "Email": "reader@example.com"}
                assert client.post("/webhooks/postmark", json=payload, auth=("postmark", POSTMARK_SECRET)
                                   ).status_code == 200
            # A send (here: a held SQLite write lock) outlasts the request's wait: 503, counted, and the wait seen.
            database = settings.database_url.removeprefix("sqlite:///")
            holder = sqlite3.connect(database, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                busy = client.post(f"/unsubscribe/{tokens.unsubscribe_token(second_id)}")
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert busy.status_code == 503, busy.text

        prometheus.wait_for("newsletter_store_unavailable_total", 1)
        prometheus.wait_for('newsletter_http_responses_total{code="5xx"}', 1)  # counted as the answer starts
        assert prometheus.values("newsletter_signups_total") == {"": 1}
        assert prometheus.values("newsletter_signups_rate_limited_total") == {"": 1}
        assert prometheus.values("newsletter_confirmations_total") == {"": 1}
        assert prometheus.values("newsletter_unsubscribes_total") == {"": 1}
        assert prometheus.values("sum by (outcome) (newsletter_click_redirects_total)") == {
            "redirected": 1, "invalid": 1}
        assert prometheus.values("sum by (kind) (newsletter_bounces_total)") == {"hard": 1, "soft": 1, "blocked": 0}
        assert prometheus.values("newsletter_complaints_total") == {"": 1}
        classes = prometheus.values("sum by (code) (newsletter_http_responses_total)")
        assert classes["3xx"] == 1 and classes["4xx"] == 2 + 1 and classes["5xx"] == 1, classes  # 404 ×2, 429
        assert classes["2xx"] >= 6, classes  # the pages, the webhooks, and Prometheus's own scrapes
        # The statement that waited for the lock took at least the 0.3 s wait (others are far quicker,
        # unless the machine is very busy).
        waited = prometheus.values('sum(newsletter_store_statement_seconds_count)'
                                   ' - sum(newsletter_store_statement_seconds_bucket{le="0.25"})')
        assert waited[""] >= 1, waited
        assert prometheus.values("sum(newsletter_store_statement_seconds_count)")[""] >= 5


def test_metrics_answer_only_the_token(metrics_settings, store):
    with LiveApp(create_app(metrics_settings)) as site, httpx.Client(base_url=site.url, timeout=10) as client:
        refused = [client.get("/metrics"),
                   client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789-abcdefghij"}),
                   client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}),
                   client.get("/metrics", headers={"Authorization": TOKEN}),
                   client.get("/metrics", params={"token": TOKEN})]
        for response in refused:
            assert response.status_code == 401, response.status_code
            assert response.headers["www-authenticate"] == "Bearer"
            assert "newsletter_" not in response.text and "process_" not in response.text
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200 and allowed.headers["content-type"].startswith("text/plain")
        assert "newsletter_signups_total 0.0" in allowed.text
        checked = subprocess.run([PROMTOOL, "check", "metrics"], input=allowed.content, capture_output=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr  # the format, and the naming lint
    without_token = metrics_settings.model_copy(update={"metrics_token": ""})
    with LiveApp(create_app(without_token)) as site:
        off = httpx.get(f"{site.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert off.status_code == 404 and "newsletter_" not in off.text


def test_serve_with_several_workers_adds_up_every_workers_figures(env, tmp_path):
    shared = tmp_path / "multiproc"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"left by an earlier run")  # unreadable: must be cleared at start
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port), "--workers", "2"],
        env={**env, "NEWSLETTER_METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(shared)},
        cwd=PROJECT / "tests", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_listening(port, "serve", lambda: "", server)
        url = f"http://127.0.0.1:{port}"
        sent = 0
        # A new connection each time: the kernel spreads them over the workers, until both have some
        # (a worker that has answered nothing yet may have no file at all: two files are needed).
        while sent < 10 or len(counts := _each_workers_404s(shared, tmp_path)) < 2 or min(counts) == 0:
            assert sent < 200, f"one worker answered everything: {_each_workers_404s(shared, tmp_path)}"
            assert httpx.get(f"{url}/no-such-page", timeout=10).status_code == 404
            sent += 1
        scrapes = [_samples(httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                      timeout=10).text) for _ in range(6)]
        each = _each_workers_404s(shared, tmp_path)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert len(each) == 2 and min(each) > 0 and sum(each) == sent, (each, output)
    assert [s['newsletter_http_responses_total{code="4xx"}'] for s in scrapes] == [sent] * 6, output
    assert "Traceback" not in output, output


def test_a_short_token_or_a_file_the_collector_would_skip_is_refused_in_one_line(settings):
    with pytest.raises(ValidationError, match="at least 16 are needed"):
        Settings(_env_file=None, metrics_token="short")
    with pytest.raises(ValidationError, match="does not end in .prom, and node_exporter's textfile collector"):
        Settings(_env_file=None, metrics_file="/var/lib/node_exporter/newsletter.txt")
    assert Settings(_env_file=None, metrics_file="").metrics_file is None


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    assert PROMTOOL.exists(), MISSING
    checked = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=RULES_DIR, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=RULES_DIR, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_send_writes_its_figures_for_node_exporter(env, store, tmp_path, smtp_server):
    for n in range(3):
        store.add_subscriber(f"reader{n}@example.com")
    directory = tmp_path / "textfile_collector"
    directory.mkdir()
    target = directory / "newsletter.prom"
    before = time.time()
    sent = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env={**env, "NEWSLETTER_METRICS_FILE": str(target)})
    assert sent.returncode == 0, sent.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["newsletter.prom"], "no temporary file left"
    assert target.stat().st_mode & 0o777 == 0o644, "node_exporter, another user, reads it"
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=target.read_bytes(), capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    values = _samples(target.read_text())
    midnight = dt.datetime.combine(SAMPLE_DATE, dt.time(), tzinfo=dt.timezone.utc).timestamp()
    assert values["newsletter_send_issue_date_seconds"] == midnight
    assert before <= values["newsletter_send_finished_timestamp_seconds"] <= time.time()
    assert (values["newsletter_send_delivered"], values["newsletter_send_failed"], values["newsletter_send_refused"],
            values["newsletter_send_issue_delivered"]) == (3, 0, 0, 3)
    assert 0 < values["newsletter_send_duration_seconds"] < 60

    # A second run sends to nobody new: this run's figures, the issue's total kept.
    again = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env={**env, "NEWSLETTER_METRICS_FILE": str(target)})
    assert again.returncode == 0, again.stderr
    values = _samples(target.read_text())
    assert (values["newsletter_send_delivered"], values["newsletter_send_issue_delivered"]) == (0, 3)


def _dsn(recipients: list[tuple[str, str]]) -> bytes:
    """A delivery status notification naming (address, status) failures."""
    blocks = "\n".join(f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: {status}\n"
                       f"Diagnostic-Code: smtp; {status[:1]}50 {status} refused\n" for address, status in recipients)
    return ("From: MAILER-DAEMON@relay.example\nTo: morning@news.example\nMessage-ID: <dsn@relay.example>\n"
            "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            "--b\nContent-Type: text/plain\n\nThe mail system: delivery failed\n\n"
            "--b\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; relay.example\n\n{blocks}\n--b--\n").encode()


def test_bounces_read_from_mail_add_up_in_their_own_textfile(env, store, tmp_path):
    for address in ("gone@example.com", "full@example.org", "moved@example.net"):
        store.add_subscriber(address)
    directory = tmp_path / "textfile_collector"
    directory.mkdir()
    bounce_env = {**env, "NEWSLETTER_METRICS_FILE": str(directory / "newsletter.prom")}
    first, second = tmp_path / "first.eml", tmp_path / "second.eml"
    first.write_bytes(_dsn([("gone@example.com", "5.1.1"), ("full@example.org", "4.2.2")]))
    second.write_bytes(_dsn([("moved@example.net", "5.1.1")]))
    for report in (first, second):
        result = run_cli("bounces", str(report), env=bounce_env)
        assert result.returncode == 0, result.stderr
    target = directory / "newsletter-bounces.prom"
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=target.read_bytes(), capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    values = _samples(target.read_text())
    assert {kind: values[f'newsletter_bounces_total{{kind="{kind}"}}'] for kind in ("hard", "soft", "blocked")} \
        == {"hard": 2, "soft": 1, "blocked": 0}, "the second run adds to the first"
    assert values["newsletter_complaints_total"] == 0
    assert sorted(p.name for p in directory.glob("*.prom")) == ["newsletter-bounces.prom"], "send has not run"


def test_bounce_runs_at_once_lose_no_count(tmp_path):
    """Postfix pipes reports as they come: runs that overlap each add theirs."""
    target = tmp_path / "newsletter-bounces.prom"
    adding = "import sys; from pathlib import Path; from newsletter.metrics import add_bounces; " \
             "[add_bounces(Path(sys.argv[1]), {'hard': 1, 'complaint': 1}) for _ in range(20)]"
    runs = [subprocess.Popen([sys.executable, "-c", adding, str(target)], cwd=PROJECT) for _ in range(4)]
    assert [run.wait(timeout=60) for run in runs] == [0] * 4
    values = _samples(target.read_text())
    assert (values['newsletter_bounces_total{kind="hard"}'], values["newsletter_complaints_total"]) == (80, 80)


WRITER = """
import sys
from pathlib import Path
from newsletter.metrics import write_textfile
from tests.test_metrics import torture_registry

path, gauges = Path(sys.argv[1]), int(sys.argv[2])
registries = [torture_registry(gauges, value) for value in (1, 2)]
print("ready", flush=True)
turn = 0
while True:
    write_textfile(path, registries[turn % 2])
    turn += 1
"""


def torture_registry(gauges: int, value: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    for n in range(gauges):
        Gauge(f"newsletter_test_{n}", "A figure of the torture test.", registry=registry).set(value)
    return registry


def test_the_textfile_is_never_seen_half_written_even_when_the_writer_is_killed(tmp_path):
    """A writer replaces a large file over and over while it is read, then is killed mid-write."""
    gauges = 3000  # about 200 KB: many write() calls a time
    versions = {generate_latest(torture_registry(gauges, value)) for value in (1, 2)}
    target = tmp_path / "newsletter.prom"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(gauges)], stdout=subprocess.PIPE,
                              cwd=PROJECT, start_new_session=True)
    try:
        assert writer.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 20
        while not target.exists():
            assert time.monotonic() < deadline and writer.poll() is None, "the writer wrote nothing"
            time.sleep(0.005)
        seen, reads, end = set(), 0, time.monotonic() + 1.5
        while time.monotonic() < end:
            content = target.read_bytes()
            assert content in versions, f"read {len(content)} bytes, a file cut short or mixed, after {reads} reads"
            seen.add(content)
            reads += 1
        assert seen == versions, f"both versions should have been read while they were replaced ({reads} reads)"
    finally:
        os.killpg(writer.pid, signal.SIGKILL)  # somewhere in a write: it spends nearly all its time writing
        writer.wait()
    assert target.read_bytes() in versions, "the file the killed writer left is whole"
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=target.read_bytes(), capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _samples(text: str) -> dict[str, float]:
    """{name, with its labels if any: value} of a text exposition."""
    return {s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" if s.labels else ""):
            s.value for family in text_string_to_metric_families(text) for s in family.samples}


def _each_workers_404s(shared: Path, tmp_path: Path) -> list[float]:
    """The 4xx count of each worker's own file (each read alone, through a directory of its own)."""
    counts = []
    for file in sorted(shared.glob("counter_*.db")):
        alone = tmp_path / f"alone-{file.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copyfile(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        figures = _samples(generate_latest(registry).decode())
        counts.append(figures.get('newsletter_http_responses_total{code="4xx"}', 0))
    return counts
