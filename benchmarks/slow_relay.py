"""A relay with latency: a minimal asyncio SMTP server that answers each end of DATA after `delay`.

Run in its own process by the harness (so its work does not share the client's
GIL). It offers PIPELINING, keeps nothing and, on SIGTERM, writes what it saw as JSON:

    python benchmarks/slow_relay.py --port 2526 --delay 0.2 --stats stats.json

`window` is from the first MAIL FROM to the last DATA reply, the time a client
kept the relay busy; with K connections the ideal rate is K / delay.

It reads a message body with one search for the final dot, in C. The aiosmtpd
server it replaces read bodies line by line in Python (~1.5 ms for our 73 KB
message), so ten connections answered together queued behind one another and
even postfix's C smtp-source reached only 96 % of the ideal through it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

END_OF_DATA = b"\r\n.\r\n"
MAX_MESSAGE = 16 * 1024 * 1024


class Stats:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.messages = 0
        self.recipients = 0
        self.first_mail: float | None = None
        self.last_reply: float | None = None
        self.peers: set = set()
        self.in_data = 0
        self.max_in_data = 0

    def as_dict(self) -> dict:
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


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats) -> None:
    stats.peers.add(writer.get_extra_info("peername"))
    writer.write(b"220 slow-relay ESMTP\r\n")
    recipients = 0
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-slow-relay\r\n250-PIPELINING\r\n250 8BITMIME\r\n" if verb == b"EHLO"
                             else b"250 slow-relay\r\n")
            elif verb == b"MAIL":
                if stats.first_mail is None:
                    stats.first_mail = time.monotonic()
                recipients = 0
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                recipients += 1
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                first = await reader.readline()
                if first != b".\r\n":
                    await reader.readuntil(END_OF_DATA)
                stats.in_data += 1
                stats.max_in_data = max(stats.max_in_data, stats.in_data)
                try:
                    await asyncio.sleep(stats.delay)
                finally:
                    stats.in_data -= 1
                stats.messages += 1
                stats.recipients += recipients
                stats.last_reply = time.monotonic()
                writer.write(b"250 2.0.0 Message accepted\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:  # RSET, NOOP
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, delay: float, stats_path: str) -> None:
    stats = Stats(delay)
    server = await asyncio.start_server(lambda r, w: session(r, w, stats), host, port, limit=MAX_MESSAGE)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{port}, DATA answered after {delay} s", flush=True)
    await stop.wait()
    server.close()
    with open(stats_path, "w", encoding="utf-8") as f:
        json.dump(stats.as_dict(), f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.delay, args.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
