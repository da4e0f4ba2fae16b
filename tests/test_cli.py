"""`newsletter select` and `newsletter render`: what an editor sees before the send."""

from __future__ import annotations

import json

from .conftest import SAMPLE_DATE, run_cli


def test_select_explains_the_choice_and_what_was_left_out(env):
    result = run_cli("select", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert result.returncode == 0, result.stderr
    chosen, left_out = result.stdout.split("Left out")
    assert chosen.index("كوبنهاغن") < chosen.index("كوريا الجنوبية")
    assert "4 outlet(s)" in chosen and "+ same event:" in chosen
    assert "shown: the report closest to the event's centre" in chosen
    assert "Lead: by coverage (the desk's leads of the last 90 days show no preference" in chosen
    assert "not international (section: رياضة)" in left_out
    assert "outside the 24-hour window" in left_out
    assert "over the limit of 6 stories" in left_out


def test_render_writes_html_text_and_json_in_story_order(env, tmp_path):
    out = tmp_path / "issue"
    result = run_cli("render", "--date", SAMPLE_DATE.isoformat(), "--out", str(out), env=env)

    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "issue.json").read_text(encoding="utf-8"))
    assert manifest["subject"] == "التحالف الدولي يجتمع في كوبنهاغن…", "the lead, cut after a phrase"
    assert manifest["preheader"]
    assert [set(s) for s in manifest["stories"]] == [{"url", "title", "summary", "source", "standing"}] * 6
    # Each story's standing (what the desk's leads are learned from): the lead is the best covered here.
    outlets = [s["standing"]["outlets"] for s in manifest["stories"]]
    assert outlets[0] == max(outlets) and all(n >= 1 for n in outlets)
    assert "كوبنهاغن" in manifest["stories"][0]["title"]
    html = (out / "issue.html").read_text(encoding="utf-8")
    text = (out / "issue.txt").read_text(encoding="utf-8")
    positions = [html.index(s["url"]) for s in manifest["stories"]]
    assert positions == sorted(positions)
    words = " ".join(text.replace("\u200f", "").split())  # titles wrap at 76; lines carry direction marks
    assert all(s["title"] in words for s in manifest["stories"])
    assert "KB" in result.stdout


def test_help_is_written_for_the_person_at_the_terminal(env):
    result = run_cli("send", "--help", env=env)
    assert result.returncode == 0
    assert "Exit codes" in result.stdout and "--date" in result.stdout


def test_paths_that_cannot_be_made_or_read_are_one_line_naming_them(env, tmp_path):
    """A folder that is a file, one that does not exist, a database that is some other file: the user's
    mistakes, each told in one line with the path, never as a bug's traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder, not a database", encoding="utf-8")
    cases = [
        (["render", "--date", SAMPLE_DATE.isoformat(), "--out", str(a_file / "issue")], env,
         f"{a_file / 'issue'}: Not a directory", 1),
        (["init", "--path", str(tmp_path / "no" / "such" / ".env")], env,
         f"{tmp_path / 'no' / 'such' / '.env'}: No such file or directory", 1),
        (["subscribers", "list"], {**env, "NEWSLETTER_DATABASE_URL": f"sqlite:///{a_file}"},
         "NEWSLETTER_DATABASE_URL: cannot open the database: file is not a database", 2),
    ]
    for command, command_env, words, code in cases:
        result = run_cli(*command, env=command_env)

        assert result.returncode == code, (command, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert words in line and "bug" not in line, line


def test_a_port_outside_the_range_is_a_usage_error(env):
    for command in (["serve", "--port", "70000"], ["preview", "--port", "0"]):
        result = run_cli(*command, env=env)

        assert result.returncode == 2 and "--port" in result.stderr, result.stderr


def test_dates_outside_the_issues_and_a_backwards_range_are_usage_errors(env):
    for command in (["select", "--date", "0001-01-01"], ["stats", "--from", "2017-05-10", "--to", "2017-05-01"]):
        result = run_cli(*command, env=env)

        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_render_of_a_sent_issue_says_it_writes_it_as_sent(env, store, smtp_server, tmp_path):
    store.add_subscriber("reader@example.com")
    assert run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env).returncode == 0

    result = run_cli("render", "--date", SAMPLE_DATE.isoformat(), "--out", str(tmp_path / "out"), env=env)

    assert result.returncode == 0 and "was sent (frozen): written as sent" in result.stderr, result.stderr
