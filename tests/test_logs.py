"""NEWSLETTER_LOG_FORMAT=json: every line a command or `serve` logs is one JSON object, for log shippers."""

from __future__ import annotations

import json

from newsletter.store.database import Status
from newsletter.tokens import Tokens

from .conftest import SAMPLE_DATE, ServeProcess, run_cli


def json_lines(text: str) -> list[dict]:
    """Every non-empty line as a JSON object; fails on the first line that is not one."""
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON object: {line!r}") from None
    return records


def test_a_send_logs_one_json_object_a_line_ending_with_its_figures(env, store, smtp_server):
    for address in ("layla@example.com", "omar@example.org", "claire@example.fr"):
        store.add_subscriber(address, "")

    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env={**env, "NEWSLETTER_LOG_FORMAT": "json"})

    assert result.returncode == 0, result.stderr
    records = json_lines(result.stderr)
    assert records and all({"time", "level", "logger", "event"} <= record.keys() for record in records)
    finished = [r for r in records if r.get("issue") == SAMPLE_DATE.isoformat()]
    assert len(finished) == 1 and finished[0]["complete"] is True
    assert finished[0]["counts"] == {"sent": 3, "failed": 0, "refused": 0, "withdrawn": 0, "skipped": 0, "paused": 0,
                                     "active": 3, "left_since": 0}
    assert "Sent 3," in result.stdout, "what a person reads on stdout is unchanged"


def test_text_stays_the_default(env, store, smtp_server):
    store.add_subscriber("layla@example.com", "")

    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert result.returncode == 0 and " INFO send of 2017-05-09 complete: 1 sent" in result.stderr, result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_serve_logs_its_requests_as_json_with_tokens_left_out(env, store, settings):
    subscriber = store.request_subscription("logged@example.com")
    assert store.get_subscriber("logged@example.com").status == Status.pending.value
    token = Tokens(settings.secret_key).confirm_token(subscriber.id)
    serve = ServeProcess({**env, "NEWSLETTER_LOG_FORMAT": "json"})
    with serve as client:
        assert client.get(f"/confirm/{token}").status_code == 200
    logged = serve.stderr

    records = json_lines(logged)
    access = [r["event"] for r in records if r["logger"] == "uvicorn.access"]
    assert any('"GET /healthz HTTP/1.1" 200' in event for event in access), access
    assert any('"GET /confirm/<token> HTTP/1.1" 200' in event for event in access), access
    assert token not in logged
    assert any(r["logger"] == "uvicorn.error" and "Application startup complete" in r["event"] for r in records)
