"""The servers the newsletter talks to: the relay (no mail sent), the bounce mailbox, the public site."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from urllib.parse import urlsplit

import aiosmtplib
import httpx
from imapclient.exceptions import IMAPClientError, LoginError

from ..config import Settings, SmtpTls
from ..mail.imap_reports import _reason, log_in
from .check import Check, failed, passed, skipped

# A doctor answers in seconds: a server silent this long is as good as down for it.
SERVER_TIMEOUT_SECONDS = 10.0


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    if isinstance(exc, (aiosmtplib.SMTPConnectTimeoutError, aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError)):
        return "no answer in time"
    if isinstance(exc.__cause__, OSError):
        return _reason(exc.__cause__)
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_certificate_problem(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def _relay_checks(s: Settings) -> list[Check]:
    where = f"{s.smtp_host}:{s.smtp_port}"
    client = aiosmtplib.SMTP(hostname=s.smtp_host, port=s.smtp_port, use_tls=s.smtp_tls is SmtpTls.tls,
                             start_tls=False, timeout=min(s.smtp_timeout, SERVER_TIMEOUT_SECONDS),
                             cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None)
    tls_fix = ("set NEWSLETTER_SMTP_CA_FILE to the CA that signed the relay's certificate, or connect by the "
               "name in its certificate")
    try:
        greeting = await client.connect()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        if _is_certificate_problem(exc):
            return [failed("relay", f"{where}: its TLS certificate is not trusted ({_why(exc)})", tls_fix)]
        return [failed("relay", f"{where} does not answer: {_why(exc)}", "check NEWSLETTER_SMTP_HOST, "
                       "NEWSLETTER_SMTP_PORT and NEWSLETTER_SMTP_TLS, and that the relay runs")]
    try:
        return await _converse(client, s, where, greeting.message, tls_fix)
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


async def _converse(client: aiosmtplib.SMTP, s: Settings, where: str, greeting: str, tls_fix: str) -> list[Check]:
    try:
        await client.ehlo()
    except (aiosmtplib.SMTPException, OSError) as exc:
        return [failed("relay", f"{where} refuses EHLO: {_why(exc)}", "ask the relay's administrator")]
    checks = [passed("relay", f"{where} answers EHLO ({greeting.splitlines()[0] if greeting else 'no banner'})")]
    checks.append(await _tls(client, s, where, tls_fix))
    if checks[-1].ok is False:
        return checks
    checks.append(await _login(client, s, where))
    return checks


async def _tls(client: aiosmtplib.SMTP, s: Settings, where: str, tls_fix: str) -> Check:
    if s.smtp_tls is SmtpTls.tls:
        return passed("relay TLS", f"TLS from the first byte with a trusted certificate ({_tls_version(client)})")
    if s.smtp_tls is SmtpTls.none:
        if s.smtp_username and not _is_loopback(s.smtp_host):
            offered = " (the relay offers STARTTLS)" if client.supports_extension("starttls") else ""
            return failed("relay TLS", f"NEWSLETTER_SMTP_TLS=none: the password would cross the network in "
                                       f"clear{offered}", "set NEWSLETTER_SMTP_TLS=starttls (port 587) or tls (465)")
        return skipped("relay TLS", "NEWSLETTER_SMTP_TLS=none")
    if not client.supports_extension("starttls"):
        return failed("relay TLS", f"{where} does not offer STARTTLS", "set NEWSLETTER_SMTP_TLS=tls with the "
                      "relay's TLS port (465), or turn STARTTLS on at the relay")
    try:
        await client.starttls()
        await client.ehlo()
    except (aiosmtplib.SMTPException, OSError) as exc:
        problem = "its certificate is not trusted" if _is_certificate_problem(exc) else "STARTTLS failed"
        return failed("relay TLS", f"{where}: {problem} ({_why(exc)})", tls_fix)
    return passed("relay TLS", f"STARTTLS with a trusted certificate ({_tls_version(client)})")


async def _login(client: aiosmtplib.SMTP, s: Settings, where: str) -> Check:
    if not s.smtp_username:
        auth = " (it offers AUTH: does it need a login?)" if client.supports_extension("auth") else ""
        return skipped("relay login", f"no NEWSLETTER_SMTP_USERNAME: the relay must accept us by our address{auth}")
    try:
        await client.login(s.smtp_username, s.smtp_password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        return failed("relay login", f"{where} refuses the login of {s.smtp_username} ({_why(exc)})",
                      "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD")
    except (aiosmtplib.SMTPException, OSError) as exc:
        return failed("relay login", f"{where}: {_why(exc)}", "check that the relay offers AUTH on this port "
                      "(often 587 with STARTTLS), and NEWSLETTER_SMTP_USERNAME")
    return passed("relay login", f"{where} accepts the login of {s.smtp_username} (no mail sent)")


def _tls_version(client: aiosmtplib.SMTP) -> str:
    connection = client.transport.get_extra_info("ssl_object") if client.transport else None
    return connection.version() if connection else "TLS"


def check_relay(settings: Settings) -> list[Check]:
    """EHLO, STARTTLS where configured, the login: each a line, then QUIT without a MAIL FROM."""
    return asyncio.run(_relay_checks(settings))


def check_mailbox(settings: Settings) -> Check:
    s = settings
    if not s.imap_host:
        return skipped("bounce mailbox", "NEWSLETTER_IMAP_HOST is empty: bounces are read from files or a pipe")
    where = f"imap://{s.imap_username}@{s.imap_host}:{s.imap_port}"
    try:
        client = log_in(s, timeout=min(s.imap_timeout, SERVER_TIMEOUT_SECONDS))
    except LoginError as exc:
        said = exc.args[0] if exc.args else ""
        said = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        return failed("bounce mailbox", f"{where}: login refused ({' '.join(said.split())})",
                      "check NEWSLETTER_IMAP_USERNAME and NEWSLETTER_IMAP_PASSWORD")
    except (OSError, IMAPClientError, ssl.SSLError) as exc:
        return failed("bounce mailbox", f"{where}: {_reason(exc)}",
                      "check NEWSLETTER_IMAP_HOST, _PORT, _TLS (and _CA_FILE), and that the server runs")
    try:
        status = client.folder_status(s.imap_folder, [b"MESSAGES"]) if client.folder_exists(s.imap_folder) else None
    except (OSError, IMAPClientError) as exc:
        return failed("bounce mailbox", f"{where}: {_reason(exc)}", "ask the mail server's administrator")
    finally:
        try:
            client.logout()
        except (OSError, IMAPClientError):
            pass
    if status is None:
        return failed("bounce mailbox", f"{where}: logged in, but there is no folder {s.imap_folder}",
                      "set NEWSLETTER_IMAP_FOLDER to the folder the bounces arrive in")
    return passed("bounce mailbox", f"{where}: logged in; {s.imap_folder} holds {status[b'MESSAGES']} message(s)")


def check_site(settings: Settings) -> Check:
    url = f"{settings.base_url}/healthz"
    if urlsplit(settings.base_url).scheme != "https":
        return failed("site", f"NEWSLETTER_BASE_URL is {settings.base_url}: readers' links and one-click "
                              "unsubscribe need HTTPS", "serve the site behind a TLS proxy and set "
                      "NEWSLETTER_BASE_URL=https://…")
    try:
        response = httpx.get(url, timeout=SERVER_TIMEOUT_SECONDS, follow_redirects=False)
    except httpx.ConnectError as exc:
        reason = "its certificate is not trusted" if _is_certificate_problem(exc) else f"no answer ({exc})"
        return failed("site", f"{url}: {reason}", "check that `newsletter serve` runs behind the TLS proxy, "
                      "and the proxy's certificate")
    except httpx.HTTPError as exc:
        return failed("site", f"{url}: {type(exc).__name__}: {exc}", "check the TLS proxy and `newsletter serve`")
    if response.status_code != 200:
        return failed("site", f"{url} answers {response.status_code} {response.reason_phrase}",
                      "check that the proxy passes requests to `newsletter serve`, and its log")
    return passed("site", f"{url} answers 200 over HTTPS")
