"""The signup rate limit holds: behind trusted proxies only, across workers, in bounded memory."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import signal
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import func, select

from .ports import free_port
from newsletter.web.ratelimit import bucket_of, client_address
from newsletter.store.schema import rate_counts

from .conftest import PROJECT
from .test_web import live_site

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1")]


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("198.51.100.9", "203.0.113.7", "198.51.100.9"),  # not a proxy of ours: its header is ignored
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "1.1.1.1, 2.2.2.2, 203.0.113.7", "203.0.113.7"),  # what the client wrote on the left is ignored
    ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),  # through two proxies of ours
    ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # only our proxies: the left-most is the origin
    ("127.0.0.1", "garbage, 203.0.113.7:5123", "203.0.113.7"),
    ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
    ("::ffff:127.0.0.1", "203.0.113.7", "203.0.113.7"),  # a dual-stack socket's view of the proxy at 127.0.0.1
])
def test_the_client_is_the_right_most_address_that_is_not_a_trusted_proxy(peer, forwarded, client):
    assert client_address(peer, forwarded, PROXIES) == client


def test_ipv6_clients_are_limited_by_their_64():
    assert bucket_of("2001:db8:1:2:aaaa::1") == bucket_of("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert bucket_of("2001:db8:1:3::1") != bucket_of("2001:db8:1:2::1")
    assert bucket_of("::ffff:203.0.113.7") == bucket_of("203.0.113.7") == "203.0.113.7"


def signup(client: httpx.Client, n: int, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/subscribe", json={"email": f"r{n}@example.com"}, headers=headers).status_code


def test_without_trusted_proxies_a_forged_forwarded_for_buys_nothing(settings):
    limited = settings.model_copy(update={"signup_rate_limit": 2})
    with live_site(limited) as server, httpx.Client(base_url=server.url) as client:
        codes = [signup(client, n, forwarded_for=f"203.0.113.{n}") for n in range(4)]
    assert codes == [202, 202, 429, 429]


def test_behind_a_trusted_proxy_each_reader_has_their_own_limit(settings, store):
    limited = settings.model_copy(update={"signup_rate_limit": 2, "trusted_proxies": LOOPBACK})
    with live_site(limited) as server, httpx.Client(base_url=server.url) as client:
        first = [signup(client, n, "203.0.113.7") for n in range(3)]
        # The same reader writing made-up hops before the proxy's entry is still the same reader.
        spoofed = [signup(client, 10 + n, f"198.51.100.{n}, 203.0.113.7") for n in range(2)]
        other = [signup(client, 20 + n, "203.0.113.8") for n in range(2)]
    assert first == [202, 202, 429]
    assert spoofed == [429, 429]
    assert other == [202, 202]
    assert store.count_subscribers() == 4


def test_two_app_processes_share_one_limit_through_the_store(settings, store):
    limited = settings.model_copy(update={"signup_rate_limit": 3})
    with live_site(limited) as one, live_site(limited) as two, \
            httpx.Client(base_url=one.url) as a, httpx.Client(base_url=two.url) as b:
        codes = [signup((a, b)[n % 2], n) for n in range(8)]
    assert codes.count(202) == 3 and codes[:3] == [202, 202, 202]
    assert store.count_subscribers() == 3


def test_idle_clients_are_forgotten(settings, store):
    short = settings.model_copy(update={"signup_rate_limit": 5, "signup_rate_window_seconds": 1,
                                        "trusted_proxies": LOOPBACK})
    with live_site(short) as server, httpx.Client(base_url=server.url) as client:
        for n in range(60):
            assert signup(client, n, f"198.51.100.{n}") == 202
        with store.engine.connect() as conn:
            # Clients of the last two windows are still counted (a slow machine's burst spans several).
            assert conn.execute(select(func.count()).select_from(rate_counts)).scalar_one() >= 20
        time.sleep(2.2)  # two windows later, those clients are idle
        assert signup(client, 100, "203.0.113.1") == 202
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rate_counts)).scalar_one() == 1


def test_serve_with_several_workers_keeps_one_limit(env, store):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port), "--workers", "2"],
        env={**env, "NEWSLETTER_SIGNUP_RATE_LIMIT": "3"}, cwd=PROJECT / "tests",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        codes = []
        for n in range(8):  # a new connection each time: the kernel spreads them over the workers
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                codes.append(signup(client, n))
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert codes.count(202) == 3, output
    assert store.count_subscribers() == 3
    assert "2 worker(s)" in output and "Traceback" not in output


def test_a_proxy_that_adds_its_own_forwarded_for_line_is_read_right(settings):
    # HAProxy's `option forwardfor` adds a second header line rather than extending the client's.
    limited = settings.model_copy(update={"signup_rate_limit": 2, "trusted_proxies": LOOPBACK})
    with live_site(limited) as server, httpx.Client(base_url=server.url) as client:
        codes = [client.post("/subscribe", json={"email": f"r{n}@example.com"},
                             headers=[("X-Forwarded-For", f"198.51.100.{n}"),
                                      ("X-Forwarded-For", "203.0.113.9")]).status_code for n in range(4)]
    assert codes == [202, 202, 429, 429]


def test_a_flood_of_clients_over_the_limit_gets_429s_never_500s(settings):
    limited = settings.model_copy(update={"signup_rate_limit": 1, "trusted_proxies": LOOPBACK})
    with live_site(limited) as server:
        def burst(n: int) -> int:
            with httpx.Client(base_url=server.url) as client:
                return signup(client, n, f"198.51.100.{n % 20}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(burst, range(200)))
    assert set(codes) <= {202, 429} and codes.count(202) == 20


def test_retry_after_is_long_enough_and_no_longer(settings):
    limited = settings.model_copy(update={"signup_rate_limit": 2, "signup_rate_window_seconds": 2})
    with live_site(limited) as server, httpx.Client(base_url=server.url) as client:
        assert [signup(client, n) for n in range(2)] == [202, 202]
        refused = client.post("/subscribe", json={"email": "r2@example.com"})
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 4
        time.sleep(wait)
        assert signup(client, 3) == 202, "a client that waits as told gets in"
