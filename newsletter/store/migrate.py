"""The store's schema version: made at first use, checked at every start, upgraded on request.

Revisions live in newsletter/store/migrations/versions/ (Alembic). Every command
checks that the database is at SCHEMA_HEAD with one cheap query and refuses
to run on an older schema, naming the command that upgrades it. An empty
database is given the current schema at once. Both happen under a lock
(PostgreSQL advisory lock, a lock file beside a SQLite database), so
commands started together on a new database never race to create it.
Alembic itself is imported only to upgrade: it costs 0.4 s of start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select, text

from ..errors import SchemaError
from .schema import metadata

SCHEMA_HEAD = "0010"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number: the key of the PostgreSQL advisory lock held while the schema changes.
PG_SCHEMA_LOCK = 0x6E6C_6D69_6772_6174

alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))
FIRST_RELEASE_TABLES = {"subscribers", "issues", "issue_stories", "deliveries"}
UPGRADE_HINT = "back it up, then run `newsletter db upgrade`"


@contextlib.contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding the lock that serialises schema changes between processes."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_SCHEMA_LOCK})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_SCHEMA_LOCK})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        with engine.connect() as conn:
            yield conn
        return
    with open(f"{database}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def schema_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it holds no table of ours; "legacy" before migrations."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(select(alembic_version.c.version_num)).scalar()
    if tables & FIRST_RELEASE_TABLES:
        return "legacy"
    return None


def _create_current_schema(conn: Connection) -> None:
    metadata.create_all(conn)
    alembic_version.create(conn)
    conn.execute(alembic_version.insert().values(version_num=SCHEMA_HEAD))
    conn.commit()


def prepare_schema(engine: Engine) -> None:
    """At start-up: make the schema of an empty database; refuse one that is not at SCHEMA_HEAD."""
    with engine.connect() as conn:
        if schema_revision(conn) == SCHEMA_HEAD:
            return
    # Look again under the lock: another command may be making the schema right now (on SQLite each
    # CREATE TABLE commits by itself, so a half-made schema is visible from outside the lock).
    with schema_lock(engine) as conn:
        revision = schema_revision(conn)
        if revision is None:
            _create_current_schema(conn)
            return
    if revision != SCHEMA_HEAD:
        raise SchemaError(describe_mismatch(revision))


def describe_mismatch(revision: str | None) -> str:
    if revision == "legacy":
        return (f"the database was made by a version from before migrations; this version needs schema "
                f"{SCHEMA_HEAD}: {UPGRADE_HINT}")
    if revision is not None and revision > SCHEMA_HEAD:
        return (f"the database is at schema {revision}, newer than this version of the newsletter knows "
                f"({SCHEMA_HEAD}): run the newer version, or restore the backup taken before upgrading")
    return f"the database is at schema {revision}; this version needs {SCHEMA_HEAD}: {UPGRADE_HINT}"


def _legacy_revision(conn: Connection) -> str:
    """Where a database made before migrations stands: the first release, or anything later."""
    tables = set(inspect(conn).get_table_names())
    return "0002" if "send_runs" in tables else "0001"


def upgrade_schema(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to SCHEMA_HEAD, keeping its data; (revision before, revision after)."""
    from alembic import command
    from alembic.config import Config

    with schema_lock(engine) as conn:
        before = schema_revision(conn)
        if before == SCHEMA_HEAD:
            return before, before
        if before is None:
            _create_current_schema(conn)
            return None, SCHEMA_HEAD
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # SQLite changes a table by copying it and dropping the old one; with
            # foreign keys on, that drop would cascade into the delivery log.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            if before == "legacy":
                command.stamp(config, _legacy_revision(conn))
                conn.commit()
            command.upgrade(config, "head")
            conn.commit()
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        return before, schema_revision(conn) or ""
