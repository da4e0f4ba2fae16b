"""Checks of this install: the secret key, the store (schema, clock, disk) and the feeds."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from ..config import Settings
from ..errors import ConfigError
from ..issue.feeds import read_feeds_async
from ..store.database import Store
from ..store.migrate import SCHEMA_HEAD, describe_mismatch, schema_revision
from ..store.schema import db_epoch_seconds
from .check import Check, failed, passed, skipped

# Heartbeats and leases are read on the database's clock, but issue dates, the edition time and
# the log's timestamps are this host's: half a minute apart already misdates a run near midnight.
MAX_CLOCK_SKEW_SECONDS = 30.0
# Room for a few days of delivery log, the WAL, and a VACUUM or backup copy of the file.
MIN_FREE_BYTES = 1024 ** 3


def check_secret_key(settings: Settings) -> Check:
    try:
        settings.require_secret_key(listening_publicly=True)
    except ConfigError as exc:
        return failed("secret key", str(exc).split(":", 1)[0].removeprefix("setting "),
                      "run `newsletter init` for a .env with a random key, or set NEWSLETTER_SECRET_KEY "
                      "from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return passed("secret key", f"NEWSLETTER_SECRET_KEY is set ({len(settings.secret_key.strip())} characters)")


def check_schema(store: Store) -> Check:
    def revision(engine: Engine) -> str | None:
        with engine.connect() as conn:
            return schema_revision(conn)

    try:
        current = store.run_on_database(revision)
    except ConfigError as exc:
        return failed("schema", str(exc), "check NEWSLETTER_DATABASE_URL and that the database server runs")
    if current is None:
        return passed("schema", f"the database is empty; the first command gives it schema {SCHEMA_HEAD}")
    if current != SCHEMA_HEAD:
        newer = current != "legacy" and current > SCHEMA_HEAD
        return failed("schema", describe_mismatch(current).split(":", 1)[0],
                      "run the newer version of the newsletter, or restore the backup taken before upgrading"
                      if newer else "back the database up, then run `newsletter db upgrade`")
    return passed("schema", f"the database is at schema {SCHEMA_HEAD}, the one this version needs")


def check_clock(store: Store, max_skew: float = MAX_CLOCK_SKEW_SECONDS) -> Check:
    def database_time(engine: Engine) -> tuple[float, float]:
        with engine.connect() as conn:
            before = time.time()
            value = float(conn.execute(select(db_epoch_seconds(engine))).scalar())
            return value, (before + time.time()) / 2

    try:
        theirs, ours = store.run_on_database(database_time)
    except ConfigError as exc:
        return failed("clock", str(exc), "check NEWSLETTER_DATABASE_URL and that the database server runs")
    skew = ours - theirs
    if abs(skew) > max_skew:
        return failed("clock", f"this host's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
                               f"the database's (more than {max_skew:.0f} s)",
                      "run NTP (chrony or systemd-timesyncd) on both machines")
    if store.engine.dialect.name == "sqlite":
        return passed("clock", f"SQLite reads this host's clock ({abs(skew):.1f} s apart)")
    return passed("clock", f"this host and the database server agree within {abs(skew):.1f} s")


def check_disk(settings: Settings, min_free: int = MIN_FREE_BYTES) -> Check:
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        return skipped("disk", f"the store is on a {url.get_backend_name()} server: watch its disk there")
    if url.database in (None, "", ":memory:"):
        return skipped("disk", "the SQLite database is in memory")
    database = Path(url.database)
    folder = next((p for p in (database.parent, *database.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    size = database.stat().st_size if database.exists() else 0
    # VACUUM and a backup each need a copy of the file, on top of the room for new days.
    needed = min_free + size
    text = f"{_size(free)} free beside {database} ({_size(size)})"
    if free < needed:
        return failed("disk", f"only {text}; a send, a compaction or a backup needs {_size(needed)}",
                      "free space on that disk, run `newsletter db compact`, or move the database "
                      "(NEWSLETTER_DATABASE_URL)")
    return passed("disk", text)


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def check_feeds(settings: Settings) -> list[Check]:
    """One line a feed: fetched and parsed as `send` would, each on its own so a line names its feed."""
    async def each() -> list:
        return await asyncio.gather(*(read_feeds_async([source], settings.feed_timeout, settings.feed_max_bytes,
                                                       settings.feed_outlets) for source in settings.feeds))

    checks = []
    for source, batch in zip(settings.feeds, asyncio.run(each()), strict=True):
        if batch.failures:
            checks.append(failed(f"feed {source}", batch.failures[0].reason,
                                 "fix the address in NEWSLETTER_FEEDS, or take the feed out"))
        else:
            checks.append(passed(f"feed {source}", f"{len(batch.stories)} item(s)"))
    return checks
