"""Delivery reports from an IMAP mailbox (IMAPClient): read, then filed away.

A report handled (applied, ignored, or already counted) is moved to the done folder; one that
could not be read or attributed to the kept folder, for a person. None is ever deleted. A run
stopped halfway leaves the rest in the mailbox, and reading a report again counts it once.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from ..config import Settings, SmtpTls
from ..errors import ConfigError, MailboxError
from .report_sources import MAX_REPORT_BYTES, Incoming, Unreadable

FETCH_BATCH = 100


@dataclass(frozen=True)
class ImapReport:
    uid: int
    item: Incoming | Unreadable


class ImapReports:
    """One session on the bounce mailbox: iterate its reports, `file` each, then `close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.where = f"imap://{settings.imap_username}@{settings.imap_host}:{settings.imap_port}/{settings.imap_folder}"
        self._done: list[int] = []
        self._kept: list[int] = []
        try:
            self.client = self._connect()
        except LoginError as exc:  # a wrong setting, not a passing fault: no use retrying
            raise ConfigError(f"{self.where}: login refused: {' '.join(str(exc).split())} "
                              "(settings NEWSLETTER_IMAP_USERNAME, NEWSLETTER_IMAP_PASSWORD)") from None
        except (OSError, IMAPClientError, ssl.SSLError) as exc:
            raise MailboxError(f"{self.where}: {_reason(exc)} (settings NEWSLETTER_IMAP_*)") from None

    def _connect(self) -> IMAPClient:
        s = self.settings
        client = log_in(s)
        client.select_folder(s.imap_folder)
        for folder in (s.imap_done_folder, s.imap_kept_folder):
            if not client.folder_exists(folder):
                client.create_folder(folder)
        return client

    def __iter__(self) -> Iterator[ImapReport]:
        try:
            uids = self.client.search(["NOT", "DELETED"])
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start:start + FETCH_BATCH]
                sizes = self.client.fetch(batch, ["RFC822.SIZE"])
                small = [uid for uid in batch if sizes.get(uid, {}).get(b"RFC822.SIZE", 0) <= MAX_REPORT_BYTES]
                for uid in batch:
                    if uid not in small:
                        yield ImapReport(uid, Unreadable(self._name(uid), f"larger than "
                                                         f"{MAX_REPORT_BYTES // (1024 * 1024)} MB, so not read as a "
                                                         "delivery report"))
                bodies = self.client.fetch(small, ["BODY.PEEK[]"]) if small else {}
                for uid in small:
                    raw = bodies.get(uid, {}).get(b"BODY[]")
                    yield ImapReport(uid, Incoming(self._name(uid), raw) if raw
                                     else Unreadable(self._name(uid), "the server returned no body"))
        except (OSError, IMAPClientError, ssl.SSLError) as exc:
            raise MailboxError(f"{self.where}: {_reason(exc)} while reading; what was filed stays filed, "
                               "the rest is read next time") from None

    def file(self, uid: int, handled: bool) -> None:
        (self._done if handled else self._kept).append(uid)

    def close(self) -> None:
        """Move what was read to its folder and log out."""
        try:
            for uids, folder in ((self._done, self.settings.imap_done_folder),
                                 (self._kept, self.settings.imap_kept_folder)):
                if uids:
                    self._move(uids, folder)
            self.client.logout()
        except (OSError, IMAPClientError, ssl.SSLError) as exc:
            raise MailboxError(f"{self.where}: {_reason(exc)} while filing the reports read; they stay in "
                               f"{self.settings.imap_folder} and count once when read again") from None

    def _move(self, uids: list[int], folder: str) -> None:
        if self.client.has_capability("MOVE"):
            self.client.move(uids, folder)
            return
        self.client.copy(uids, folder)
        self.client.delete_messages(uids)
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uids)
        else:
            self.client.expunge()

    def _name(self, uid: int) -> str:
        return f"{self.where} uid {uid}"


def log_in(s: Settings, timeout: float | None = None) -> IMAPClient:
    """A session on the bounce mailbox's server, logged in (LoginError, OSError, IMAPClientError otherwise)."""
    context = ssl.create_default_context(cafile=str(s.imap_ca_file) if s.imap_ca_file else None)
    client = IMAPClient(s.imap_host, port=s.imap_port, ssl=s.imap_tls is SmtpTls.tls,
                        ssl_context=context, timeout=timeout or s.imap_timeout)
    if s.imap_tls is SmtpTls.starttls:
        client.starttls(context)
    client.login(s.imap_username, s.imap_password)
    return client


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "the server did not answer in time"
    text = " ".join(str(exc).split())
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({text})"
    return text or type(exc).__name__
