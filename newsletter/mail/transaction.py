"""One mail transaction on the wire: prepared message bytes, and MAIL, RCPT and DATA pipelined (RFC 2920).

aiosmtplib's `sendmail` sends MAIL FROM, RCPT TO and DATA one at a time and
waits for each reply, then the body: four round trips a message, each an
event-loop wake-up, a timer and a reply parse, and `parseaddr` four times.
When the relay's EHLO offers PIPELINING, `send_pipelined` writes the three
commands at once, reads their replies in order and, after 354, writes the
body and the final dot in one more write: two round trips. Every reply is
still read and judged as `sendmail` judges it, and the same aiosmtplib
exceptions are raised, so smtp.py and delivery.py classify failures
(permanent, transient, relay busy) exactly as before.
"""

from __future__ import annotations

import asyncio
import re
from typing import cast

import aiosmtplib
from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH, PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus

END_OF_DATA = b".\r\n"
_SPACE = ord(" ")
CLOSING = SMTPStatus.domain_unavailable  # 421: the relay is closing this channel
# An envelope address that can go between angle brackets as it is: printable
# ASCII without space, quote or bracket. Every address we send to passed
# email-validator (ASCII, no quoted local part) and `ascii_address`; anything
# else takes aiosmtplib's path, which parses and quotes it.
_PLAIN_ADDRESS = re.compile(r"[!#-;=?-~]+")


class PreparedMessage(bytes):
    """Message bytes already in wire form: CRLF lines, none starting with ".", ending in CRLF.

    `message.MessageTemplate` builds every message that way (base64 bodies,
    folded headers), so the two whole-message regular expressions aiosmtplib
    runs before DATA (line endings, dot-stuffing) can change nothing; on a
    78 KB issue they cost ~0.9 ms a message, most of the sender's CPU.
    """


def plain_envelope(sender: str, recipient: str) -> bool:
    """Whether both addresses can be written into MAIL FROM and RCPT TO without parsing or quoting."""
    return _PLAIN_ADDRESS.fullmatch(sender) is not None and _PLAIN_ADDRESS.fullmatch(recipient) is not None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))


class PreparedDataProtocol(SMTPProtocol):
    """aiosmtplib's protocol, plus DATA for a PreparedMessage as it is and the pipelined transaction.

    aiosmtplib's own reader keeps one reply at a time: bytes that arrive while
    a parsed reply waits to be picked up are dropped, and a second reply
    already in the buffer is parsed only when more bytes come. Three pipelined
    replies often arrive in one segment, so while a pipelined transaction runs
    the protocol only buffers what arrives, and the transaction parses the
    replies out of the buffer itself, in order.
    """

    # Class defaults: aiosmtplib's protocol is turned into this class after connecting (smtp.py).
    _pipelining = False  # a pipelined transaction is reading: buffer everything that arrives
    _more: asyncio.Future[None] | None = None  # woken when bytes arrive or the connection ends
    _gone: str | None = None  # why the connection ended, once it has

    async def execute_data_command(self, message: bytes, timeout: float | None = None) -> SMTPResponse:
        if not isinstance(message, PreparedMessage) or self._command_lock is None:
            return await super().execute_data_command(message, timeout=timeout)
        async with self._command_lock:  # the same exchange as aiosmtplib's, minus the two passes
            self._response_pending = True
            self.write(b"DATA\r\n")
            start = await self.read_response(timeout=timeout)
            if start.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            self._response_pending = True
            self.write(message)
            self.write(END_OF_DATA)
            response = await self.read_response(timeout=timeout)
            if response.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

    async def pipelined_transaction(self, envelope: bytes, body: bytes, timeout: float | None) -> list[SMTPResponse]:
        """Write MAIL, RCPT and DATA (`envelope`) at once, read their replies; after 354, the body.

        Returns the replies read, in order: MAIL, RCPT, DATA and the final
        one; fewer when a reply was 421 (the relay is closing: nothing more
        will come) or DATA was not answered 354. The body goes only when MAIL
        and RCPT were accepted; a relay that answers 354 all the same gets an
        empty message, the dot alone, which RFC 2920 (3.1) allows and which
        reaches nobody.
        """
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        async with self._command_lock:
            self._pipelining = True
            try:
                self.write(envelope)
                replies: list[SMTPResponse] = []
                for _ in range(3):
                    reply = await self._next_reply(timeout)
                    replies.append(reply)
                    if reply.code == CLOSING:
                        return replies
                mail, rcpt, data = replies
                if data.code != SMTPStatus.start_input:
                    return replies
                if mail.code == SMTPStatus.completed and rcpt.code in (SMTPStatus.completed, SMTPStatus.will_forward):
                    self._write_lines(body, END_OF_DATA)
                else:
                    self.write(END_OF_DATA)
                replies.append(await self._next_reply(timeout))
                return replies
            finally:
                self._pipelining = False
                del self._buffer[:]  # nothing else is owed to us; aiosmtplib drops unsolicited bytes too

    def _write_lines(self, *chunks: bytes) -> None:
        """One write for several buffers (sendmsg where the loop has it, else one join)."""
        if self.transport is None or self.transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        cast(asyncio.WriteTransport, self.transport).writelines(chunks)

    async def _next_reply(self, timeout: float | None) -> SMTPResponse:
        """The next whole reply in the buffer, waiting at most `timeout` for it (as aiosmtplib's reads do)."""
        deadline = None
        while True:
            reply = self._take_reply()
            if reply is not None:
                return reply
            if len(self._buffer) > MAX_RESPONSE_LENGTH:
                raise aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, "Response too long")
            if self._gone is not None:
                raise aiosmtplib.SMTPServerDisconnected(self._gone)
            if deadline is None and timeout is not None:
                deadline = self._loop.time() + timeout
            await self._more_bytes(deadline)

    def _take_reply(self) -> SMTPResponse | None:
        """The first whole reply in the buffer, taken out of it; None while it is incomplete.

        A one-line reply ("250 2.0.0 Ok: queued"), four of every message's, is
        parsed here at half the cost of aiosmtplib's general parser; anything
        else (several lines, a malformed or overlong line) goes to that parser,
        which raises SMTPResponseException for what it cannot read.
        """
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end == -1:
            return None
        if 4 <= end < MAX_LINE_LENGTH and buffer[3] == _SPACE and buffer[:3].isdigit():
            line = bytes(buffer[:end + 1])
            del buffer[:end + 1]
            return SMTPResponse(int(line[:3]), line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
        return self._read_response_from_buffer()

    async def _more_bytes(self, deadline: float | None) -> None:
        # A timer handle is cheaper than asyncio.wait_for (no extra future, no task) and
        # covers the whole reply, however many segments it comes in.
        waiter = self._loop.create_future()
        self._more = waiter
        timer = self._loop.call_at(deadline, _expire, waiter) if deadline is not None else None
        try:
            await waiter
        finally:
            self._more = None
            if timer is not None:
                timer.cancel()

    def data_received(self, data: bytes) -> None:
        if not self._pipelining:
            super().data_received(data)
            return
        self._buffer.extend(data)
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def eof_received(self) -> bool:
        self._ended("Unexpected EOF received")
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended("Connection lost")
        super().connection_lost(exc)

    def _ended(self, reason: str) -> None:
        if self._gone is None:
            self._gone = reason
        if self._more is not None and not self._more.done():
            self._more.set_result(None)  # the reader finds _gone after the replies still buffered


def _wire_body(message: bytes) -> tuple[bytes, int]:
    """The DATA payload (without the final dot) and the SIZE aiosmtplib would declare for it."""
    if isinstance(message, PreparedMessage):
        return message, len(message)
    normalized = normalize_message_line_endings(message)
    return PERIOD_REGEX.sub(b"..", normalized), len(normalized)


def _failure(replies: list[SMTPResponse], sender: str, recipient: str) -> aiosmtplib.SMTPException | None:
    """The error aiosmtplib's sendmail raises for these replies (the first one refused), or None."""
    mail = replies[0]
    if mail.code != SMTPStatus.completed:
        return aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
    rcpt = replies[1]
    if rcpt.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, recipient)])
    data = replies[2]
    if data.code != SMTPStatus.start_input:
        return aiosmtplib.SMTPDataError(data.code, data.message)
    final = replies[3]
    if final.code != SMTPStatus.completed:
        return aiosmtplib.SMTPDataError(final.code, final.message)
    return None


async def send_pipelined(client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes) -> SMTPResponse:
    """One message to one recipient in two round trips; the relay must offer PIPELINING.

    Raises what `client.sendmail(sender, [recipient], message)` raises for the
    same replies: SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError,
    SMTPServerDisconnected, SMTPTimeoutError. As there, a refusal is followed
    by RSET so the connection serves the next message, and a 421 reply, a
    timeout or a drop closes it. `sender` and `recipient` must be plain
    (`plain_envelope`).
    """
    protocol = client.protocol
    if not isinstance(protocol, PreparedDataProtocol):
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    body, size = _wire_body(message)
    mail = b"MAIL FROM:<" + sender.encode("ascii") + b">"
    if client.supports_extension("size"):
        mail += b" SIZE=%d" % size
    envelope = b"%s\r\nRCPT TO:<%s>\r\nDATA\r\n" % (mail, recipient.encode("ascii"))
    try:
        replies = await protocol.pipelined_transaction(envelope, body, client.timeout)
    except aiosmtplib.SMTPException:
        # Dropped, timed out or garbled: which reply is next is unknown, so the channel is done.
        client.close()
        raise
    failure = _failure(replies, sender, recipient)
    if replies[-1].code == CLOSING:
        client.close()
    if failure is None:
        return replies[3]
    if client.is_connected:
        try:
            await client.rset()  # forget the half-made envelope, as sendmail does
        except (ConnectionError, TimeoutError, aiosmtplib.SMTPResponseException):
            pass  # the refusal is the news; a channel that fails RSET is closed already or soon
    raise failure
