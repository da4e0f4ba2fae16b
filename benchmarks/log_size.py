"""Bytes the delivery log costs per reader per issue, on SQLite and PostgreSQL, before and after folding.

    .venv/bin/python -m benchmarks.log_size [-n 1000000]

Makes N readers and one issue sent to all of them (the rows `newsletter send` leaves: outcome
sent, reply 250 OK, a run id), measures the delivery log's table and indexes, folds the issue
(`newsletter db compact`) and measures what is left. PostgreSQL runs in a throw-away cluster
(tests/postgres.py). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from newsletter.store.database import Store

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)


def fill(store: Store, n: int) -> int:
    """n readers, one issue, one `sent` row per reader; the issue's id."""
    chunk = 50_000
    for first in range(0, n, chunk):
        store.add_subscribers([(f"reader{i:07d}@example.com", "") for i in range(first, min(first + chunk, n))])
    issue = store.save_issue("2026-08-01", "عدد قديم", "", "<p></p>", "", [])
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO deliveries (issue_id, subscriber_id, outcome, run_id, attempts, reply, "
                          "updated_at) SELECT :issue, id, 'sent', :run, 1, '250 OK', :now FROM subscribers"),
                     {"issue": issue.id, "run": "0" * 32, "now": NOW})
    return issue.id


def sqlite_bytes(store: Store, tables: tuple[str, ...]) -> int:
    """Pages used by the tables and their indexes (dbstat), after a checkpoint."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        names = ", ".join(f"'{t}'" for t in tables)
        indexes = [r[0] for r in conn.exec_driver_sql(
            f"SELECT name FROM sqlite_master WHERE tbl_name IN ({names}) AND type = 'index'")]
        objects = ", ".join(f"'{o}'" for o in (*tables, *indexes))
        return conn.exec_driver_sql(f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({objects})").scalar()


def postgres_bytes(store: Store, tables: tuple[str, ...]) -> int:
    with store.engine.begin() as conn:

        return sum(conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar() for t in tables)


def measure(kind: str, url: str, n: int) -> dict:
    store = Store(url)
    started = time.perf_counter()
    issue_id = fill(store, n)
    size = sqlite_bytes if kind == "sqlite" else postgres_bytes
    log_bytes = size(store, ("deliveries",))
    fold_started = time.perf_counter()
    removed = store.log.fold(issue_id)
    fold_seconds = time.perf_counter() - fold_started
    if kind == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM FULL deliveries")
    else:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
    totals_bytes = size(store, ("delivery_totals",))
    after_bytes = size(store, ("deliveries",))
    store.close()
    assert removed == n
    return {"kind": kind, "log": log_bytes, "per_row": log_bytes / n, "fold_s": fold_seconds,
            "after": after_bytes, "totals": totals_bytes, "total_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--readers", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.postgres import PostgresCluster

    results = []
    with tempfile.TemporaryDirectory() as folder:
        results.append(measure("sqlite", f"sqlite:///{folder}/log.sqlite3", args.readers))
    cluster = PostgresCluster()
    try:
        results.append(measure("postgresql", cluster.url(cluster.create_database()), args.readers))
    finally:
        cluster.stop()
    print(f"\nDelivery log for one issue sent to {args.readers:,} readers\n")
    print("| store | log (table + indexes) | bytes / reader / issue | fold | after folding | totals kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['kind']} | {r['log'] / 1e6:.1f} MB | {r['per_row']:.0f} | {r['fold_s']:.1f} s | "
              f"{r['after'] / 1e3:.0f} KB | {r['totals']} bytes |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
