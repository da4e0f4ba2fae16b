"""What the world's DNS says about our mail: SPF covers the relay, DKIM holds our key, DMARC exists.

Read with dnspython from the system's resolvers, or from NEWSLETTER_DOCTOR_NAMESERVER.
"""

from __future__ import annotations

import ipaddress
import socket

import dns.exception
import dns.resolver

from ..config import Settings, nameserver_address
from ..errors import ConfigError
from ..mail.dkim import dkim_keys
from .check import Check, failed, passed, skipped
from .spf import Address, SpfEvaluator, SpfResult

DNS_LIFETIME_SECONDS = 5.0


def make_resolver(settings: Settings) -> dns.resolver.Resolver:
    if settings.doctor_nameserver:
        host, port = nameserver_address(settings.doctor_nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [host], port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = DNS_LIFETIME_SECONDS
    return resolver


def envelope_domain(settings: Settings) -> str:
    """The domain SPF is checked for: the bounce address's (VERP) or else the From address's."""
    return (settings.bounce_address or settings.from_address).rpartition("@")[2].lower()


def relay_addresses(settings: Settings) -> list[Address]:
    """The relay's addresses as this host reaches it (what NEWSLETTER_SMTP_HOST resolves to)."""
    try:
        return [ipaddress.ip_address(settings.smtp_host)]
    except ValueError:
        infos = socket.getaddrinfo(settings.smtp_host, settings.smtp_port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def check_spf(settings: Settings, resolver: dns.resolver.Resolver) -> Check:
    domain = envelope_domain(settings)
    try:
        addresses = relay_addresses(settings)
    except OSError as exc:
        return failed("SPF", f"cannot resolve the relay {settings.smtp_host}: {exc}",
                      "check NEWSLETTER_SMTP_HOST")
    # Receivers see the address the relay sends from. A public one must be covered, each of them
    # (IPv4 and IPv6 alike); a private one (a Postfix on this machine) never reaches them: its
    # public address, which this host cannot see, is what the record must name.
    public = [a for a in addresses if a.is_global]
    private = not public
    evaluator = SpfEvaluator(resolver)
    verdicts = [(address, evaluator.check_host(address, domain)) for address in public or addresses]
    for address, verdict in verdicts:
        term = f"ip{address.version}:{address}" if not private else "ip4:<the relay's public address>"
        if verdict.result is SpfResult.none:
            return failed("SPF", f"{domain} publishes no SPF record",
                          f'publish {domain}. IN TXT "v=spf1 {term} -all"')
        if verdict.result is SpfResult.permerror:
            return failed("SPF", f"the SPF record of {domain} is broken: {verdict.why}",
                          f"correct the SPF record of {domain}")
        if verdict.result is SpfResult.temperror:
            return failed("SPF", verdict.why, "check that DNS answers from this machine, then run doctor again")
    shown = ", ".join(str(a) for a in addresses)
    relay = shown if shown == settings.smtp_host else f"{settings.smtp_host} ({shown})"
    if private:
        if any(v.result is SpfResult.passed for _, v in verdicts):
            return passed("SPF", f"{domain} lets the relay {relay} send for it; a private address: the relay's "
                                 "public address, the one receivers see, must be covered too")
        address, verdict = verdicts[0]
        return failed("SPF", f"the relay {relay} is on a private address, not covered by the SPF of {domain} "
                             f"({verdict.result.value}: {verdict.why}); receivers see its public address",
                      f"add the relay's public address (ip4:…) to the SPF record of {domain}")
    for address, verdict in verdicts:
        if verdict.result is not SpfResult.passed:
            return failed("SPF", f"relay {address} not covered by the SPF of {domain} ({verdict.result.value}: "
                                 f"{verdict.why})", f"add ip{address.version}:{address} to the SPF record of {domain}")
    return passed("SPF", f"{domain} lets the relay {relay} send for it")


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for item in record.split(";"):
        name, equals, value = item.partition("=")
        if equals:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _txt(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT strings at `name` (each record's parts joined); [] when there are none."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def check_dkim(settings: Settings, resolver: dns.resolver.Resolver) -> list[Check]:
    try:
        keys = dkim_keys(settings)
    except ConfigError as exc:
        return [failed("DKIM", str(exc), "correct the NEWSLETTER_DKIM_* settings")]
    if not keys:
        return [skipped("DKIM", "the app does not sign (NEWSLETTER_DKIM_* empty): your relay must sign with d="
                        f"{settings.dkim_domain or settings.sender_domain}")]
    domain = settings.dkim_domain or settings.sender_domain
    checks = []
    for key in keys:
        name = f"{key.selector}._domainkey.{domain}"
        kind, public = key.public_tags
        label = f"DKIM {key.selector}"
        fix = f"publish what `newsletter dkim` prints: {name}. IN TXT \"v=DKIM1; k={kind}; p={public[:12]}…\""
        try:
            records = [r for r in _txt(resolver, name) if "p=" in r]
        except dns.exception.DNSException as exc:
            checks.append(failed(label, f"DNS did not answer for {name}: {exc}", "check DNS, then run doctor again"))
            continue
        if not records:
            checks.append(failed(label, f"no DKIM record at {name}", fix))
            continue
        tags = _tags(records[0])
        published_kind = tags.get("k", "rsa").lower()
        if len(records) > 1:
            checks.append(failed(label, f"{len(records)} DKIM records at {name}: receivers may pick either",
                                 "keep only the one of the configured key"))
        elif not tags.get("p"):
            checks.append(failed(label, f"the key at {name} is revoked (empty p=)", fix))
        elif tags["p"] != public or published_kind != kind:
            checks.append(failed(label, f"the {published_kind} key published at {name} is not the {kind} key in "
                                        f"NEWSLETTER_DKIM_{'ED25519' if kind == 'ed25519' else 'RSA'}_KEY_FILE: "
                                        "receivers will reject every signature", fix))
        else:
            checks.append(passed(label, f"{name} publishes the configured {kind} key"))
    return checks


DMARC_POLICIES = {
    "none": "receivers deliver mail that fails DMARC as usual and only report it",
    "quarantine": "receivers put mail that fails DMARC in spam",
    "reject": "receivers refuse mail that fails DMARC",
}


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    if mode == "s":
        return domain == from_domain
    # Relaxed: the same organisational domain; approximated by one being a subdomain of the other.
    return domain == from_domain or domain.endswith("." + from_domain) or from_domain.endswith("." + domain)


def check_dmarc(settings: Settings, resolver: dns.resolver.Resolver) -> Check:
    from_domain = settings.sender_domain.lower()
    labels = from_domain.split(".")
    records: list[str] = []
    where = from_domain
    try:
        # Not at the From domain: receivers look at its organisational domain (a parent) instead.
        for start in range(len(labels) - 1):
            where = ".".join(labels[start:])
            records = [r for r in _txt(resolver, f"_dmarc.{where}") if r.lower().startswith("v=dmarc1")]
            if records:
                break
    except dns.exception.DNSException as exc:
        return failed("DMARC", f"DNS did not answer for _dmarc.{from_domain}: {exc}", "check DNS, then run again")
    example = f'publish _dmarc.{from_domain}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@{from_domain}"'
    if not records:
        return failed("DMARC", f"{from_domain} publishes no DMARC record: Gmail and Yahoo refuse bulk mail without one",
                      example)
    if len(records) > 1:
        return failed("DMARC", f"_dmarc.{where} has {len(records)} DMARC records: receivers ignore them all",
                      "keep one")
    tags = _tags(records[0])
    policy = tags.get("p", "").lower() if where == from_domain else tags.get("sp", tags.get("p", "")).lower()
    if policy not in DMARC_POLICIES:
        return failed("DMARC", f"_dmarc.{where} has no valid p= ({records[0]!r})", example)
    spf_ok = _aligned(envelope_domain(settings), from_domain, tags.get("aspf", "r").lower())
    dkim_domain = (settings.dkim_domain or from_domain).lower()
    signs = settings.signs_dkim
    dkim_ok = signs and _aligned(dkim_domain, from_domain, tags.get("adkim", "r").lower())
    reports = f", reports to {tags['rua']}" if tags.get("rua") else ", no aggregate reports (rua=)"
    inherited = f" (of {where}, its parent)" if where != from_domain else ""
    meaning = f"p={policy}{inherited}: {DMARC_POLICIES[policy]}{reports}"
    if not spf_ok and signs and not dkim_ok:
        return failed("DMARC", f"{meaning}; but neither the bounce domain {envelope_domain(settings)} (SPF) nor "
                               f"the DKIM d={dkim_domain} is aligned with {from_domain}: every issue fails DMARC",
                      f"sign with NEWSLETTER_DKIM_DOMAIN={from_domain}, or use a bounce address at {from_domain}")
    aligned = " and ".join(filter(None, ["SPF" if spf_ok else "", "DKIM" if dkim_ok else ""])) or \
        f"only what the relay signs with d={from_domain}"
    return passed("DMARC", f"{meaning}; aligned with From: {aligned}")
