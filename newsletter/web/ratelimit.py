"""Who is asking, and how often: the rate limits of `newsletter serve` (signups, the desk's sign-ins).

The client is the socket peer, unless the peer is one of NEWSLETTER_TRUSTED_PROXIES:
then X-Forwarded-For is read from the right, skipping trusted proxies, and the
first address that is not one is the client (what a client writes further
left is its own invention). Counts live in the store (see `Store.count_request`),
so all workers and machines share one limit; a client found over the limit is
remembered in a bounded in-process cache, so a flood costs no database writes.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Sequence

from cachetools import TTLCache

from ..store.database import Store

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
BLOCKED_CLIENTS_CACHED = 100_000


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [2001:db8::1]:443
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # 203.0.113.7:51234
        value = value.split(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Sequence[Network]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket is the proxy at 127.0.0.1
    return address is not None and any(address in network for network in proxies)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: Sequence[Network]) -> str:
    """The address a request came from, seen through the trusted proxies only."""
    if not forwarded_for or not _trusted(_ip(peer), trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _ip(hop)
        if not _trusted(address, trusted_proxies):
            return str(address) if address is not None else hop[:64]
    return hops[0] if hops else peer  # every hop is a proxy of ours: the left-most is the origin


def bucket_of(client: str) -> str:
    """The unit that is limited: an IPv4 address, or an IPv6 /64 (one subscriber line holds a whole /64)."""
    address = _ip(client)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address) if address is not None else client[:64]


class SignupLimiter:
    """At most `limit` signups per client per sliding window of `window_seconds`.

    A sliding-window counter: this window's hits plus last window's, weighted by
    how much of it still overlaps the sliding window.
    """

    def __init__(self, store: Store, limit: int, window_seconds: int, name: str = "signup") -> None:
        """`name` keeps this limit's counts apart from the others' in the shared store."""
        self.store = store
        self.name = name
        self.limit = limit
        self.window = window_seconds
        # bucket → monotonic time until which it is refused without asking the store;
        # TTLCache is not thread-safe and requests run in Starlette's thread pool.
        self._blocked: TTLCache[str, float] = TTLCache(maxsize=BLOCKED_CLIENTS_CACHED, ttl=2 * window_seconds)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """0 when the request may go ahead (and counts it), else seconds to wait. Blocking: run in a thread."""
        bucket = f"{self.name}:{bucket_of(client)}"
        with self._lock:
            blocked_for = self._blocked.get(bucket, 0.0) - time.monotonic()
        if blocked_for > 0:
            return max(1, math.ceil(blocked_for))
        now, hits, previous = self.store.count_request(bucket, self.window)
        elapsed = now % self.window
        estimate = previous * (1 - elapsed / self.window) + hits
        if estimate <= self.limit:
            return 0
        wait = max(1, math.ceil(self._seconds_until_allowed(elapsed, hits, previous)))
        with self._lock:
            self._blocked[bucket] = time.monotonic() + wait
        return wait

    def _seconds_until_allowed(self, elapsed: float, hits: int, previous: int) -> float:
        """How long until a retry, which counts as a hit of its own, fits under the sliding estimate."""
        window, limit = self.window, self.limit
        if hits + 1 <= limit and previous:
            # Still in this window, as last window's share fades:
            # previous·(1 − (elapsed + t)/W) + hits + 1 ≤ limit.
            return max(0.0, window * (1 - (limit - hits - 1) / previous) - elapsed)
        # In the next window, where this window's hits fade: hits·(1 − t′/W) + 1 ≤ limit.
        return (window - elapsed) + window * (1 - (limit - 1) / hits)
