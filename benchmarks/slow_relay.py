"""A relay with latency: an aiosmtpd server that answers each DATA after asyncio.sleep(delay).

Run in its own process by the harness (so its work does not share the client's
GIL). It keeps nothing; on SIGTERM it writes what it saw as JSON:

    python benchmarks/slow_relay.py --port 2526 --delay 0.2 --stats stats.json

`window` is from the first MAIL FROM to the last DATA reply, the time a client
kept the relay busy; with K connections the ideal rate is K / delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time

from aiosmtpd.smtp import SMTP


class DelayedHandler:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.messages = 0
        self.recipients = 0
        self.first_mail: float | None = None
        self.last_reply: float | None = None
        self.peers: set = set()
        self.in_data = 0
        self.max_in_data = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.first_mail is None:
            self.first_mail = time.monotonic()
        self.peers.add(session.peer)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.in_data += 1
        self.max_in_data = max(self.max_in_data, self.in_data)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_data -= 1
        self.messages += 1
        self.recipients += len(envelope.rcpt_tos)
        self.last_reply = time.monotonic()
        return "250 Message accepted"

    def stats(self) -> dict:
        window = (self.last_reply - self.first_mail) if self.first_mail and self.last_reply else None
        return {
            "messages": self.messages,
            "recipients": self.recipients,
            "connections_seen": len(self.peers),
            "max_concurrent_data": self.max_in_data,
            "window_seconds": window,
            "rate": self.messages / window if window else None,
            "delay": self.delay,
        }


async def serve(host: str, port: int, delay: float, stats_path: str) -> None:
    handler = DelayedHandler(delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="slow-relay", decode_data=False, loop=loop), host, port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{port}, DATA answered after {delay} s", flush=True)
    await stop.wait()
    server.close()
    with open(stats_path, "w", encoding="utf-8") as f:
        json.dump(handler.stats(), f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(args.host, args.port, args.delay, args.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
