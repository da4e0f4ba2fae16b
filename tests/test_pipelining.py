"""ESMTP PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the relay offers it.

The pipelined path must judge every reply as aiosmtplib's sendmail does, so
each scenario runs twice against the same scripted relay, once offering
PIPELINING and once not (then aiosmtplib's own path sends), and the two must
end the same: the same exception, outcome, reply and busy verdict, the
connection kept or dropped alike, the next message delivered. Then real
servers: aiosmtpd taught to offer PIPELINING, aiosmtpd as it is (no
PIPELINING) and postfix's smtp-sink, and `newsletter send` end to end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import aiosmtplib
import pytest
import uvloop
from aiosmtpd.controller import Controller

from newsletter.config import Settings
from .ports import free_port
from newsletter.mail.smtp import SmtpConnection, classify, is_busy, reply_of
from newsletter.mail.transaction import PreparedMessage
from newsletter.store.database import Outcome

from .conftest import SAMPLE_DATE, RecordingHandler, run_cli
from .scripted_relay import DROP, SILENT, Script, ScriptedRelay
from .test_faults import sinks  # noqa: F401 (the fixture: smtp-sinks started with flags, stopped after)

SENDER = "bounces+m20170509-1-abcdefghijklmnop@news.example"
MESSAGE = PreparedMessage(b"Subject: morning\r\nTo: reader@example.com\r\n\r\nSGVsbG8=\r\n")


def relay_settings(port: int, **overrides: object) -> Settings:
    return Settings(_env_file=None, smtp_host="127.0.0.1", smtp_port=port, from_address="morning@news.example",
                    base_url="https://news.example", secret_key="tests-only-key-0123456789-abcdefghijklmnop",
                    **overrides)


@dataclass
class Ending:
    """How one send ended, in the terms delivery.py uses."""

    error: str | None  # the exception's type, or None when the message went
    code: int | None
    outcome: Outcome
    reply: str
    busy: bool
    connection_kept: bool

    @classmethod
    def of(cls, exc: BaseException | None, connection: SmtpConnection) -> Ending:
        kept = connection.client is not None and connection.client.is_connected
        if exc is None:
            return cls(None, None, Outcome.sent, "", False, kept)
        return cls(type(exc).__name__, getattr(exc, "code", None), classify(exc), reply_of(exc), is_busy(exc), kept)


async def send_one(connection: SmtpConnection, recipient: str, message: bytes = MESSAGE) -> BaseException | None:
    try:
        await connection.send(SENDER, recipient, message)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        return exc
    return None


@dataclass
class Run:
    first: Ending
    second: Ending  # the next message, on the same SmtpConnection
    relay: ScriptedRelay


def run_script(script: Script, timeout: float = 5.0, first_message: bytes = MESSAGE) -> Run:
    """Send to first@ then second@ over one SmtpConnection through a relay playing `script`."""
    async def scenario() -> Run:
        async with ScriptedRelay(script) as relay:
            connection = SmtpConnection(relay_settings(relay.port, smtp_timeout=timeout))
            try:
                first = Ending.of(await send_one(connection, "first@example.com", first_message), connection)
                second = Ending.of(await send_one(connection, "second@example.com"), connection)
            finally:
                await connection.close()
            return Run(first, second, relay)

    return asyncio.run(asyncio.wait_for(scenario(), 60))  # a client that never times out fails, not hangs


def pipelined_reads(relay: ScriptedRelay) -> list[bytes]:
    """The reads in which the relay found a MAIL command."""
    return [chunk for chunk in relay.chunks if b"MAIL FROM:" in chunk]


SCENARIOS = {
    "accepted": {},
    "RCPT 550": {"RCPT": ["550 5.1.1 <first@example.com>: Recipient address rejected: User unknown"]},
    "RCPT 550, multi-line": {"RCPT": ["550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                                      "550 5.1.1 Please try double-checking the recipient's address"]},
    "MAIL 250 without text": {"MAIL": ["250"]},
    "RCPT 450": {"RCPT": ["450 4.2.0 <first@example.com>: Recipient address rejected: Greylisted"]},
    "RCPT 452 too many connections": {"RCPT": ["452 4.7.0 Too many connections from your host"]},
    "MAIL 451": {"MAIL": ["451 4.3.0 Error: queue file write error"]},
    "MAIL 553": {"MAIL": ["553 5.7.1 <bounces@news.example>: Sender address rejected"]},
    "DATA 554 after a good RCPT": {"DATA": ["554 5.5.1 Error: no valid recipients"]},
    "DATA 451": {"DATA": ["451 4.3.0 Try again later"]},
    "end of data 552": {".": ["552 5.3.4 Message size exceeds fixed limit"]},
    "end of data 451": {".": ["451 4.3.0 Error: queue file write error"]},
    "MAIL 421": {"MAIL": ["421 4.3.2 Service shutting down, closing transmission channel"]},
    # aiosmtplib wraps a refused RCPT in SMTPRecipientsRefused, which has no code, so is_busy (smtp.py)
    # calls a 421 to RCPT busy only when its text says "too many connections": as before, on both paths.
    "RCPT 421": {"RCPT": ["421 4.3.2 Service shutting down"]},
    "RCPT 421 too many connections": {"RCPT": ["421 4.7.0 Too many connections, closing"]},
    "DATA 421": {"DATA": ["421 4.3.2 Service shutting down"]},
    "end of data 421": {".": ["421 4.3.2 Service shutting down"]},
    "drop at MAIL": {"MAIL": [DROP]},
    "drop at RCPT": {"RCPT": [DROP]},
    "drop at DATA": {"DATA": [DROP]},
    "drop at end of data": {".": [DROP]},
}


def assert_same_ending(replies: dict[str, list[str]], **script: object) -> tuple[Run, Run]:
    today = run_script(Script(replies, pipelining=False, **script))
    pipelined = run_script(Script(replies, pipelining=True, **script))

    assert pipelined.first == today.first
    assert pipelined.second == today.second == Ending(None, None, Outcome.sent, "", False, True)
    assert [d.rcpt_to for d in pipelined.relay.delivered] == [d.rcpt_to for d in today.relay.delivered]
    assert pipelined.relay.sessions == today.relay.sessions
    # The paths really differ on the wire: three commands in one read, or one at a time.
    assert pipelined_reads(pipelined.relay)
    assert all(b"RCPT TO:" in c and c.endswith(b"DATA\r\n") for c in pipelined_reads(pipelined.relay))
    assert not any(b"RCPT TO:" in c for c in pipelined_reads(today.relay))
    return today, pipelined


@pytest.mark.parametrize("name", SCENARIOS)
def test_pipelined_replies_end_as_aiosmtplib_sendmail_ends_them(name):
    assert_same_ending(SCENARIOS[name])


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA", "."])
def test_421_closes_the_connection_even_when_the_relay_does_not(verb):
    today, pipelined = assert_same_ending({verb: ["421 4.3.2 Service shutting down"]}, hang_up_after_421=False)
    assert not pipelined.first.connection_kept
    assert pipelined.relay.sessions == 2
    assert "RSET" not in pipelined.relay.commands


def test_the_scenarios_end_as_delivery_expects():
    """What the parity test compares is itself right: refusals by class, 421 closing the channel."""
    expected = {
        "accepted": (None, Outcome.sent, True),
        "RCPT 550": ("SMTPRecipientsRefused", Outcome.refused, True),
        "RCPT 450": ("SMTPRecipientsRefused", Outcome.failed, True),
        "MAIL 451": ("SMTPSenderRefused", Outcome.failed, True),
        "DATA 554 after a good RCPT": ("SMTPDataError", Outcome.refused, True),
        "end of data 552": ("SMTPDataError", Outcome.failed, True),  # the message is too big: no reader's fault
        "MAIL 553": ("SMTPSenderRefused", Outcome.failed, True),  # our sender: delivery stops the send
        "MAIL 421": ("SMTPSenderRefused", Outcome.failed, False),
        "DATA 421": ("SMTPDataError", Outcome.failed, False),
        "drop at RCPT": ("SMTPServerDisconnected", Outcome.failed, False),
    }
    for name, (error, outcome, kept) in expected.items():
        first = run_script(Script(SCENARIOS[name])).first
        assert (first.error, first.outcome, first.connection_kept) == (error, outcome, kept), name
    assert run_script(Script(SCENARIOS["MAIL 421"])).first.busy


def test_a_garbled_reply_fails_the_message_as_aiosmtplib_does_and_the_next_goes_on_a_fresh_connection():
    today = run_script(Script({"RCPT": ["2x0 2.1.5 Ok"]}, pipelining=False))
    pipelined = run_script(Script({"RCPT": ["2x0 2.1.5 Ok"]}))

    assert (pipelined.first.error, pipelined.first.code, pipelined.first.outcome) == \
        (today.first.error, today.first.code, today.first.outcome)
    assert (pipelined.first.error, pipelined.first.outcome) == ("SMTPResponseException", Outcome.failed)
    # Which reply comes next is unknown after one that cannot be read: the channel is closed.
    assert not pipelined.first.connection_kept and pipelined.relay.sessions == 2
    assert pipelined.second.outcome is Outcome.sent


@pytest.mark.parametrize("verb", ["DATA", "."])
def test_a_relay_that_falls_silent_times_out_like_today(verb):
    today = run_script(Script({verb: [SILENT]}, pipelining=False), timeout=0.3)
    pipelined = run_script(Script({verb: [SILENT]}), timeout=0.3)

    assert pipelined.first == today.first
    assert pipelined.first.error == "SMTPReadTimeoutError" and pipelined.first.outcome is Outcome.failed
    assert not pipelined.first.connection_kept
    assert pipelined.second.outcome is Outcome.sent


def test_refused_recipient_sends_no_body_then_rset_and_the_connection_goes_on():
    run = run_script(Script({"RCPT": ["550 5.1.1 User unknown"]}))

    assert run.first.outcome is Outcome.refused and run.second.outcome is Outcome.sent
    assert run.relay.sessions == 1
    assert run.relay.commands[1:] == [
        "MAIL FROM:<%s>" % SENDER, "RCPT TO:<first@example.com>", "DATA", "RSET",
        "MAIL FROM:<%s>" % SENDER, "RCPT TO:<second@example.com>", "DATA", ".", "QUIT"]
    assert [d.rcpt_to for d in run.relay.delivered] == [["second@example.com"]]


def test_a_relay_that_says_354_after_refusing_the_recipient_gets_an_empty_message():
    """RFC 2920 3.1: DATA was pipelined; the body must not follow a refused RCPT."""
    run = run_script(Script({"RCPT": ["550 5.1.1 User unknown"], "DATA": ["354 go ahead (broken)"]}))

    assert run.first.error == "SMTPRecipientsRefused" and run.first.outcome is Outcome.refused
    assert run.relay.commands[1:6] == ["MAIL FROM:<%s>" % SENDER, "RCPT TO:<first@example.com>", "DATA", ".", "RSET"]
    assert run.relay.data_phases[0] == b"", "the dot alone: no body"
    assert run.second.outcome is Outcome.sent and run.relay.sessions == 1
    assert len(run.relay.delivered) == 1


def test_replies_arriving_one_segment_at_a_time_are_each_read():
    for replies, outcome in (({}, Outcome.sent), ({"RCPT": ["550 5.1.1 User unknown"]}, Outcome.refused),
                             ({"MAIL": ["451 4.3.0 later"]}, Outcome.failed)):
        run = run_script(Script(replies, pace=0.03))
        assert run.first.outcome is outcome, replies
        assert run.second.outcome is Outcome.sent and run.relay.sessions == 1, replies


def test_size_is_declared_as_aiosmtplib_declares_it():
    today = run_script(Script(pipelining=False, size=True))
    pipelined = run_script(Script(size=True))

    declared = [c for c in pipelined.relay.commands if c.startswith("MAIL")]
    assert declared[0].endswith(f" SIZE={len(MESSAGE)}")
    assert [c.upper() for c in declared] == [c.upper() for c in today.relay.commands if c.startswith("MAIL")]


def test_bytes_not_prepared_are_normalised_and_dot_stuffed_as_aiosmtplib_does():
    raw = b"Subject: hi\n\n.starts with a dot\r\nlone\rCR\n..two dots"  # not wire form: aiosmtplib rewrites it
    today = run_script(Script(pipelining=False, size=True), first_message=raw)
    pipelined = run_script(Script(size=True), first_message=raw)

    assert pipelined.relay.delivered[0].body == today.relay.delivered[0].body
    assert b"\r\n..starts with a dot\r\n" in pipelined.relay.delivered[0].body
    assert [c.upper() for c in pipelined.relay.commands if c.startswith("MAIL")] == \
        [c.upper() for c in today.relay.commands if c.startswith("MAIL")]


def test_an_address_that_needs_quoting_takes_aiosmtplib_path():
    async def scenario() -> list[str]:
        async with ScriptedRelay(Script()) as relay:
            connection = SmtpConnection(relay_settings(relay.port))
            await connection.send(SENDER, "Reader Name <reader@example.com>", MESSAGE)
            await connection.close()
            return [c for c in relay.commands if c.startswith("RCPT")], pipelined_reads(relay)

    rcpts, reads = asyncio.run(scenario())
    assert rcpts == ["RCPT TO:<reader@example.com>"]
    assert not any(b"RCPT TO:" in read for read in reads), "parsed and sent one command at a time"


# --- real servers ---------------------------------------------------------------


class PipeliningHandler(RecordingHandler):
    """aiosmtpd offering PIPELINING; it notes whether RCPT and DATA had arrived before it answered MAIL.

    aiosmtpd reads one command line at a time, so it takes pipelined input as it is.
    """

    def __init__(self, offer: bool = True) -> None:
        super().__init__()
        self.offer = offer
        self.pipelined: list[bool] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.offer else responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        waiting = bytes(server._reader._buffer)  # what came in after MAIL, not yet read
        with self.lock:
            self.pipelined.append(b"RCPT TO:" in waiting and b"DATA\r\n" in waiting)
        envelope.mail_from = address
        return "250 OK"


@pytest.fixture
def aiosmtpd_relay():
    started: list[Controller] = []

    def start(handler: RecordingHandler) -> int:
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), decode_data=False)
        controller.start()
        started.append(controller)
        return controller.port

    yield start
    for controller in started:
        controller.stop()


def send_all(port: int, recipients: list[str], loop_factory=None) -> list[Ending]:
    """Send to each recipient in turn over one SmtpConnection; how each send ended."""
    async def scenario() -> list[Ending]:
        connection = SmtpConnection(relay_settings(port))
        try:
            return [Ending.of(await send_one(connection, recipient), connection) for recipient in recipients]
        finally:
            await connection.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(asyncio.wait_for(scenario(), 60))  # a reader that never wakes fails, not hangs


def offers_pipelining(port: int) -> bool:
    async def ask() -> bool:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.ehlo()
            return client.supports_extension("pipelining")

    return asyncio.run(ask())


def test_aiosmtpd_offering_pipelining_gets_the_three_commands_before_answering(aiosmtpd_relay):
    handler = PipeliningHandler()
    recipients = [f"reader{i}@example.com" for i in range(5)]

    endings = send_all(aiosmtpd_relay(handler), recipients)

    assert offers_pipelining(aiosmtpd_relay(PipeliningHandler()))
    assert [e.outcome for e in endings] == [Outcome.sent] * 5
    assert handler.recipients() == recipients
    assert handler.pipelined == [True] * 5
    assert handler.messages[0].raw == bytes(MESSAGE)


def test_the_pipelined_path_reads_its_replies_on_uvloop_too(aiosmtpd_relay):
    # uvloop (a loop written in C) keeps a protocol's bound methods from when it was attached;
    # the protocol becomes PreparedDataProtocol after connecting, so it must be attached again.
    handler = PipeliningHandler()
    recipients = [f"reader{i}@example.com" for i in range(3)]

    endings = send_all(aiosmtpd_relay(handler), recipients, loop_factory=uvloop.new_event_loop)

    assert [e.outcome for e in endings] == [Outcome.sent] * 3
    assert handler.pipelined == [True] * 3


def test_aiosmtpd_without_pipelining_is_sent_one_command_at_a_time(aiosmtpd_relay):
    handler = PipeliningHandler(offer=False)
    recipients = [f"reader{i}@example.com" for i in range(3)]

    endings = send_all(aiosmtpd_relay(handler), recipients)

    assert not offers_pipelining(aiosmtpd_relay(PipeliningHandler(offer=False)))
    assert [e.outcome for e in endings] == [Outcome.sent] * 3
    assert handler.recipients() == recipients
    assert handler.pipelined == [False] * 3


def test_aiosmtpd_refusals_are_classified_and_the_connection_reused(aiosmtpd_relay):
    handler = PipeliningHandler()
    handler.refuse = {"gone@example.com": "550 5.1.1 User unknown", "full@example.com": "450 4.2.2 Mailbox full"}

    endings = send_all(aiosmtpd_relay(handler),
                          ["a@example.com", "gone@example.com", "b@example.com", "full@example.com", "c@example.com"])

    assert [e.outcome for e in endings] == [Outcome.sent, Outcome.refused, Outcome.sent, Outcome.failed, Outcome.sent]
    assert endings[1].reply == "550 5.1.1 User unknown" and endings[3].reply == "450 4.2.2 Mailbox full"
    assert all(e.connection_kept for e in endings)
    assert handler.recipients() == ["a@example.com", "b@example.com", "c@example.com"]


def test_smtp_sink_offers_pipelining_and_takes_every_message(sinks):
    sink = sinks()
    recipients = [f"reader{i}@example.com" for i in range(5)]

    endings = send_all(sink.port, recipients)

    assert offers_pipelining(sink.port)
    assert [e.outcome for e in endings] == [Outcome.sent] * 5
    assert sorted(sink.recipients()) == recipients


def test_smtp_sink_421_mid_pipeline_closes_the_connection_and_reads_as_busy(sinks):
    sink = sinks("-Q", "RCPT")  # "421" and hang up on RCPT; the DATA already written is never answered

    endings = send_all(sink.port, ["a@example.com", "b@example.com"])

    assert offers_pipelining(sink.port)
    first = endings[0]
    assert (first.error, first.code, first.outcome, first.connection_kept) == \
        ("SMTPRecipientsRefused", None, Outcome.failed, False)
    assert first.reply.startswith("421")
    assert endings[1].reply.startswith("421"), "a fresh connection, refused the same way"
    assert sink.recipients() == []


def test_smtp_sink_hanging_up_mid_pipeline_is_a_dropped_connection(sinks):
    sink = sinks("-q", "DATA")

    endings = send_all(sink.port, ["a@example.com", "b@example.com"])

    assert [(e.error, e.outcome, e.connection_kept) for e in endings] == \
        [("SMTPServerDisconnected", Outcome.failed, False)] * 2
    assert sink.recipients() == []


def test_newsletter_send_through_a_pipelining_relay_with_refusals(env, store, aiosmtpd_relay):
    readers = [f"reader{i:02d}@example.com" for i in range(30)]
    store.add_subscribers([(address, "") for address in readers])
    handler = PipeliningHandler()
    handler.refuse = {readers[3]: "550 5.1.1 User unknown", readers[17]: "553 5.1.3 Bad address"}
    handler.refuse_once = {readers[5]: "451 4.3.0 Try again", readers[20]: "450 4.2.0 Greylisted"}
    port = aiosmtpd_relay(handler)

    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(),
                     env={**env, "NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SMTP_CONNECTIONS": "3"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert Counter(handler.recipients()) == Counter(r for r in readers if r not in (readers[3], readers[17]))
    assert all(handler.pipelined)
    assert "refused 2" in result.stdout
