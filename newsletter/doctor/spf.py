"""SPF (RFC 7208) evaluated for one address: would receivers let this relay send for this domain?

A small check_host() over dnspython: ip4, ip6, a, mx, include, exists, all, redirect=, with the
limit of 10 DNS-querying terms and 2 void lookups that receivers apply. `ptr` never matches here
(RFC 7208 says not to use it; receivers may skip it too). Macros (%{i} and the like) are not
expanded: a record using them is reported as not evaluated rather than guessed at.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

import dns.exception
import dns.resolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


class SpfResult(str, Enum):
    passed = "pass"
    fail = "fail"
    softfail = "softfail"
    neutral = "neutral"
    none = "none"
    permerror = "permerror"
    temperror = "temperror"


@dataclass(frozen=True)
class SpfVerdict:
    result: SpfResult
    why: str  # the term that decided, or what went wrong


class _Stop(Exception):
    """Evaluation ends with this result (an error: too many lookups, a bad term, DNS down)."""

    def __init__(self, result: SpfResult, why: str) -> None:
        super().__init__(why)
        self.result = result
        self.why = why


class SpfEvaluator:
    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self.lookups = 0
        self.void_lookups = 0

    def check_host(self, ip: Address, domain: str) -> SpfVerdict:
        """The SPF result of `domain`'s policy for mail from `ip`."""
        self.lookups = self.void_lookups = 0
        try:
            return self._check(ip, domain.rstrip(".").lower())
        except _Stop as stop:
            return SpfVerdict(stop.result, stop.why)

    def _check(self, ip: Address, domain: str) -> SpfVerdict:
        record = self.record(domain)
        if record is None:
            return SpfVerdict(SpfResult.none, f"{domain} publishes no SPF record")
        terms = record.split()[1:]
        redirect = None
        for term in terms:
            name, equals, value = term.partition("=")
            if equals and ":" not in name and "/" not in name:
                if name.lower() == "redirect":
                    redirect = value
                continue  # exp= and unknown modifiers change no result
            qualifier = term[0] if term[0] in QUALIFIERS else "+"
            mechanism = term[1:] if term[0] in QUALIFIERS else term
            if self._matches(ip, domain, mechanism):
                return SpfVerdict(SpfResult(QUALIFIERS[qualifier]), f"{term} in {domain}")
        if redirect is not None:
            self._count_lookup()
            target = self._domain_spec(redirect)
            verdict = self._check(ip, target)
            if verdict.result is SpfResult.none:
                raise _Stop(SpfResult.permerror, f"redirect={target} in {domain} names a domain without SPF")
            return verdict
        return SpfVerdict(SpfResult.neutral, f"no term of {domain} matched, and it has no 'all'")

    def record(self, domain: str) -> str | None:
        """The one v=spf1 TXT record of `domain`; None when it has none."""
        texts = self._txt(domain)
        records = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
        if len(records) > 1:
            raise _Stop(SpfResult.permerror, f"{domain} publishes {len(records)} SPF records; receivers "
                                             "reject them all: merge them into one")
        return records[0] if records else None

    def _matches(self, ip: Address, domain: str, mechanism: str) -> bool:
        kind = mechanism.split(":", 1)[0].split("/", 1)[0].lower()
        argument = mechanism.partition(":")[2]
        if kind == "all" and mechanism.lower() == "all":
            return True
        if kind in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(argument, strict=False)
            except ValueError:
                raise _Stop(SpfResult.permerror, f"{mechanism!r} in {domain} is not an address") from None
            return network.version == ip.version and ip in network
        if kind in ("a", "mx"):
            head, slash, cidr = mechanism.partition("/")
            target = self._domain_spec(head.partition(":")[2]) if ":" in head else domain
            prefix4, _, prefix6 = (slash + cidr)[1:].partition("//") if not cidr.startswith("/") \
                else ("", "", cidr[1:])
            prefix = (prefix4 if ip.version == 4 else prefix6) or ("32" if ip.version == 4 else "128")
            self._count_lookup()
            hosts = [target] if kind == "a" else self._mx_hosts(target)
            try:
                return any(ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)
                           for host in hosts for address in self._addresses(host, ip.version))
            except ValueError:
                raise _Stop(SpfResult.permerror, f"{mechanism!r} in {domain} has a bad prefix length") from None
        if kind == "include":
            self._count_lookup()
            verdict = self._check(ip, self._domain_spec(argument))
            if verdict.result is SpfResult.none:
                raise _Stop(SpfResult.permerror, f"include:{argument} in {domain} names a domain without SPF")
            if verdict.result in (SpfResult.permerror, SpfResult.temperror):
                raise _Stop(verdict.result, verdict.why)
            return verdict.result is SpfResult.passed
        if kind == "exists":
            self._count_lookup()
            return bool(self._addresses(self._domain_spec(argument), 4))
        if kind == "ptr":
            self._count_lookup()
            return False
        raise _Stop(SpfResult.permerror, f"{mechanism!r} in {domain} is not an SPF mechanism")

    def _domain_spec(self, text: str) -> str:
        if "%" in text:
            raise _Stop(SpfResult.permerror, f"{text!r} uses SPF macros, which this check does not expand: "
                                             "check the record with a full SPF validator")
        if not text:
            raise _Stop(SpfResult.permerror, "a term names an empty domain")
        return text.rstrip(".").lower()

    def _count_lookup(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _Stop(SpfResult.permerror, f"more than {MAX_LOOKUPS} DNS lookups (include, a, mx, exists, "
                                             "redirect): receivers stop there and treat it as an error")

    def _mx_hosts(self, domain: str) -> list[str]:
        answer = self._query(domain, "MX")
        return [str(r.exchange).rstrip(".").lower() for r in answer][:10]

    def _addresses(self, host: str, version: int) -> list[Address]:
        answer = self._query(host, "A" if version == 4 else "AAAA")
        return [ipaddress.ip_address(r.address) for r in answer]

    def _txt(self, domain: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._query(domain, "TXT")]

    def _query(self, name: str, kind: str) -> list:
        try:
            return list(self.resolver.resolve(name, kind))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self.void_lookups += 1
            if self.void_lookups > MAX_VOID_LOOKUPS:
                raise _Stop(SpfResult.permerror, f"more than {MAX_VOID_LOOKUPS} lookups found nothing "
                                                 f"(the last: {kind} {name})") from None
            return []
        except dns.exception.DNSException as exc:  # a timeout, no server answering, a name DNS cannot hold
            raise _Stop(SpfResult.temperror, f"DNS did not answer for {kind} {name}: {exc}") from None
