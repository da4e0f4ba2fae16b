"""A local SMTP server that keeps every message it receives as an .eml file.

Used by `make demo` (and handy for editors): point NEWSLETTER_SMTP_HOST/PORT
at it and open the files in any mail client.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


class OutboxHandler:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.count = 0

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.count += 1
            number = self.count
        for recipient in envelope.rcpt_tos:
            safe = "".join(c if c.isalnum() or c in "@.+-_" else "_" for c in recipient)
            (self.outbox / f"{number:06d}-{safe}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_outbox(outbox: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[Controller, OutboxHandler]:
    """Start the server in a background thread (port 0: any free one, see controller.port)."""
    handler = OutboxHandler(outbox)
    port = port or free_port(host)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    return controller, handler
