"""Safe by default: nothing signs public links with a missing, example or short secret key."""

from __future__ import annotations

import os
import stat

import pytest

from newsletter.config import PROJECT_DIR

from .conftest import SAMPLE_DATE, run_cli


def without_key(env: dict[str, str], key: str | None) -> dict[str, str]:
    env = {k: v for k, v in env.items() if k != "NEWSLETTER_SECRET_KEY"}
    return env if key is None else {**env, "NEWSLETTER_SECRET_KEY": key}


@pytest.mark.parametrize("key", [None, "change-me", "short-but-random-Xy7"], ids=["missing", "example", "short"])
@pytest.mark.parametrize("command", [
    ("send", "--date", SAMPLE_DATE.isoformat()),
    ("send", "--date", SAMPLE_DATE.isoformat(), "--test", "editor@example.com"),
    ("confirmations",),
    ("serve", "--port", "1"),
], ids=["send", "send-test", "confirmations", "serve"])
def test_commands_that_send_or_serve_refuse_a_weak_key_for_a_public_site(env, store, smtp_server, key, command):
    store.add_subscriber("reader@example.com")
    result = run_cli(*command, env=without_key(env, key))

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NEWSLETTER_SECRET_KEY" in lines[0] and "newsletter init" in lines[0]
    assert "Traceback" not in result.stderr
    assert smtp_server.handler.messages == []


def test_a_local_site_needs_no_key(env, store, smtp_server):
    store.add_subscriber("reader@example.com")
    local = {**without_key(env, None), "NEWSLETTER_BASE_URL": "http://127.0.0.1:8000"}
    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=local)
    assert result.returncode == 0, result.stderr
    assert smtp_server.handler.recipients() == ["reader@example.com"]


def test_serving_beyond_this_machine_needs_a_key_even_for_a_local_base_url(env, store):
    local = {**without_key(env, None), "NEWSLETTER_BASE_URL": "http://127.0.0.1:8000"}
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "1", env=local)
    assert result.returncode == 2 and "NEWSLETTER_SECRET_KEY" in result.stderr


def test_the_example_settings_hold_no_usable_key():
    lines = (PROJECT_DIR / ".env.example").read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if line.startswith("NEWSLETTER_SECRET_KEY=")] == ["NEWSLETTER_SECRET_KEY="]


def test_init_writes_a_private_env_with_a_random_key_that_send_accepts(env, store, smtp_server, tmp_path):
    folder = tmp_path / "install"
    folder.mkdir()
    bare = without_key(env, None)

    first = run_cli("init", env=bare, cwd=folder)
    assert first.returncode == 0, first.stderr
    written = (folder / ".env").read_text(encoding="utf-8")
    key = next(line.split("=", 1)[1] for line in written.splitlines() if line.startswith("NEWSLETTER_SECRET_KEY="))
    assert len(key) >= 32
    assert "NEWSLETTER_SMTP_HOST=" in written, "the rest of .env.example comes along, comments and all"
    assert stat.S_IMODE(os.stat(folder / ".env").st_mode) == 0o600

    again = run_cli("init", env=bare, cwd=folder)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (folder / ".env").read_text(encoding="utf-8") == written, "an existing .env is never replaced silently"
    other = tmp_path / "other.env"
    other.write_text("NEWSLETTER_SECRET_KEY=old\n", encoding="utf-8")
    other.chmod(0o644)
    assert run_cli("init", "--path", str(other), "--force", env=bare, cwd=folder).returncode == 0
    assert key not in other.read_text(encoding="utf-8"), "every install gets its own key"
    assert stat.S_IMODE(os.stat(other).st_mode) == 0o600, "a replaced file is made private too"

    store.add_subscriber("reader@example.com")
    # Settings from the environment win over .env; the key comes from .env only.
    sent = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=bare, cwd=folder)
    assert sent.returncode == 0, sent.stderr
    assert smtp_server.handler.recipients() == ["reader@example.com"]
