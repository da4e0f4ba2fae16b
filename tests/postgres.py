"""A throw-away PostgreSQL cluster for the tests: Debian's server binaries, initdb in a temp dir, pg_ctl.

Nothing is asked of the machine but the postgresql package (`make test` installs it): the cluster
listens on a free loopback port, trusts local connections, skips fsync (it is thrown away), and is
stopped and deleted when the session ends. Each test gets a database of its own.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text

from .leftovers import server_folder
from .ports import free_port

USER = "newsletter"


def _server_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise RuntimeError("PostgreSQL's server is not installed: `make test` installs Debian's postgresql")
    return versions[-1].parent


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = _server_bin()
        self.root = server_folder("pg")
        self.port = free_port()
        self._names = itertools.count(1)
        # initdb refuses to run as root: the cluster belongs to the postgres user when we are root.
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.data = self.root / "data"
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")
        self.admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.run_as, str(self.bin / program), *args], check=True, capture_output=True, cwd=self.root)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"test_{next(self._names)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def stop(self) -> None:
        self.admin.dispose()
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
