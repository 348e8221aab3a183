"""The DocuSign sandbox's constants, errors, clock and persisted state (envelopes, recipients,
documents, Connect deliveries, access tokens)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel

STATE_FILENAME = "docusign.json"
DOCUMENTS_DIRNAME = "docusign-documents"

DEFAULT_ACCOUNT_ID = "5d1b0a55-d0c5-4d1e-a1f0-000000000001"
DEFAULT_USER_ID = "5d1b0a55-d0c5-4d1e-a1f0-0000000000a1"
DEFAULT_CONFIGURATION_ID = 10501
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# DocuSign's access tokens from the JWT grant last one hour.
DEFAULT_TOKEN_LIFETIME = 3600
# Connect's account-level configuration in the sandbox includes these in envelopeSummary.
DEFAULT_CONNECT_INCLUDE_DATA: tuple[str, ...] = ("custom_fields", "recipients")

EnvelopeStatus = Literal["created", "sent", "delivered", "completed", "declined", "voided"]
RecipientStatus = Literal["created", "sent", "delivered", "completed", "declined"]

_ACTIVE: frozenset[str] = frozenset({"sent", "delivered"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CLOCK_SKEW = timedelta(minutes=5)


# --- errors -----------------------------------------------------------------------------


class DocuSignError(Exception):
    """An error answered as DocuSign does: `{"errorCode": "...", "message": "..."}`."""

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"errorCode": self.error_code, "message": self.message}, status_code=self.status_code
        )


class OAuthError(Exception):
    """An OAuth error as DocuSign's account server answers: `{"error", "error_description"}`."""

    def __init__(self, status_code: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status_code = status_code
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status_code,
        )


class _DocuSignRoute(APIRoute):
    """Turns this module's exceptions into DocuSign-shaped responses, for its routes only.

    A route class rather than an app-wide exception handler, because `install` shares the
    app with other sandboxes whose errors look different.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except (DocuSignError, OAuthError) as error:
                return error.response()

        return handler


def _not_found(envelope_id: str) -> DocuSignError:
    return DocuSignError(
        404,
        "ENVELOPE_DOES_NOT_EXIST",
        f"The envelope specified either does not exist or you "
        f"have no rights to it. Envelope: {envelope_id}",
    )


def _bad_body(message: str) -> DocuSignError:
    return DocuSignError(400, "INVALID_REQUEST_BODY", message)


# --- time -------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def ds_time(moment: datetime | None) -> str | None:
    """DocuSign's timestamp format: UTC, seven fractional digits, `Z`."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _parse_from_date(value: str) -> datetime:
    """`from_date` as clients send it: ISO 8601 (date or date-time) or MM/DD/YYYY."""
    text = value.strip()
    parsed: datetime | None = None
    try:
        # Python 3.11 takes at most 6 fractional digits; DocuSign's own format has 7.
        parsed = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    except ValueError:
        try:
            parsed = datetime.strptime(text, "%m/%d/%Y")  # noqa: DTZ007 - made UTC below
        except ValueError:
            pass
    if parsed is None:
        raise DocuSignError(
            400, "INVALID_REQUEST_PARAMETER", f"The value of from_date is not a date: {value!r}"
        )
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- persisted state --------------------------------------------------------------------


class Recipient(BaseModel):
    """A signer or carbon copy and where it is in its own lifecycle."""

    kind: Literal["signer", "carbon_copy"]
    recipient_id: str
    recipient_id_guid: str
    name: str
    email: str
    routing_order: int
    status: RecipientStatus = "created"
    role_name: str | None = None
    client_user_id: str | None = None
    sent_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None
    signed_at: AwareDatetime | None = None
    declined_at: AwareDatetime | None = None
    declined_reason: str | None = None
    resends: list[AwareDatetime] = []


class StoredDocument(BaseModel):
    """An uploaded document's metadata; its bytes live in a file beside the state file."""

    document_id: str
    document_id_guid: str
    name: str
    order: int
    size: int
    sha256: str
    filename: str


class TextCustomField(BaseModel):
    field_id: str
    name: str
    value: str
    show: bool = True
    required: bool = False


class EventNotificationConfig(BaseModel):
    """The parts of an envelope's `eventNotification` the sandbox honours."""

    url: str
    events: list[str] | None = None  # None: every event
    include_hmac: bool = False
    include_data: list[str] = []


class StoredEnvelope(BaseModel):
    envelope_id: str
    account_id: str
    status: EnvelopeStatus
    email_subject: str | None = None
    email_blurb: str | None = None
    created_at: AwareDatetime
    last_modified_at: AwareDatetime
    status_changed_at: AwareDatetime
    sent_at: AwareDatetime | None = None
    initial_sent_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None
    declined_at: AwareDatetime | None = None
    voided_at: AwareDatetime | None = None
    voided_reason: str | None = None
    documents: list[StoredDocument] = []
    recipients: list[Recipient] = []
    text_custom_fields: list[TextCustomField] = []
    event_notification: EventNotificationConfig | None = None

    @property
    def signers(self) -> list[Recipient]:
        return [r for r in self.recipients if r.kind == "signer"]

    def current_routing_order(self) -> int | None:
        """The lowest routing order with a signer still to act; None once all have."""
        pending = [s.routing_order for s in self.signers if s.status != "completed"]
        return min(pending) if pending else None

    def custom_field(self, name: str) -> str | None:
        for field in self.text_custom_fields:
            if field.name == name:
                return field.value
        return None


class Attempt(BaseModel):
    """One try at delivering a Connect message (or the record that it was dropped)."""

    at: AwareDatetime
    url: str | None
    status_code: int | None = None
    error: str | None = None
    dropped: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Delivery(BaseModel):
    """A Connect message: its exact body and signature, and every attempt to send it."""

    delivery_id: str
    envelope_id: str
    event: str
    recipient_id: str | None = None
    url: str | None
    body: str
    signature: str | None
    created_at: AwareDatetime
    attempts: list[Attempt] = []

    @property
    def state(self) -> Literal["pending", "delivered", "failed", "dropped", "no_url"]:
        if not self.attempts:
            return "pending"
        last = self.attempts[-1]
        if last.dropped:
            return "dropped"
        if last.url is None:
            return "no_url"
        return "delivered" if last.ok else "failed"

    def view(self) -> dict[str, Any]:
        """The control API's view: metadata, the parsed message and the attempts."""
        return {
            "delivery_id": self.delivery_id,
            "envelope_id": self.envelope_id,
            "event": self.event,
            "recipient_id": self.recipient_id,
            "url": self.url,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "signature": self.signature,
            "attempts": [a.model_dump(mode="json") for a in self.attempts],
            "message": json.loads(self.body),
        }


class AccessToken(BaseModel):
    token: str
    user_id: str
    client_id: str
    scope: str
    expires_at: AwareDatetime


class _State(BaseModel):
    envelopes: dict[str, StoredEnvelope] = {}
    deliveries: list[Delivery] = []
    tokens: dict[str, AccessToken] = {}
    drop_remaining: int = 0
