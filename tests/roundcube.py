"""A throw-away Roundcube webmail (Debian's roundcube-core 1.6) reading a test Dovecot over IMAP.

Served by PHP's built-in web server from Debian's document root, with a config folder, an SQLite
database, temp and log folders of its own in a temp folder: /etc/roundcube is never read or
changed (Roundcube takes its config folder from ROUNDCUBE_CONFIG_DIR, see program/include/iniset.php).
Only Debian's own defaults.inc.php and mimetypes.php are copied in, so the webmail behaves as
Debian ships it, remote images blocked included.
"""

from __future__ import annotations

import os
import secrets
import signal
import shutil
import sqlite3
import subprocess
from pathlib import Path

from .leftovers import MARK, server_folder
from .listening import wait_listening
from .ports import free_port

PHP = "/usr/bin/php"
ROUNDCUBE = Path("/usr/share/roundcube")
DOCUMENT_ROOT = Path("/var/lib/roundcube/public_html")  # index.php, skins/, program/js: what Apache would serve
DEBIAN_CONFIG = Path("/etc/roundcube")
# Roundcube's page loads a dozen scripts and styles at once; one PHP worker would serve them in turn.
WORKERS = "4"


class RoundcubeServer:
    """Roundcube on 127.0.0.1 with `imap_port` as its only IMAP server; stop() ends it and removes its files."""

    def __init__(self, imap_port: int) -> None:
        for path in (PHP, ROUNDCUBE / "SQL" / "sqlite.initial.sql", DOCUMENT_ROOT / "index.php"):
            if not Path(path).exists():
                raise RuntimeError(f"{path} is missing: `make system-deps` installs roundcube-core, "
                                   "roundcube-sqlite3 and php-cli")
        self.dir = server_folder("roundcube")
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        try:
            config = self._configure(imap_port)
            # php -S writes a line a request: to a file, since a pipe nobody reads would fill and stall it.
            with (self.dir / "php-server.log").open("wb") as output:
                self.process = subprocess.Popen(
                    [PHP, "-S", f"127.0.0.1:{self.port}", "-t", str(DOCUMENT_ROOT)],
                    cwd=self.dir, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                    env={"PATH": "/usr/bin:/bin", "ROUNDCUBE_CONFIG_DIR": str(config),
                         "PHP_CLI_SERVER_WORKERS": WORKERS, MARK: os.environ.get(MARK, "")})
            wait_listening(self.port, "roundcube (php -S)", self.log, self.process)
        except BaseException:
            self.stop()
            raise

    def _configure(self, imap_port: int) -> Path:
        """The config folder: Debian's defaults, then ours (this server's database, IMAP, folders, key)."""
        config = self.dir / "config"
        for sub in ("config", "temp", "logs"):
            (self.dir / sub).mkdir()
        for name in ("defaults.inc.php", "mimetypes.php"):
            shutil.copy(DEBIAN_CONFIG / name, config / name)
        database = self.dir / "roundcube.sqlite3"
        connection = sqlite3.connect(database)
        try:
            connection.executescript((ROUNDCUBE / "SQL" / "sqlite.initial.sql").read_text())
        finally:
            connection.close()
        (config / "config.inc.php").write_text(f"""<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///{database}?mode=0600';
$config['imap_host'] = '127.0.0.1:{imap_port}';
$config['smtp_host'] = '';
$config['des_key'] = '{secrets.token_hex(12)}';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['language'] = null;  // from the browser's Accept-Language at a reader's first login
$config['temp_dir'] = '{self.dir}/temp/';
$config['log_dir'] = '{self.dir}/logs/';
$config['enable_spellcheck'] = false;
$config['enable_installer'] = false;
""")
        return config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def errors(self) -> str:
        """What Roundcube logged as errors (PHP warnings, IMAP failures, a message it could not parse)."""
        path = self.dir / "logs" / "errors.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        """The end of Roundcube's error log and of PHP's own output (start-up errors, requests)."""
        return "".join(path.read_text(errors="replace")[-2000:]
                       for path in (self.dir / "logs" / "errors.log", self.dir / "php-server.log") if path.exists())

    def stop(self) -> None:
        if self.process is not None:
            # The workers are forked children that outlive a terminated parent: end the whole group.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RoundcubeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
