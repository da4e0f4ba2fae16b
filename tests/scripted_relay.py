"""A raw SMTP server that answers from a script, in the test's own event loop.

aiosmtpd and smtp-sink behave well, and smtp-sink stops offering PIPELINING
as soon as it is told to refuse a command. This relay offers PIPELINING (or
not) and answers each command as the test says, including as no real relay
should (354 after a refused RCPT); it can hang up or fall silent at any
command. It records every chunk it read from the socket, so a test can see
what arrived in one write, and every command line, in order.

Replies to the commands found in one read go out in one write, as Postfix
sends them, unless `pace` spaces them out (then each reply is a segment).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

DROP = "drop"  # close the connection instead of answering
SILENT = "silent"  # never answer (the client's timeout has to end it)


@dataclass
class Delivered:
    mail_from: str
    rcpt_to: list[str]
    body: bytes


@dataclass
class Script:
    """Replies by command verb, used in order, one per command; then the relay's normal answer."""

    replies: dict[str, list[str]] = field(default_factory=dict)
    pipelining: bool = True
    size: bool = False
    pace: float = 0.0  # seconds between the replies to one read
    hang_up_after_421: bool = True  # as RFC 5321 says; False: the client has to close


class RelaySession(asyncio.Protocol):
    def __init__(self, relay: ScriptedRelay) -> None:
        self.relay = relay
        self.buffer = b""
        self.in_data = False
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.body = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.relay.sessions += 1
        transport.write(b"220 scripted ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.relay.chunks.append(data)
        self.buffer += data
        answers: list[str] = []
        while b"\r\n" in self.buffer and self.transport is not None:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if self.in_data and line != b".":
                self.body += line + b"\r\n"
                continue
            self.relay.commands.append(line.decode("ascii", "replace"))
            answer = self._end_of_data() if self.in_data else self._command(line.decode("ascii", "replace"))
            if answer == SILENT:
                continue
            if answer == DROP:
                self._send(answers, close=True)
                return
            answers.append(answer)
            if (answer.startswith("421") and self.relay.script.hang_up_after_421) or answer.startswith("221"):
                self._send(answers, close=True)
                return
        self._send(answers)

    def _end_of_data(self) -> str:
        self.in_data = False
        self.relay.data_phases.append(self.body)
        answer = self.relay.reply(".", "250 2.0.0 Ok: queued")
        if answer.startswith("250") and self.rcpts:
            self.relay.delivered.append(Delivered(self.mail_from or "", self.rcpts, self.body))
        self._reset()
        return answer

    def _command(self, line: str) -> str:
        verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
        relay = self.relay
        if verb == "EHLO":
            extensions = ["scripted"] + (["PIPELINING"] if relay.script.pipelining else []) + \
                (["SIZE 10240000"] if relay.script.size else []) + ["8BITMIME"]
            return relay.reply("EHLO", "\r\n".join(
                f"250{'-' if i < len(extensions) - 1 else ' '}{e}" for i, e in enumerate(extensions)))
        if verb == "MAIL":
            answer = relay.reply("MAIL", "250 2.1.0 Ok")
            if answer.startswith("2"):
                self.mail_from = line.split(":", 1)[1].split(">", 1)[0].lstrip("<")
            return answer
        if verb == "RCPT":
            if self.mail_from is None:
                return relay.reply("RCPT", "503 5.5.1 Error: need MAIL command")
            answer = relay.reply("RCPT", "250 2.1.5 Ok")
            if answer.startswith("2"):
                self.rcpts.append(line.split(":", 1)[1].split(">", 1)[0].lstrip("<"))
            return answer
        if verb == "DATA":
            normal = "354 End data with <CR><LF>.<CR><LF>" if self.rcpts else "503 5.5.1 Error: need RCPT command"
            answer = relay.reply("DATA", normal)
            self.in_data = answer.startswith("354")
            return answer
        if verb == "RSET":
            self._reset()
            return relay.reply("RSET", "250 2.0.0 Ok")
        if verb == "QUIT":
            return relay.reply("QUIT", "221 2.0.0 Bye")
        if verb in ("HELO", "NOOP"):
            return relay.reply(verb, "250 Ok")
        return "502 5.5.2 Error: command not recognized"

    def _reset(self) -> None:
        self.mail_from, self.rcpts, self.body = None, [], b""

    def _send(self, answers: list[str], close: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        if close:
            self.transport = None
        if not self.relay.script.pace or len(answers) < 2:
            if answers:
                transport.write("".join(a + "\r\n" for a in answers).encode("ascii"))
            if close:
                transport.close()
            return
        loop = asyncio.get_running_loop()
        for i, answer in enumerate(answers):
            loop.call_later(i * self.relay.script.pace, transport.write, (answer + "\r\n").encode("ascii"))
        if close:
            loop.call_later(len(answers) * self.relay.script.pace, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class ScriptedRelay:
    """Start with `async with ScriptedRelay(Script(...)) as relay:`; it listens on relay.port."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.used: dict[str, int] = defaultdict(int)
        self.chunks: list[bytes] = []
        self.commands: list[str] = []
        self.delivered: list[Delivered] = []
        self.data_phases: list[bytes] = []  # what came between 354 and the dot, each time
        self.sessions = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    def reply(self, verb: str, normal: str) -> str:
        scripted = self.script.replies.get(verb, [])
        index = self.used[verb]
        self.used[verb] += 1
        return scripted[index] if index < len(scripted) else normal

    async def __aenter__(self) -> ScriptedRelay:
        self._server = await asyncio.get_running_loop().create_server(lambda: RelaySession(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
