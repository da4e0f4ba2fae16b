"""A throw-away Postfix (Debian postfix) as the relay between `newsletter send` and a test sink.

Its own config, queue and data folders in a temp folder (`postfix -c DIR`, allowed to root), on
a port of its own; no system instance is used or changed. It relays every domain but one to the
sink, and delivers mail for `virtual_domain` (the bounce address's) into Maildirs under
`mail_root`, as a newsroom's mail server would: so the DSNs it writes are real Postfix DSNs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .leftovers import MARK, server_folder
from .listening import wait_listening
from .ports import free_port

POSTFIX = "/usr/sbin/postfix"
SERVICES = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixRelay:
    def __init__(self, next_hop_port: int, virtual_domain: str, mailboxes: dict[str, str], mail_root: Path,
                 uid: int, gid: int, tls: tuple[Path, Path] | None = None, sasl_path: str = "") -> None:
        """`mailboxes` maps an address of `virtual_domain` to its Maildir under `mail_root` ("bounces/Maildir/").

        `tls` (certificate, key) offers STARTTLS; `sasl_path` (Dovecot's auth service, "inet:127.0.0.1:PORT")
        offers AUTH after STARTTLS and relays only for who logged in.
        """
        self.dir = server_folder("postfix")
        self.dir.chmod(0o755)  # its daemons run as postfix
        self.port = free_port()
        conf = self.dir / "conf"
        conf.mkdir()
        (self.dir / "queue").mkdir()  # root's; postfix makes its subfolders, and data_directory, itself
        maps = ", ".join(f"{address}={path}" for address, path in mailboxes.items())
        (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
maillog_file = {self.dir}/maillog
maillog_file_prefixes = {self.dir}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.news.example
mydomain = news.example
myorigin = news.example
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{next_hop_port}
virtual_mailbox_domains = {virtual_domain}
virtual_mailbox_base = {mail_root}
virtual_mailbox_maps = inline:{{ {maps} }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
recipient_delimiter = +
alias_maps =
alias_database =
smtputf8_enable = no
smtp_tls_security_level = none
delay_warning_time = 0
# Postfix's default, and the test run's mark: tests/leftovers.py finds its daemons by it.
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE
  POSTLOG_HOSTNAME {MARK}
""" + (f"""smtpd_tls_cert_file = {tls[0]}
smtpd_tls_key_file = {tls[1]}
smtpd_tls_security_level = may
""" if tls else "") + (f"""smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl_path}
smtpd_tls_auth_only = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
mynetworks =
""" if sasl_path else ""))
        # With `tls`, also implicit TLS (as on port 465) on `tls_port`.
        self.tls_port = free_port() if tls else 0
        (conf / "master.cf").write_text(SERVICES.format(listen=f"127.0.0.1:{self.port}") + (
            f"127.0.0.1:{self.tls_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n"
            "tlsmgr unix - - n 1000? 1 tlsmgr\n" if tls else ""))
        self.conf = conf
        self._postfix("start")
        try:
            wait_listening(self.port, "postfix", self.log)
        except RuntimeError:
            self.stop()
            raise

    def _postfix(self, command: str) -> None:
        result = subprocess.run([POSTFIX, "-c", str(self.conf), command], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            # postfix writes its errors to syslog unless stderr is a terminal: ask again on one.
            check = subprocess.run(["script", "-qec", f"{POSTFIX} -c {self.conf} check", "/dev/null"],
                                   capture_output=True, text=True, timeout=60)
            raise RuntimeError(f"postfix {command} failed: {check.stdout}{self.log()}")

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
