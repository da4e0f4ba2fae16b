"""deploy/nginx/newsletter.conf in front of a real `serve`, attacked with real requests over TLS.

Without a proxy, ten clients that send a request line and nothing more hold serve's connections,
and the answers uvicorn gives itself (a 1 MB URL, two Content-Lengths) carry none of our security
headers. With the shipped config, nginx cuts slow clients off and answers those requests itself,
with our headers and an Arabic page.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest

from newsletter.config import Settings
from .ports import free_port
from newsletter.web.app import create_app
from newsletter.web.security import SECURITY_HEADERS

from .conftest import LiveApp, ServeProcess
from .nginx import NginxProxy

SLOW_CLIENTS = 10
HEADER_TIMEOUT = 10  # client_header_timeout in the shipped config


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy-serve")
    settings = Settings(_env_file=None, database_url=f"sqlite:///{folder / 'subscribers.sqlite3'}",
                        base_url="https://news.example", secret_key="tests-only-key-0123456789-abcdefghijklmnop",
                        trusted_proxies="127.0.0.1", editorial_dir=str(folder / "editorial"))
    with LiveApp(create_app(settings)) as app:
        yield app


@pytest.fixture(scope="module")
def proxy(serve, certificate):
    nginx = NginxProxy(serve.port, *certificate)
    yield nginx
    nginx.stop()


def tls_socket(port: int, cert: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cert))
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")


def raw_exchange(port: int, cert: Path, request: bytes) -> tuple[int, dict[str, list[str]], str]:
    """Send bytes as they are (httpx would refuse to send a broken request) and read the answer."""
    with tls_socket(port, cert) as conn:
        try:
            conn.sendall(request)
        except OSError:  # nginx answers a request it refuses (a 1 MB URL) and closes before it has all of it
            pass
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except OSError:  # closed without TLS's close_notify, after its answer
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), headers, body.decode("utf-8", errors="replace")


def assert_our_headers(headers: dict[str, list[str]]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == [value], f"{name}: {headers.get(name.lower())}"


def test_serves_pages_through_the_proxy_with_our_headers_once(proxy, certificate):
    answer = httpx.get(f"{proxy.url}/", verify=ssl.create_default_context(cafile=str(certificate[0])))

    assert answer.status_code == 200 and 'dir="rtl"' in answer.text
    for name in SECURITY_HEADERS:
        assert len(answer.headers.get_list(name)) == 1, f"{name} once, not added twice"
    assert answer.headers.get("server") == "nginx", "no version named"


BROKEN_REQUESTS = {
    "a 1 MB URL": (b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    "two Content-Lengths": (b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                            b"Content-Length: 50\r\nConnection: close\r\n\r\nemail", 400),
    "a body over 256 KB": (b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded"
                           b"\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n", 413),
    "a header field over 8 KB": (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Junk: " + b"j" * 9000
                                 + b"\r\nConnection: close\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", BROKEN_REQUESTS)
def test_the_proxys_own_refusals_carry_our_headers_and_an_arabic_page(proxy, certificate, case):
    request, expected = BROKEN_REQUESTS[case]
    status, headers, body = raw_exchange(proxy.port, certificate[0], request)

    assert status == expected
    assert_our_headers(headers)
    assert 'lang="ar" dir="rtl"' in body and "تعذّر تنفيذ الطلب" in body
    assert "nginx" not in body


def test_serve_down_is_a_502_with_our_headers(serve, certificate):
    nowhere = NginxProxy(free_port(), *certificate)  # an upstream port nobody listens on
    try:
        status, headers, body = raw_exchange(nowhere.port, certificate[0],
                                             b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    finally:
        nowhere.stop()

    assert status == 502
    assert_our_headers(headers)
    assert "تعذّر تنفيذ الطلب" in body


def test_slow_clients_are_cut_off_while_readers_are_served(proxy, certificate):
    slow = [tls_socket(proxy.port, certificate[0]) for _ in range(SLOW_CLIENTS)]
    for conn in slow:
        conn.sendall(b"GET / HTTP/1.1\r\n")  # a request line, and nothing more, ever
    started = time.monotonic()

    reader = httpx.get(f"{proxy.url}/", verify=ssl.create_default_context(cafile=str(certificate[0])))
    assert reader.status_code == 200, "a reader is served while the slow clients wait"

    for conn in slow:
        conn.settimeout(max(1.0, HEADER_TIMEOUT * 3 - (time.monotonic() - started)))
        try:
            leftover = conn.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            leftover = b""
        except TimeoutError:
            pytest.fail(f"a slow client was still connected {HEADER_TIMEOUT * 3} s later")
        # nginx closes without an answer (or with a 408), never passing the request on to serve
        assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408"), leftover[:200]
        conn.close()


def test_serve_answers_503_beyond_its_connection_limit_and_closes_idle_keep_alives(env):
    """uvicorn's own limits, from the settings: what one serve holds, and how long an idle connection lasts."""
    serve = ServeProcess({**env, "NEWSLETTER_WEB_MAX_CONNECTIONS": "3", "NEWSLETTER_WEB_KEEP_ALIVE_SECONDS": "1"})
    with serve as client:
        held = [socket.create_connection(("127.0.0.1", serve.port), timeout=10) for _ in range(3)]
        try:
            over = httpx.get(f"http://127.0.0.1:{serve.port}/healthz", timeout=10)
        finally:
            for conn in held:
                conn.close()
        assert over.status_code == 503, "beyond the limit a request is refused at once, not queued"
        time.sleep(0.5)  # the held connections are gone
        assert client.get("/healthz").status_code == 200

        idle = socket.create_connection(("127.0.0.1", serve.port), timeout=10)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):  # the head and the body may come in two reads
            chunk = idle.recv(65536)
            assert chunk, f"closed before the whole answer came: {answer!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert idle.recv(65536) == b"", "an idle keep-alive connection is closed by serve"
        assert time.monotonic() - started < 5, "after NEWSLETTER_WEB_KEEP_ALIVE_SECONDS, not uvicorn's default"
        idle.close()
