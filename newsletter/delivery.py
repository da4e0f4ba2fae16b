"""Send the issue to every subscriber who still needs it, over a pool of SMTP connections.

Pipeline (as in listmonk): claim subscribers from the store in keyset batches
→ a bounded queue → `SMTP_CONNECTIONS` workers, each holding one persistent
aiosmtplib connection → outcomes written back to the delivery log in batches.
Memory is bounded by the queue, whatever the list size.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib

from .config import Settings, SmtpTls
from .errors import ConfigError, NewsletterError
from .message import MessageTemplate, Recipient, ascii_address
from .store import Outcome, Store

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3


class SmtpUnavailableError(NewsletterError):
    """The SMTP server cannot be reached at all; nothing more can be sent now."""

    exit_code = 75


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    refused: int = 0
    started: float = 0.0
    finished: float = 0.0
    interrupted: bool = False

    @property
    def attempted(self) -> int:
        return self.sent + self.failed + self.refused

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed

    @property
    def complete(self) -> bool:
        return self.failed == 0 and not self.interrupted


ProgressCallback = Callable[[DeliveryReport], None]


def classify(exc: Exception) -> tuple[Outcome, str]:
    """Transient (retry later) or permanent (the server refused for good), by reply code."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        outcome = Outcome.refused if 500 <= exc.code < 600 else Outcome.failed
        return outcome, f"{exc.code} {exc.message}".strip()
    return Outcome.failed, f"{type(exc).__name__}: {exc}".strip()


class SmtpConnection:
    """One persistent connection, reopened when the server drops it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None

    async def open(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_tls is SmtpTls.tls,
            start_tls=True if s.smtp_tls is SmtpTls.starttls else False,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            timeout=s.smtp_timeout,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
        )
        last_error: Exception | None = None
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                await client.connect()
                self.client = client
                return client
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise ConfigError(
                    f"SMTP login refused by {s.smtp_host}:{s.smtp_port} ({exc.code} {exc.message}); "
                    "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
                ) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                last_error = exc
                await asyncio.sleep(0.5 * 2**attempt)
        raise SmtpUnavailableError(f"cannot connect to SMTP server {s.smtp_host}:{s.smtp_port}: {last_error}")

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        if self.client is None or not self.client.is_connected:
            await self.open()
        assert self.client is not None
        try:
            await self.client.sendmail(sender, [recipient], message)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
            # The server closed an idle or exhausted connection: one fresh try.
            self.client = None
            await self.open()
            await self.client.sendmail(sender, [recipient], message)

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.client.close()
        self.client = None


class OutcomeWriter:
    """Group commit for the delivery log.

    A worker waits until its outcome is written before it takes the next
    subscriber, so a crash can repeat at most one message per connection;
    meanwhile every outcome that arrives during one write goes into the next
    single transaction, so the log costs one commit per round, not per message.
    """

    def __init__(self, store: Store, issue_id: int, run_id: str, on_written: Callable[[], None]) -> None:
        self.store = store
        self.issue_id = issue_id
        self.run_id = run_id
        self.on_written = on_written
        self._pending: list[tuple[int, Outcome, str]] = []
        self._waiters: list[asyncio.Future] = []
        self._wakeup = asyncio.Event()
        self._closed = False

    async def record(self, subscriber_id: int, outcome: Outcome, reply: str) -> None:
        done = asyncio.get_running_loop().create_future()
        self._pending.append((subscriber_id, outcome, reply))
        self._waiters.append(done)
        self._wakeup.set()
        await done

    async def run(self) -> None:
        while not (self._closed and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = [], []
            if not batch:
                continue
            try:
                await asyncio.to_thread(self.store.record_outcomes, self.issue_id, self.run_id, batch)
            except BaseException as exc:
                for waiter in waiters:
                    waiter.set_exception(exc) if not waiter.done() else None
                raise
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.on_written()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


class Sender:
    """Delivers one frozen issue to the subscribers who have not had it yet."""

    def __init__(self, store: Store, template: MessageTemplate, issue_id: int, settings: Settings,
                 on_progress: ProgressCallback | None = None) -> None:
        self.store = store
        self.template = template
        self.issue_id = issue_id
        self.settings = settings
        self.on_progress = on_progress or (lambda report: None)
        self.run_id = uuid.uuid4().hex
        self.report = DeliveryReport()
        self._fatal: NewsletterError | None = None
        # A run whose heartbeat is older than stale_run_seconds was killed;
        # other runs take its claims over.
        self.stale_after = dt.timedelta(seconds=settings.stale_run_seconds)
        self.heartbeat_seconds = settings.stale_run_seconds / 6
        self._writer = OutcomeWriter(store, issue_id, self.run_id, lambda: self.on_progress(self.report))

    async def run(self) -> DeliveryReport:
        self.report.started = time.monotonic()
        owner = f"{socket.gethostname()} pid {os.getpid()}"
        await asyncio.to_thread(self.store.start_run, self.issue_id, self.run_id, owner)
        heartbeat = asyncio.create_task(self._heartbeat())
        writer = asyncio.create_task(self._writer.run())
        queue: asyncio.Queue[Recipient | None] = asyncio.Queue(maxsize=self.settings.smtp_connections * 4)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.settings.smtp_connections)]
        try:
            await self._produce(queue)
        except asyncio.CancelledError:
            # Ctrl-C or SIGTERM: messages in flight finish, queued ones go back.
            self.report.interrupted = True
            _drain(queue)
        finally:
            for _ in workers:
                await queue.put(None)
            results = await asyncio.gather(*workers, return_exceptions=True)
            self._writer.close()
            await writer
            heartbeat.cancel()
            released = await asyncio.to_thread(self.store.release_claims, self.issue_id, self.run_id)
            await asyncio.to_thread(self.store.finish_run, self.run_id)
            self.report.interrupted = self.report.interrupted or released > 0
            self.report.finished = time.monotonic()
            self.on_progress(self.report)
        for result in results:
            if isinstance(result, NewsletterError) and self._fatal is None:
                self._fatal = result
        if self._fatal is not None:
            raise self._fatal
        return self.report

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await asyncio.to_thread(self.store.heartbeat, self.run_id)

    async def _produce(self, queue: asyncio.Queue) -> None:
        """Claim and queue everyone who needs the issue; then wait for claims other runs hold.

        A concurrent run settles its own claims; a killed run's claims go
        stale after NEWSLETTER_STALE_RUN_SECONDS and the next pass takes them over.
        """
        while self._fatal is None:
            await self._produce_pass(queue)
            if self._fatal is not None or not await asyncio.to_thread(
                self.store.claimed_by_others, self.issue_id, self.run_id
            ):
                return
            log.info("waiting for subscribers claimed by another send (concurrent or killed run)")
            await asyncio.sleep(self.heartbeat_seconds)

    async def _produce_pass(self, queue: asyncio.Queue) -> None:
        after_id = 0
        while self._fatal is None:
            claimed, after_id_next = await asyncio.to_thread(
                self.store.claim_batch, self.issue_id, self.run_id, after_id, self.settings.batch_size, self.stale_after
            )
            if after_id_next == after_id:
                return
            after_id = after_id_next
            for subscriber in claimed:
                if self._fatal is not None:
                    return
                await queue.put(Recipient(subscriber.id, subscriber.email, subscriber.name))

    async def _worker(self, queue: asyncio.Queue) -> None:
        connection = SmtpConnection(self.settings)
        try:
            while True:
                recipient = await queue.get()
                if recipient is None or self._fatal is not None:
                    return
                await self._deliver_one(connection, recipient)
        except NewsletterError as exc:
            self._fatal = exc
            _drain(queue)  # the producer sees the failure and stops feeding us
        finally:
            await connection.close()

    async def _deliver_one(self, connection: SmtpConnection, recipient: Recipient) -> None:
        message = self.template.personalise(recipient)
        try:
            await connection.send(self.template.envelope_from, ascii_address(recipient.email), message)
        except NewsletterError:
            raise
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            outcome, reply = classify(exc)
            log.info("%s: %s", recipient.email, reply)
        else:
            outcome, reply = Outcome.sent, "250 OK"
        counter = {Outcome.sent: "sent", Outcome.failed: "failed", Outcome.refused: "refused"}[outcome]
        setattr(self.report, counter, getattr(self.report, counter) + 1)
        await self._writer.record(recipient.id, outcome, reply)


def _drain(queue: asyncio.Queue) -> None:
    while not queue.empty():
        queue.get_nowait()
