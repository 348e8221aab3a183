"""Outbound mail over SMTP: one transport for campaign and approval/handoff mail alike.

* ``SmtpMailer`` is the transport. The SMTP conversation is spelled out (MAIL, RCPT, DATA) so a
  failure can be placed: before the message content is handed over a retry is safe; after it,
  the server may have accepted the message, and only the caller's records can decide (see
  ``activities/sequence.py``, ``send_email``). STARTTLS verifies the relay's certificate.
* ``Mailer`` is the approval and handoff mail on top of it: a From built from the settings,
  messages carrying a Message-ID the caller makes from what they are about, so the same
  message retried is recognisably the same message.

Both are built from the settings in one place (``from_settings``): ``DEALFLOW_SMTP_USERNAME``,
``DEALFLOW_SMTP_PASSWORD``, ``DEALFLOW_SMTP_STARTTLS`` and ``DEALFLOW_SMTP_CA_CERT`` apply to
every message we send. ``worker.py`` builds one ``Mailer`` and hands it (and its transport) to
the activities.
"""

from __future__ import annotations

import asyncio
import email
import re
import smtplib
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, formataddr, getaddresses
from typing import TYPE_CHECKING

from domain.campaign_email import wire_bytes

if TYPE_CHECKING:
    from dealflow.settings import Settings


class SmtpTransient(Exception):
    """Not handed over (connection refused, 4xx before the content): safe to try again."""


class SmtpRejected(Exception):
    """The server refused the recipient or the message for good (5xx)."""


class SmtpAmbiguous(Exception):
    """The failure came after the content was sent: the server may have accepted the message."""


class SmtpMailer:
    """Sends one message per connection, placing any failure before or after the hand-over."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._username, self._password = username, password
        self._starttls, self._timeout = starttls, timeout
        # STARTTLS verifies the relay's certificate and name (smtplib's own default does not,
        # which would hand the password and every link to whoever sits in between).
        self._tls_context = tls_context or ssl.create_default_context()

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMailer:
        """The one reading of the SMTP settings, for campaign and approval mail alike."""
        password = settings.smtp_password
        context = None
        if settings.smtp_ca_cert is not None:
            context = ssl.create_default_context(cafile=str(settings.smtp_ca_cert))
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            starttls=settings.smtp_starttls,
            tls_context=context,
        )

    def send(
        self,
        msg: Message,
        *,
        mail_from: str,
        rcpt: str,
        before_data: Callable[[], None] | None = None,
    ) -> None:
        """Blocking; call it in a thread.

        ``before_data`` runs once the server has accepted the sender and recipient, right
        before the DATA command: the last moment at which nothing has been handed over. The
        caller records "handing over" there; if it raises, nothing is sent.
        """
        data = wire_bytes(msg)
        data = re.sub(rb"(?m)^\.", b"..", data)  # dot-stuffing (RFC 5321 4.5.2)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        except (OSError, smtplib.SMTPException) as err:
            raise SmtpTransient(f"cannot connect to {self._host}:{self._port}: {err}") from err
        handed_over = False
        try:
            client.ehlo()
            if self._starttls:
                client.starttls(context=self._tls_context)
                client.ehlo()
            if self._username:
                client.login(self._username, self._password or "")
            code, reply = client.mail(mail_from)
            self._check(code, reply, "MAIL FROM")
            code, reply = client.rcpt(rcpt)
            self._check(code, reply, "RCPT TO")
            if before_data is not None:
                before_data()
            code, reply = client.docmd("DATA")
            if code != 354:
                self._check(code, reply, "DATA")
                raise SmtpTransient(f"DATA answered {code}")
            handed_over = True
            client.send(data + b".\r\n")
            code, reply = client.getreply()
            if code >= 500:
                raise SmtpRejected(f"message refused: {code} {reply!r}")
            if code != 250:
                # The server explicitly did not take it (4xx after the content): retry is safe.
                raise SmtpTransient(f"message deferred: {code} {reply!r}")
        except (SmtpRejected, SmtpTransient):
            raise
        except (OSError, smtplib.SMTPException) as err:  # TimeoutError is an OSError
            if handed_over:
                raise SmtpAmbiguous(f"connection lost after the message was sent: {err}") from err
            raise SmtpTransient(f"SMTP failed before the hand-over: {err}") from err
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    @staticmethod
    def _check(code: int, reply: bytes, step: str) -> None:
        if 200 <= code < 400:
            return
        if code >= 500:
            raise SmtpRejected(f"{step} refused: {code} {reply!r}")
        raise SmtpTransient(f"{step} deferred: {code} {reply!r}")


class Mailer:
    """Approval and handoff mail: a From from the settings, then the shared transport."""

    def __init__(self, *, transport: SmtpMailer, from_name: str, from_address: str) -> None:
        self._transport = transport
        self._from_address = from_address
        self._from = formataddr((from_name, from_address))

    @property
    def transport(self) -> SmtpMailer:
        """The SMTP transport, which campaign mail uses directly (it builds its own messages)."""
        return self._transport

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """The mailer as the worker builds it, once: the transport from the same settings."""
        return cls(
            transport=SmtpMailer.from_settings(settings),
            from_name=settings.mail_from_name,
            from_address=settings.mail_from_address,
        )

    def build(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        message_id: str,
        headers: dict[str, str] | None = None,
    ) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = message_id
        msg["Date"] = format_datetime(datetime.now(UTC))
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        return msg

    async def send(
        self, msg: EmailMessage, *, before_data: Callable[[], None] | None = None
    ) -> None:
        """``before_data`` as ``SmtpMailer.send`` has it: the caller's hand-over mark."""
        await asyncio.to_thread(self._send_sync, msg, before_data)

    def _send_sync(self, msg: EmailMessage, before_data: Callable[[], None] | None = None) -> None:
        # The transport writes messages with the compat32 wire policy (campaign mail is built
        # for it). A modern EmailMessage re-serialized that way can mangle its headers (a
        # non-ASCII From name swallows the address), so it goes over in its own SMTP form,
        # re-read as the plain message the transport expects; that changes no byte of it.
        wire = email.message_from_bytes(msg.as_bytes(policy=policy.SMTP))
        # One recipient per approval message; one SMTP transaction per recipient if ever more.
        for _, rcpt in getaddresses([str(v) for v in msg.get_all("To", [])]):
            self._transport.send(
                wire, mail_from=self._from_address, rcpt=rcpt, before_data=before_data
            )
