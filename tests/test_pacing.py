"""Politeness per recipient domain, against a real in-process SMTP server that answers like Gmail
when it rate-limits: a deferral about one provider slows that provider only."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from newsletter.edition import send_edition
from .ports import free_port

from .conftest import SAMPLE_DATE, RecordingHandler

GMAIL_DEFERRAL = ("450 4.7.28 [192.0.2.25] Our system has detected an unusual rate of unsolicited mail "
                  "originating from your IP address. To protect our users from spam, mail sent from your IP "
                  "address has been temporarily rate limited.")


@dataclass
class ProviderHandler(RecordingHandler):
    """Defers the first `defer_first` recipients of `deferring` domain, always if it is None; notes arrival times."""

    deferring: str = "gmail.test"
    defer_first: int | None = 0
    deferred: int = 0
    arrivals: list[tuple[float, str]] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@" + self.deferring) and (self.defer_first is None or self.deferred < self.defer_first):
            self.deferred += 1
            return GMAIL_DEFERRAL
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        self.arrivals += [(time.monotonic(), rcpt) for rcpt in envelope.rcpt_tos]
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def provider(settings):
    handler = ProviderHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    yield handler, settings.model_copy(update={"smtp_port": port})
    controller.stop()


def add_readers(store, domain: str, count: int) -> list[str]:
    addresses = [f"reader{n}@{domain}" for n in range(count)]
    for address in addresses:
        store.add_subscriber(address, "")
    return addresses


def test_a_provider_that_defers_slows_only_its_own_domain(provider, store, caplog):
    handler, settings = provider
    handler.defer_first = 3
    everyone = []
    for n in range(6):  # interleaved, as a real list is
        for address in (f"g{n}@gmail.test", f"o{n}@other.test"):
            store.add_subscriber(address, "")
            everyone.append(address)

    with caplog.at_level(logging.INFO, logger="newsletter"):
        result = send_edition(settings, store, SAMPLE_DATE)

    report = result.report
    assert report.sent == 12 and report.failed == 0 and report.complete
    assert report.deferred == 3 and report.retried == 0, "a provider's deferral spends no attempt"
    assert report.connections == settings.smtp_connections, "the run as a whole was not slowed"
    assert sorted(handler.recipients()) == sorted(everyone)
    assert any("gmail.test asks us to slow down (450 4.7.28" in r.message for r in caplog.records)


def test_per_domain_rates_space_that_domains_messages(provider, store):
    handler, settings = provider
    settings = settings.model_copy(update={"domain_rate_limits": {"slow.test": 10.0}})
    slow = add_readers(store, "slow.test", 5)
    fast = add_readers(store, "fast.test", 10)

    result = send_edition(settings, store, SAMPLE_DATE)

    assert result.report.sent == 15
    times = sorted(t for t, rcpt in handler.arrivals if rcpt in slow)
    # 10 a second: 5 messages span 0.4 s at least (each arrives a few ms after its slot, unevenly).
    assert len(times) == 5 and times[-1] - times[0] >= 0.35, times
    assert sorted(r for _, r in handler.arrivals if r in fast) == sorted(fast)


def test_a_provider_that_never_relents_leaves_its_readers_for_the_next_run(provider, store):
    handler, settings = provider
    handler.defer_first = None
    settings = settings.model_copy(update={"retry_base_seconds": 0.01})
    stuck = add_readers(store, "gmail.test", 2)
    fine = add_readers(store, "other.test", 3)

    result = send_edition(settings, store, SAMPLE_DATE)

    assert result.report.sent == 3 and result.report.failed == 2 and not result.report.complete
    assert sorted(handler.recipients()) == sorted(fine)
    assert store.log.delivery_counts(store.get_issue(SAMPLE_DATE.isoformat()).id).get("failed") == len(stuck)


@dataclass
class CountingHandler(RecordingHandler):
    """Notes the most messages to one domain that were ever in DATA at once (each DATA takes 50 ms)."""

    in_flight: dict[str, int] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        domain = envelope.rcpt_tos[0].rpartition("@")[2]
        self.in_flight[domain] = self.in_flight.get(domain, 0) + 1
        self.most[domain] = max(self.most.get(domain, 0), self.in_flight[domain])
        await asyncio.sleep(0.05)
        self.in_flight[domain] -= 1
        return await super().handle_DATA(server, session, envelope)


def test_per_domain_connection_limits_cap_messages_in_flight(settings, store):
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        settings = settings.model_copy(update={"smtp_port": port, "smtp_connections": 6,
                                               "domain_connections": {"capped.test": 2}})
        capped = add_readers(store, "capped.test", 8)
        free = add_readers(store, "free.test", 8)
        result = send_edition(settings, store, SAMPLE_DATE)
    finally:
        controller.stop()
    assert result.report.sent == 16
    assert sorted(handler.recipients()) == sorted(capped + free)
    assert handler.most["capped.test"] <= 2
    assert handler.most["free.test"] > 2, "the other domain used the connections the capped one could not"
