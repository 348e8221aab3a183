"""Outbound approval mail over SMTP (the sandbox runs aiosmtpd; production a relay).

Every message carries a Message-ID made by the caller from what it is about, so the same
message retried is recognisably the same message. The SMTP conversation itself (STARTTLS,
AUTH, certificate checks, the failure classes) is the campaign mailer's
``activities.email.SmtpMailer``, built from the settings in one place, so approval mail honours
``DEALFLOW_SMTP_USERNAME``, ``DEALFLOW_SMTP_PASSWORD``, ``DEALFLOW_SMTP_STARTTLS`` and
``DEALFLOW_SMTP_CA_CERT`` exactly as campaign mail does.
"""

from __future__ import annotations

import asyncio
import email
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses
from typing import TYPE_CHECKING

from activities.email import SmtpMailer

if TYPE_CHECKING:
    from dealflow.settings import Settings


class Mailer:
    def __init__(self, *, transport: SmtpMailer, from_name: str, from_address: str) -> None:
        self._transport = transport
        self._from_address = from_address
        self._from = formataddr((from_name, from_address))

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """The approval mailer as the worker builds it: the SMTP transport campaigns use."""
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
