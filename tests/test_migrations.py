"""Upgrades that migrate: databases made by earlier releases come to today's schema with their data.

The starting schemas in tests/data/ are what earlier releases really created (dumped from their
code on SQLite and PostgreSQL), not what our migrations think they created.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import UniqueConstraint, create_engine, func, select, text

from newsletter.store.migrate import MIGRATIONS_DIR, SCHEMA_HEAD
from newsletter.store.schema import deliveries, issues, metadata, subscribers
from newsletter.store.database import Store

from .conftest import PROJECT, SAMPLE_DATE, run_cli

DATA = PROJECT / "tests" / "data"
OLD_ISSUE = "2017-05-08"


def alembic_config(conn) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    return config


def schema_differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    return [d for d in differences if not _expected(d)]


def _expected(difference) -> bool:
    """Differences that are not ones: Alembic's own table, and a UNIQUE on the primary key's columns
    (deliveries' one_delivery_per_issue), which PostgreSQL folds into the key itself."""
    if not isinstance(difference, tuple):
        return False
    kind, thing = difference[0], difference[1]
    if kind == "remove_table":
        return thing.name == "alembic_version"
    if kind == "add_constraint" and isinstance(thing, UniqueConstraint):
        return {c.name for c in thing.columns} == {c.name for c in metadata.tables[thing.table.name].primary_key}
    return False


def load_old_schema(url: str, store_kind: str, release: str) -> None:
    """A database as `release` left it: its own DDL, and a reader, an issue and a delivery in it."""
    engine = create_engine(url)
    ddl = (DATA / f"schema-{release}.{store_kind}.sql").read_text(encoding="utf-8")
    now = dt.datetime(2017, 5, 8, 7, 0, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        if store_kind == "sqlite":
            for statement in filter(str.strip, ddl.split(";")):
                conn.exec_driver_sql(statement)
        else:
            conn.exec_driver_sql(ddl)
        conn.execute(text("INSERT INTO subscribers (email, name, status, created_at, updated_at) VALUES "
                          "('old@example.com', 'قارئ قديم', 'active', :now, :now), "
                          "('gone@example.com', '', 'unsubscribed', :now, :now)"), {"now": now})
        conn.execute(text("INSERT INTO issues (issue_date, subject, preheader, html, text, stories, created_at) "
                          "VALUES (:day, 'عدد الأمس', '', '<p>أمس</p>', 'أمس', '[]', :now)"),
                     {"day": OLD_ISSUE, "now": now})
        conn.execute(text("INSERT INTO deliveries (issue_id, subscriber_id, outcome, run_id, attempts, reply, "
                          "updated_at) SELECT i.id, s.id, 'sent', 'old-run', 1, '250 OK', :now "
                          "FROM issues i, subscribers s WHERE s.email = 'old@example.com'"), {"now": now})
    engine.dispose()


def test_the_code_knows_the_newest_migration():
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == SCHEMA_HEAD


def test_a_new_database_gets_todays_schema_at_once(env, database_url):
    Store(database_url).close()
    assert schema_differences(database_url) == []
    assert run_cli("db", "status", env=env).stdout.startswith(f"Database schema: {SCHEMA_HEAD};")


def test_the_migrations_from_the_first_revision_build_the_same_schema(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "head")
        conn.commit()
    engine.dispose()
    assert schema_differences(database_url) == []


@pytest.mark.parametrize("release", ["first-release", "before-migrations"])
def test_an_old_database_is_refused_then_upgraded_with_its_data(env, database_url, store_kind, release, smtp_server):
    load_old_schema(database_url, store_kind, release)

    refused = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "newsletter db upgrade" in refused.stderr
    assert "Traceback" not in refused.stderr and smtp_server.handler.messages == []

    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to {SCHEMA_HEAD}" in upgraded.stdout
    assert schema_differences(database_url) == []
    assert run_cli("db", "upgrade", env=env).stdout.startswith("The database is already at schema")

    store = Store(database_url)
    try:
        old = store.get_subscriber("old@example.com")
        assert (old.name, old.status) == ("قارئ قديم", "active")
        assert store.get_subscriber("gone@example.com").status == "unsubscribed"
        assert store.get_issue(OLD_ISSUE).subject == "عدد الأمس"
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 1
    finally:
        store.close()

    status = run_cli("status", "--date", OLD_ISSUE, env=env)
    assert "delivered 1, pending 0" in status.stdout
    sent = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert sent.returncode == 0, sent.stderr
    assert smtp_server.handler.recipients() == ["old@example.com"]
    added = run_cli("subscribers", "add", "new@example.com", env=env)
    assert "Added" in added.stdout


@pytest.mark.sqlite_only
def test_sqlite_ids_are_never_reused_after_the_upgrade(env, database_url, store_kind):
    load_old_schema(database_url, store_kind, "first-release")
    assert run_cli("db", "upgrade", env=env).returncode == 0
    engine = create_engine(database_url)
    with engine.begin() as conn:
        assert "AUTOINCREMENT" in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'subscribers'").scalar()
        last = conn.execute(select(func.max(subscribers.c.id))).scalar_one()
        conn.execute(subscribers.delete().where(subscribers.c.id == last))
    engine.dispose()
    assert run_cli("subscribers", "add", "next@example.com", env=env).returncode == 0
    store = Store(database_url)
    assert store.get_subscriber("next@example.com").id > last
    store.close()


def test_a_schema_newer_than_the_code_is_refused(env, database_url):
    Store(database_url).close()
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    result = run_cli("subscribers", "list", env=env)
    assert result.returncode == 2 and "newer than this version" in result.stderr


def test_commands_started_together_on_an_empty_database_all_work(env, database_url):
    commands = [subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "add", f"r{i}@example.com"],
                                 env=env, cwd=PROJECT / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for i in range(6)]
    results = [(c.wait(timeout=120), c.stderr.read()) for c in commands]
    assert [code for code, _ in results] == [0] * 6, results
    store = Store(database_url)
    assert store.count_subscribers() == 6
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(issues)).scalar_one() == 0
    store.close()

