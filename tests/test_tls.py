"""STARTTLS, implicit TLS and AUTH against a real aiosmtpd server with a self-signed certificate."""

from __future__ import annotations

import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from newsletter.config import Settings
from newsletter.edition import send_edition
from .ports import free_port
from newsletter.store.database import Store

from .conftest import SAMPLE_DATE, RecordingHandler
from .test_pipelining import PipeliningHandler

USER, PASSWORD = "newsroom", "s3cret-كلمة"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


def start_server(certificate, implicit: bool, pipelining: bool = False):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = PipeliningHandler() if pipelining else RecordingHandler()
    options = dict(authenticator=authenticator, auth_require_tls=True)
    if implicit:
        # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; here the
        # whole connection is TLS from the first byte anyway.
        options["auth_require_tls"] = False
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), ssl_context=context, **options)
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                                require_starttls=True, **options)
    controller.start()
    return controller, handler


def tls_settings(settings: Settings, controller, mode: str, cert, password=PASSWORD) -> Settings:
    return Settings(_env_file=None, **{
        **settings.model_dump(),
        **dict(smtp_port=controller.port, smtp_tls=mode, smtp_ca_file=cert, smtp_host="localhost",
               smtp_username=USER, smtp_password=password),
    })


@pytest.mark.parametrize("pipelining", [False, True], ids=["one command at a time", "pipelined"])
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_sends_over_tls_with_auth(settings, store: Store, certificate, mode, pipelining):
    controller, handler = start_server(certificate, implicit=mode == "tls", pipelining=pipelining)
    try:
        store.add_subscriber("layla@example.com", "ليلى")
        store.add_subscriber("omar@example.com", "عمر")
        report = send_edition(tls_settings(settings, controller, mode, certificate[0]), store, SAMPLE_DATE).report
    finally:
        controller.stop()
    assert report.sent == 2
    assert sorted(m.rcpt_to for m in handler.messages) == ["layla@example.com", "omar@example.com"]
    if pipelining:  # offered after STARTTLS too, and used
        assert handler.pipelined == [True, True]


def test_wrong_password_is_a_configuration_error(settings, store: Store, certificate):
    from newsletter.errors import ConfigError

    controller, handler = start_server(certificate, implicit=False)
    try:
        store.add_subscriber("layla@example.com", "ليلى")
        bad = tls_settings(settings, controller, "starttls", certificate[0], password="wrong")
        with pytest.raises(ConfigError, match="NEWSLETTER_SMTP_PASSWORD"):
            send_edition(bad, store, SAMPLE_DATE)
    finally:
        controller.stop()
    assert handler.messages == []
    # Nobody was lost: the subscriber is still waiting for the issue.
    assert store.log.delivery_counts(store.get_issue(SAMPLE_DATE.isoformat()).id).get("sent", 0) == 0
