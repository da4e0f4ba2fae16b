"""`newsletter subscribers …`: add, import, export, list, remove, on a real SQLite file."""

from __future__ import annotations

import csv
import io

from newsletter.store.database import Status

from .conftest import run_cli

CSV_WITH_PROBLEMS = """email,name
layla@example.com,ليلى حداد
not-an-address,بلا عنوان
Omar@Example.ORG,عمر
omar@example.org,عمر مرة ثانية
,فارغ
user@مثال.مصر,قارئ
broken@@example.com,
"""


def test_import_reports_each_bad_row_by_line_and_imports_the_rest(env, tmp_path, store):
    path = tmp_path / "list.csv"
    path.write_text(CSV_WITH_PROBLEMS, encoding="utf-8")

    result = run_cli("subscribers", "import", str(path), env=env)

    assert result.returncode == 1, "an import with rejected rows is incomplete"
    assert "Imported 3, skipped 1 duplicate(s), rejected 3." in result.stdout
    rejected = [line for line in result.stderr.splitlines() if line.startswith("rejected")]
    assert [line.split(":")[1] for line in rejected] == ["3", "6", "8"]
    assert "Traceback" not in result.stderr
    assert store.get_subscriber("omar@example.org").name == "عمر", "case-insensitive: first row wins"
    assert store.get_subscriber("user@مثال.مصر") is not None, "IDN domains are allowed"
    assert store.count_subscribers(Status.active) == 3


def test_import_reads_the_columns_other_tools_export_and_names_a_header_it_cannot(env, tmp_path, store):
    mailchimp = tmp_path / "mailchimp.csv"
    mailchimp.write_text("Email Address,First Name,Last Name,MEMBER_RATING\n"
                         "layla@example.com,ليلى,حداد,2\nomar@example.org,عمر,,5\n", encoding="utf-8")
    # No header, and an address that holds the word "email": a row, not a header.
    plain = tmp_path / "plain.csv"
    plain.write_text("emailme@example.com,آن\nbob2@example.com,بوب\n", encoding="utf-8")

    assert run_cli("subscribers", "import", str(mailchimp), env=env).returncode == 0
    assert run_cli("subscribers", "import", str(plain), env=env).returncode == 0
    assert store.get_subscriber("layla@example.com").name == "ليلى حداد"
    assert store.get_subscriber("omar@example.org").name == "عمر"
    assert store.get_subscriber("emailme@example.com").name == "آن" and store.get_subscriber("bob2@example.com")

    unknown = tmp_path / "unknown.csv"
    unknown.write_text("Contact,Full Name\nsara@example.com,سارة\n", encoding="utf-8")
    result = run_cli("subscribers", "import", str(unknown), env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{unknown}:1: no column of addresses in the header (Contact, Full Name)" in line and "`email`" in line
    assert store.get_subscriber("sara@example.com") is None


def test_import_twice_adds_nobody_twice(env, tmp_path, store):
    path = tmp_path / "list.csv"
    path.write_text("a@example.com\nb@example.com,بشير\n", encoding="utf-8")
    assert run_cli("subscribers", "import", str(path), env=env).returncode == 0
    again = run_cli("subscribers", "import", str(path), env=env)
    assert again.returncode == 0
    assert "Imported 0, skipped 2 duplicate(s)" in again.stdout
    assert store.count_subscribers() == 2


def test_import_of_a_missing_file_is_one_line(env, tmp_path):
    result = run_cli("subscribers", "import", str(tmp_path / "nope.csv"), env=env)
    assert result.returncode == 1
    assert "nope.csv" in result.stderr and "Traceback" not in result.stderr


def test_add_remove_and_export_with_status_and_dates(env, store):
    assert run_cli("subscribers", "add", "Sara@Example.com", "--name", "سارة", env=env).returncode == 0
    assert run_cli("subscribers", "add", "nadia@example.com", env=env).returncode == 0
    duplicate = run_cli("subscribers", "add", "sara@example.com", env=env)
    assert "already on the list" in duplicate.stdout
    bad = run_cli("subscribers", "add", "nobody", env=env)
    assert bad.returncode == 1 and "invalid email address" in bad.stderr

    assert run_cli("subscribers", "remove", "nadia@example.com", env=env).returncode == 0
    export = run_cli("subscribers", "export", env=env)

    rows = list(csv.DictReader(io.StringIO(export.stdout)))
    assert [(r["email"], r["name"], r["status"]) for r in rows] == [
        ("sara@example.com", "سارة", "active"),
        ("nadia@example.com", "", "unsubscribed"),
    ]
    assert all(r["created_at"] and r["updated_at"] for r in rows)
    assert rows[1]["unsubscribed_at"] and not rows[0]["unsubscribed_at"]
    listing = run_cli("subscribers", "list", "--status", "active", env=env)
    assert "sara@example.com" in listing.stdout and "nadia@example.com" not in listing.stdout


def test_removed_subscriber_gets_no_issue(env, store, smtp_server):
    store.add_subscriber("stay@example.com")
    store.add_subscriber("leave@example.com")
    assert run_cli("subscribers", "remove", "leave@example.com", env=env).returncode == 0
    assert run_cli("send", "--date", "2017-05-09", env=env).returncode == 0
    assert smtp_server.handler.recipients() == ["stay@example.com"]
