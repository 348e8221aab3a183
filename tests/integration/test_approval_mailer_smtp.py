"""Approval mail honours the SMTP settings: STARTTLS, then AUTH with the configured login.

Against the sandbox's own SMTP pieces (sandbox/mail.py: the capture store and handler, its
login check) on a real aiosmtpd server that, like a production relay, offers STARTTLS and
refuses AUTH and mail before it and mail before AUTH.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from dealflow.settings import Settings
from dealflow.stack import free_port
from integrations.smtp import Mailer, SmtpRejected, SmtpTransient
from sandbox.mail import MailCaptureHandler, MailStore, accept_any_login
from sandbox.tls import ensure_self_signed_cert


@dataclass
class Relay:
    port: int
    store: MailStore
    ca_cert: Path
    logins: list[tuple[str, str, str, bool]] = field(default_factory=list)  # mech, user, pw, tls


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    tls = ensure_self_signed_cert(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_path, tls.key_path)
    relay = Relay(port=free_port(), store=MailStore(tmp_path / "mail.jsonl"), ca_cert=tls.cert_path)

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        relay.logins.append(
            (
                mechanism,
                auth_data.login.decode(),
                auth_data.password.decode(),
                session.ssl is not None,
            )
        )
        return accept_any_login(server, session, envelope, mechanism, auth_data)

    controller = Controller(
        MailCaptureHandler(relay.store),
        hostname="127.0.0.1",
        port=relay.port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
        require_starttls=True,
        tls_context=context,
    )
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()


def _message(mailer: Mailer):
    return mailer.build(
        to="sam.ortiz@dealflow.example",
        subject="Approval needed: Ünïcode GmbH — platform",
        text="Please decide.\n.a line starting with a dot\n",
        html="<p>Please decide.</p>",
        message_id="<approval.test@dealflow.example>",
    )


async def test_approval_mail_uses_starttls_and_the_configured_login(relay: Relay):
    settings = Settings(
        profile="sandbox",
        smtp_host="127.0.0.1",
        smtp_port=relay.port,
        smtp_username="dealflow-relay",
        smtp_password="relay-pass-0c5d8e2f",
        smtp_starttls=True,
        smtp_ca_cert=relay.ca_cert,  # the relay's certificate is checked against this CA
    )
    mailer = Mailer.from_settings(settings)  # what worker.py builds
    await mailer.send(_message(mailer))

    assert relay.logins == [("PLAIN", "dealflow-relay", "relay-pass-0c5d8e2f", True)]
    [captured] = relay.store.list()
    assert captured.to == ["sam.ortiz@dealflow.example"]
    assert captured.mail_from == settings.mail_from_address
    assert captured.subject == "Approval needed: Ünïcode GmbH — platform"
    assert captured.message_id == "<approval.test@dealflow.example>"
    assert captured.text == "Please decide.\n.a line starting with a dot\n"


async def test_without_the_smtp_settings_a_relay_that_requires_them_refuses(relay: Relay):
    mailer = Mailer.from_settings(
        Settings(profile="sandbox", smtp_host="127.0.0.1", smtp_port=relay.port)
    )
    with pytest.raises(SmtpRejected, match="MAIL FROM refused: 530"):  # STARTTLS first
        await mailer.send(_message(mailer))
    assert relay.logins == [] and relay.store.list() == []


async def test_starttls_refuses_a_relay_whose_certificate_does_not_verify(relay: Relay):
    # Without the relay's CA the self-signed certificate fails verification: the login and
    # the message (with its signed approval link) never go to an unverified server.
    settings = Settings(
        profile="sandbox",
        smtp_host="127.0.0.1",
        smtp_port=relay.port,
        smtp_username="dealflow-relay",
        smtp_password="relay-pass-0c5d8e2f",
        smtp_starttls=True,
    )
    mailer = Mailer.from_settings(settings)
    with pytest.raises(SmtpTransient, match="CERTIFICATE_VERIFY_FAILED"):
        await mailer.send(_message(mailer))
    assert relay.logins == [] and relay.store.list() == []
