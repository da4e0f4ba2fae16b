"""`newsletter doctor`: the install and the world around it, checked before the first send.

Each check is a small function returning `Check`s; `run_doctor` runs them (the network ones
side by side) and yields them in a fixed order. Nothing is sent, written or changed: the relay
sees EHLO, STARTTLS, AUTH and QUIT; the mailbox a login and a STATUS; the store two SELECTs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.resolver
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..config import Settings, load_settings
from ..errors import ConfigError
from ..store.database import Store
from .check import Check, failed, passed
from .install import check_clock, check_disk, check_feeds, check_schema, check_secret_key
from .records import check_dkim, check_dmarc, check_spf, make_resolver
from .servers import check_mailbox, check_relay, check_site

__all__ = ["Check", "run_doctor", "report_json"]


def _store_checks(settings: Settings) -> list[Check]:
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return [failed("schema", f"NEWSLETTER_DATABASE_URL: cannot parse {settings.database_url!r}",
                       "correct NEWSLETTER_DATABASE_URL")]
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not Path(url.database).exists():  # looked at, not created: the doctor changes nothing
        return [passed("schema", f"no database yet at {url.database}: the first command makes it"),
                passed("clock", "SQLite reads this host's clock"), check_disk(settings)]
    try:
        store = Store(settings.database_url, check_schema=False)
    except ConfigError as exc:
        return [failed("schema", str(exc), "correct NEWSLETTER_DATABASE_URL")]
    try:
        return [check_schema(store), check_clock(store), check_disk(settings)]
    finally:
        store.close()


def _dns_checks(settings: Settings, resolver: dns.resolver.Resolver | None) -> list[Check]:
    if resolver is None:
        return [failed("DNS", "this machine has no DNS server configured (/etc/resolv.conf)",
                       "set NEWSLETTER_DOCTOR_NAMESERVER to a resolver's address")]
    return [check_spf(settings, resolver), *check_dkim(settings, resolver), check_dmarc(settings, resolver)]


def _checks(settings: Settings, resolver: dns.resolver.Resolver | None) -> list[Callable[[], list[Check]]]:
    """Every check after the settings, in the order they are shown."""
    return [
        lambda: [check_secret_key(settings)],
        lambda: _store_checks(settings),
        lambda: check_feeds(settings),
        lambda: check_relay(settings),
        lambda: _dns_checks(settings, resolver),
        lambda: [check_mailbox(settings)],
        lambda: [check_site(settings)],
    ]


def run_doctor(load: Callable[[], Settings] = load_settings,
               resolver: dns.resolver.Resolver | None = None) -> Iterator[Check]:
    """Every check, in order; the settings first, and nothing else when they do not load."""
    try:
        settings = load()
    except ConfigError as exc:
        yield failed("settings", str(exc), "correct it in .env (every setting is explained in .env.example)")
        return
    yield passed("settings", "loaded from .env and the environment")
    if resolver is None:
        try:
            resolver = make_resolver(settings)
        except dns.resolver.NoResolverConfiguration:
            resolver = None
    checks = _checks(settings, resolver)
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        for found in pool.map(lambda check: check(), checks):
            yield from found


def report_json(checks: list[Check]) -> dict[str, object]:
    return {"ok": all(c.ok is not False for c in checks), "checks": [c.as_json() for c in checks]}
