"""Email sandbox: a real SMTP server's capture store and the HTTP view onto it.

The worker sends mail with plain SMTP, exactly as in production; here the other end is
aiosmtpd on localhost. Every accepted message is parsed and kept so a person or a test can
read what dealflow "sent" through `GET /_sandbox/mail/messages`.

Messages are kept in memory for reads and appended to `<state_dir>/mail.jsonl` before the
SMTP server answers 250, so a sandbox restart (or a crash right after a send) keeps them.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, ValidationError

from sandbox.files import read_jsonl, skip_unreadable

logger = logging.getLogger(__name__)

MAIL_LOG_FILENAME = "mail.jsonl"


class Attachment(BaseModel):
    """A non-body part of a captured message (for example the contract PDF)."""

    filename: str | None
    content_type: str
    size: int


class CapturedMessage(BaseModel):
    """One message as the SMTP sandbox received it.

    `to` is the envelope recipients (RCPT TO), so Bcc recipients show up too; the header
    view is in `headers`. `index` is the message's position in the store, 0-based, and is
    what `since` filters on.
    """

    index: int
    message_id: str | None
    from_: str | None = Field(alias="from")
    mail_from: str | None = Field(description="Envelope sender (MAIL FROM).")
    to: list[str]
    subject: str | None
    date: str | None = Field(description="The Date header as RFC 3339 UTC, if it parses.")
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    attachments: list[Attachment] = []
    # The first text/calendar part (an iCalendar invite), as sent: clients parse it back.
    calendar: str | None = None
    size: int = Field(description="Size of the raw message in bytes.")
    received_at: str


class MailMessageList(BaseModel):
    messages: list[CapturedMessage]


class DeletedMessages(BaseModel):
    deleted: int


def rfc3339_utc(moment: datetime) -> str:
    """Format a datetime the way the API does everywhere: RFC 3339, UTC, `Z` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _normalize_message_id(value: str) -> str:
    """Compare Message-IDs without their angle brackets, which callers often drop."""
    return value.strip().strip("<>").strip()


def _part_content(part: EmailMessage) -> str | None:
    """Decode a text part; fall back to a lossy decode so a bad charset never drops mail."""
    try:
        content = part.get_content()
    except (LookupError, ValueError, UnicodeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


def _body(message: EmailMessage, subtype: str) -> str | None:
    """The text or html body with `\n` line ends; CRLF is SMTP's framing, not content."""
    part = message.get_body(preferencelist=(subtype,))
    content = _part_content(part) if isinstance(part, EmailMessage) else None
    return content.replace("\r\n", "\n") if content is not None else None


def _calendar(message: EmailMessage) -> str | None:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            return _part_content(part)
    return None


def _date(message: EmailMessage) -> str | None:
    header = message.get("Date")
    moment = getattr(header, "datetime", None) if header is not None else None
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None:
        # RFC 5322 "-0000" (zone unknown) parses as naive; UTC is the only sane reading.
        moment = moment.replace(tzinfo=UTC)
    return rfc3339_utc(moment)


def _attachments(message: EmailMessage) -> list[Attachment]:
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        found.append(
            Attachment(
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                size=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return found


def parse_captured(
    raw: bytes,
    *,
    mail_from: str | None,
    rcpt_tos: list[str],
    index: int,
    received_at: datetime,
) -> CapturedMessage:
    """Turn the raw DATA of one SMTP transaction into a `CapturedMessage`."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # guaranteed by policy.default
    message_id = message.get("Message-ID")
    subject = message.get("Subject")
    sender = message.get("From")
    return CapturedMessage.model_validate(
        {
            "index": index,
            "message_id": str(message_id).strip() if message_id is not None else None,
            "from": str(sender) if sender is not None else None,
            "mail_from": mail_from,
            "to": list(rcpt_tos),
            "subject": str(subject) if subject is not None else None,
            "date": _date(message),
            "headers": [(name, str(value)) for name, value in message.items()],
            "text": _body(message, "plain"),
            "html": _body(message, "html"),
            "attachments": _attachments(message),
            "calendar": _calendar(message),
            "size": len(raw),
            "received_at": rfc3339_utc(received_at),
        }
    )


class MailStore:
    """Captured messages, in memory and in an append-only JSON-lines file.

    The SMTP server runs in aiosmtpd's own thread while the HTTP app reads from the main
    event loop, so every access goes through one lock.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._messages: list[CapturedMessage] = self._load()

    @property
    def path(self) -> Path:
        return self._path

    def _load(self) -> list[CapturedMessage]:
        messages: list[CapturedMessage] = []
        for number, line in read_jsonl(self._path):
            try:
                message = CapturedMessage.model_validate_json(line)
            except ValidationError:
                skip_unreadable(self._path, number)
                continue
            message.index = len(messages)
            messages.append(message)
        return messages

    def add(self, raw: bytes, *, mail_from: str | None, rcpt_tos: list[str]) -> CapturedMessage:
        """Parse, persist, then publish one message; raises OSError if it cannot be saved."""
        with self._lock:
            message = parse_captured(
                raw,
                mail_from=mail_from,
                rcpt_tos=rcpt_tos,
                index=len(self._messages),
                received_at=datetime.now(UTC),
            )
            line = message.model_dump_json(by_alias=True) + "\n"
            with self._path.open("a", encoding="utf-8") as handle:
                handle.write(line)
            self._messages.append(message)
            return message

    def list(
        self, *, to: str | None = None, message_id: str | None = None, since: int = 0
    ) -> list[CapturedMessage]:
        """Messages oldest first; `to` matches an envelope recipient, case-insensitively."""
        with self._lock:
            selected = self._messages[since:]
        if to is not None:
            wanted = to.strip().lower()
            selected = [m for m in selected if any(r.lower() == wanted for r in m.to)]
        if message_id is not None:
            wanted_id = _normalize_message_id(message_id)
            selected = [
                m
                for m in selected
                if m.message_id is not None and _normalize_message_id(m.message_id) == wanted_id
            ]
        return selected

    def clear(self) -> int:
        """Forget every message (memory and file); indices start again at 0."""
        with self._lock:
            count = len(self._messages)
            self._path.write_bytes(b"")
            self._messages.clear()
            return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)


def accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    """aiosmtpd authenticator that accepts any credentials.

    Production SMTP needs a login, so the mail activity may always log in; the sandbox
    must then accept one rather than fail the send for a reason production never has.
    """
    login = auth_data.login if isinstance(auth_data, LoginPassword) else None
    return AuthResult(success=True, auth_data=login)


class MailCaptureHandler:
    """aiosmtpd handler: store every message, answer 451 if it cannot be stored.

    The 451 matters: the sender then keeps the message and retries, as it would with a
    real relay, instead of believing a message was delivered that nobody can ever see.
    """

    def __init__(self, store: MailStore) -> None:
        self._store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        raw = envelope.original_content if envelope.original_content is not None else b""
        try:
            message = self._store.add(
                raw, mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos)
            )
        except OSError:
            logger.exception("could not store a captured message")
            return "451 4.3.0 Sandbox could not store the message"
        # Metadata only: bodies may carry signed links and personal data.
        logger.info(
            "captured mail #%d message_id=%s to=%s subject=%r",
            message.index,
            message.message_id,
            ",".join(message.to),
            message.subject,
        )
        return "250 2.0.0 Message accepted for delivery"


def create_mail_router(store: MailStore) -> APIRouter:
    """The control API of the email sandbox, bound to one store."""
    router = APIRouter(prefix="/_sandbox/mail", tags=["sandbox: mail"])

    @router.get("/messages", response_model=MailMessageList)
    def list_messages(
        to: Annotated[str | None, Query(description="An envelope recipient.")] = None,
        message_id: Annotated[
            str | None, Query(description="Message-ID, with or without <>.")
        ] = None,
        since: Annotated[int, Query(ge=0, description="Only messages whose index is >= this.")] = 0,
    ) -> MailMessageList:
        """Captured messages, oldest first (newest last)."""
        return MailMessageList(messages=store.list(to=to, message_id=message_id, since=since))

    @router.delete("/messages", response_model=DeletedMessages)
    def delete_messages() -> DeletedMessages:
        """Forget every captured message, for a clean slate while working locally."""
        return DeletedMessages(deleted=store.clear())

    return router
