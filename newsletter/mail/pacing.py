"""Politeness per recipient domain: what one inbox provider asks of us slows that provider only.

A deferral that is about one provider, a 4.7.x reply (Gmail's "450 4.7.28 … rate limited") or
a reply naming the recipient's domain, pauses that domain with a growing backoff while the other
domains go on at full speed; a delivery there ends the pause. Optional per-domain limits space
that domain's messages (NEWSLETTER_DOMAIN_RATE_LIMITS, messages a second) and cap how many are in
flight at once (NEWSLETTER_DOMAIN_CONNECTIONS). Messages for a domain that must wait are put back
in the queue rather than holding a connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import aiosmtplib

from .smtp import backoff

MAX_PAUSE_SECONDS = 300.0
# How soon a message for a domain at its in-flight limit looks again (one finishes in milliseconds).
BUSY_DOMAIN_RECHECK_SECONDS = 0.02
_ENHANCED_47 = re.compile(r"\b4\.7\.\d{1,3}\b")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def is_domain_deferral(exc: BaseException, domain: str) -> bool:
    """A temporary refusal that is about the recipient's provider, not about us or the relay."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    code = getattr(exc, "code", None)
    if not isinstance(exc, aiosmtplib.SMTPResponseException) or code is None or not 400 <= code < 500:
        return False
    message = str(exc.message).lower()
    return bool(_ENHANCED_47.search(message)) or domain in message


@dataclass
class _DomainState:
    strikes: int = 0
    paused_until: float = 0.0
    next_slot: float = 0.0
    in_flight: int = 0


@dataclass
class DomainPacing:
    """Per-domain pauses (after deferrals) and rate limits, on the event loop's clock."""

    retry_base_seconds: float
    rate_limits: dict[str, float] = field(default_factory=dict)
    connection_limits: dict[str, int] = field(default_factory=dict)
    _domains: dict[str, _DomainState] = field(default_factory=dict)

    def wait_before(self, domain: str, now: float) -> float:
        """0 when a message to `domain` may go now (it then holds a rate slot and an in-flight place
        until `finished`), else seconds to wait."""
        state = self._domains.get(domain)
        if state is None and domain not in self.rate_limits and domain not in self.connection_limits:
            return 0.0
        state = state or self._domains.setdefault(domain, _DomainState())
        if state.paused_until > now:
            return state.paused_until - now
        limit = self.connection_limits.get(domain)
        if limit and state.in_flight >= limit:
            return BUSY_DOMAIN_RECHECK_SECONDS
        rate = self.rate_limits.get(domain)
        if rate:
            if state.next_slot > now:
                return state.next_slot - now
            state.next_slot = now + 1.0 / rate
        state.in_flight += 1
        return 0.0

    def finished(self, domain: str) -> None:
        """A message that `wait_before` let go is done with (sent, refused, put back or skipped)."""
        state = self._domains.get(domain)
        if state is not None and state.in_flight:
            state.in_flight -= 1

    def deferred(self, domain: str, now: float) -> float:
        """The provider asked us to slow down: pause the domain; returns the pause in seconds."""
        state = self._domains.setdefault(domain, _DomainState())
        if state.paused_until <= now:  # deferrals of messages already in flight count once
            state.strikes += 1
            pause = min(backoff(state.strikes, max(self.retry_base_seconds, 0.01)), MAX_PAUSE_SECONDS)
            state.paused_until = now + pause
        return state.paused_until - now

    def delivered(self, domain: str) -> None:
        state = self._domains.get(domain)
        if state is not None:
            state.strikes = 0
