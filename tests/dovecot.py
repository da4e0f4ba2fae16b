"""A throw-away Dovecot IMAP server (Debian dovecot-imapd) serving Maildirs from a temp folder.

Started in the foreground with a config of its own: no system service is used or changed.
Mail is stored as `nobody`, so the folder lives outside pytest's private tmp.
"""

from __future__ import annotations

import mailbox
import os
import pwd
import subprocess
from pathlib import Path

from .leftovers import server_folder
from .listening import stop_and_remove, wait_listening
from .ports import free_port

DOVECOT = "/usr/sbin/dovecot"


class DovecotServer:
    def __init__(self, users: dict[str, str], sasl: bool = False) -> None:
        """`sasl`: also answer Postfix's SASL questions (smtpd_sasl_path = inet:127.0.0.1:`auth_port`),
        and failed logins at once, without the growing penalty."""
        self.dir = server_folder("dovecot")
        self.dir.chmod(0o755)
        self.port = free_port()
        self.auth_port = free_port() if sasl else 0
        self.users = users
        nobody = pwd.getpwnam("nobody")
        self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
        (self.dir / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
        (self.dir / "mail").mkdir()
        os.chown(self.dir / "mail", self._uid, self._gid)
        (self.dir / "dovecot.conf").write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{self.dir}/mail/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={self._uid} gid={self._gid} home={self.dir}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""" + (f"""# Failed logins are what the tests try: answered at once, and not held against the next ones.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  inet_listener {{
    port = {self.auth_port}
  }}
}}
""" if sasl else ""))
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port, "dovecot", self.log, self.process)
        except RuntimeError:
            self.stop()
            raise

    def maildir(self, user: str) -> mailbox.Maildir:
        """The user's Maildir, made as Dovecot would make it (owned by nobody)."""
        path = self.dir / "mail" / user / "Maildir"
        path.parent.mkdir(exist_ok=True)
        box = mailbox.Maildir(path, create=True)
        for folder in (path.parent, path, *(path / sub for sub in ("cur", "new", "tmp"))):
            os.chown(folder, self._uid, self._gid)
        return box

    def deliver(self, user: str, raw: bytes) -> None:
        box = self.maildir(user)
        key = box.add(raw)
        os.chown(Path(box._path) / "new" / key, self._uid, self._gid)
        box.close()

    def folder_sizes(self, user: str) -> dict[str, int]:
        """Messages per folder (Maildir++: INBOX and .Name), as the server keeps them."""
        root = self.dir / "mail" / user / "Maildir"
        folders = {"INBOX": root, **{p.name[1:]: p for p in root.glob(".*") if p.is_dir()}}
        return {name: sum(1 for sub in ("cur", "new") if (path / sub).is_dir() for _ in (path / sub).iterdir())
                for name, path in folders.items()}

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        stop_and_remove(self.process, self.dir)
