"""DocuSign eSignature sandbox: OAuth JWT grant, the envelope REST subset, Connect webhooks.

dealflow talks to DocuSign only through the official `docusign-esign` SDK; this module is the
other end of that wire, so the SDK's own requests and model deserialisation are what it is
built (and tested) against. Paths mirror DocuSign's:

- `POST /oauth/token` (JWT bearer grant) and `GET /oauth/userinfo`;
- `/restapi/v2.1/accounts/{accountId}/envelopes` — create, list status changes (filtered by
  `custom_field=name=value`, `from_date`, `status`, `envelope_ids`), get, update (send a
  draft, void with `voidedReason`, `resend_envelope=true`), recipients (list, update,
  `resend_envelope=true`), documents (list; get by id, `combined`, `certificate`).
- Connect: every envelope or recipient status change is POSTed as a JSON SIM message (the
  shape of docusign-connect.schema-v2.json) with `X-DocuSign-Signature-1` =
  base64(HMAC-SHA256(hmac_key, raw body)).
- Control API under `/_sandbox/docusign` to act as the signers and to steer Connect (drop the
  next N messages, redeliver one).

Setting up docusign-esign against the sandbox
---------------------------------------------
The SDK hardcodes `https://` + `oauth_host_name` for `/oauth/token` and `/oauth/userinfo`,
so the sandbox app must also be served over HTTPS with the certificate from
`sandbox.tls.ensure_self_signed_cert(state_dir)` (uvicorn `ssl_certfile`/`ssl_keyfile`).
`ApiClient.__init__` builds its urllib3 pool from a fresh `Configuration()`, so the CA file
is set by replacing the REST client (this avoids `Configuration.set_default`, which would
change every ApiClient in the process)::

    from docusign_esign import ApiClient, Configuration, EnvelopesApi
    from docusign_esign.client.api_response import RESTClientObject

    oauth_host = "127.0.0.1:8443"              # host:port of the sandbox's HTTPS listener
    api_client = ApiClient(oauth_host_name=oauth_host)
    configuration = Configuration()
    configuration.ssl_ca_cert = str(tls_files.cert_path)   # trust the self-signed cert
    api_client.rest_client = RESTClientObject(configuration=configuration)

    token = api_client.request_jwt_user_token(
        client_id="<integration key>", user_id="<user guid>", oauth_host_name=oauth_host,
        private_key_bytes=rsa_private_key_pem, expires_in=3600,
        scopes=["signature", "impersonation"])
    account = api_client.get_user_info(token.access_token).accounts[0]
    api_client.host = account.base_uri + "/restapi"   # https://127.0.0.1:8443/restapi
    envelopes = EnvelopesApi(api_client)               # account.account_id for account_id

The REST API is served on every listener, so `api_client.host` may also be
`http://127.0.0.1:<http port>/restapi`; `base_uri` in userinfo is the listener the userinfo
request came in on unless `install(..., base_uri=...)` fixes it. The JWT's `aud` must be the
OAuth host the client used (what the SDK sends), or one of `jwt_audiences`.

Where Connect messages go: to the envelope's own `eventNotification.url` when the envelope
was created with one (filtered by its `events`/`envelopeEvents`/`recipientEvents`, signed
only if `includeHMAC` is "true", and it must ask for JSON: `eventData.format = "json"`), and
otherwise to the account-level `connect_url`. Events sent: envelope-sent,
envelope-delivered, envelope-completed, envelope-declined, envelope-voided, recipient-sent,
recipient-delivered, recipient-completed, recipient-declined.

State lives in `<state_dir>/docusign.json` (rewritten atomically on every change) and the
uploaded documents in `<state_dir>/docusign-documents/`, written once, so the JSON stays
small and a restart keeps envelopes, tokens and the delivery log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
import jwt
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel

from sandbox.files import load_state, save_state

logger = logging.getLogger(__name__)

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


# --- tiny PDF writer --------------------------------------------------------------------


def _pdf_text(value: str) -> bytes:
    """A PDF literal string in WinAnsi-ish Latin-1: escape the delimiters, replace the rest."""
    escaped = value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1", errors="replace") + b")"


def minimal_pdf(
    pages: Sequence[Sequence[str]], attachments: Sequence[tuple[str, bytes]] = ()
) -> bytes:
    """A small, valid PDF 1.7: one page of Helvetica text per entry of `pages`.

    `attachments` are embedded as files (the document's EmbeddedFiles name tree), which is
    how the combined download carries the original uploads byte for byte without a PDF
    merging library. Output depends only on the input, so a download's checksum is stable.
    """
    objects: dict[int, bytes] = {}
    page_ids: list[int] = []
    next_id = 4  # 1 catalog, 2 page tree, 3 font
    objects[3] = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    for lines in pages or [[""]]:
        ops = [b"BT /F1 11 Tf 14 TL 56 760 Td"]
        for line in lines:
            ops.append(_pdf_text(line) + b" Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops)
        content_id, page_id = next_id, next_id + 1
        next_id += 2
        objects[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content_id
        )
        page_ids.append(page_id)
    names: list[bytes] = []
    for name, data in sorted(attachments, key=lambda item: item[0]):
        file_id, spec_id = next_id, next_id + 1
        next_id += 2
        objects[file_id] = (
            b"<< /Type /EmbeddedFile /Subtype /application#2Fpdf /Length %d "
            b"/Params << /Size %d >> >>\nstream\n" % (len(data), len(data)) + data + b"\nendstream"
        )
        objects[spec_id] = (
            b"<< /Type /Filespec /F "
            + _pdf_text(name)
            + b" /UF "
            + _pdf_text(name)
            + b" /EF << /F %d 0 R >> >>" % file_id
        )
        names.append(_pdf_text(name) + b" %d 0 R" % spec_id)
    kids = b" ".join(b"%d 0 R" % page_id for page_id in page_ids)
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    catalog = b"<< /Type /Catalog /Pages 2 0 R"
    if names:
        catalog += b" /Names << /EmbeddedFiles << /Names [" + b" ".join(names) + b"] >> >>"
    objects[1] = catalog + b" >>"

    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number in range(1, next_id):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % next_id
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (next_id, xref_at)
    return bytes(out)


# --- wire shapes ------------------------------------------------------------------------


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    """Drop None values: DocuSign leaves out the fields that have no value yet."""
    return {key: value for key, value in data.items() if value is not None}


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _recipient_json(recipient: Recipient, *, connect: bool) -> dict[str, Any]:
    data = _compact(
        {
            "name": recipient.name,
            "email": recipient.email,
            "recipientId": recipient.recipient_id,
            "recipientIdGuid": recipient.recipient_id_guid,
            "routingOrder": str(recipient.routing_order),
            "roleName": recipient.role_name,
            "clientUserId": recipient.client_user_id,
            "status": recipient.status,
            "sentDateTime": ds_time(recipient.sent_at),
            "deliveredDateTime": ds_time(recipient.delivered_at),
            "signedDateTime": ds_time(recipient.signed_at),
            "declinedDateTime": ds_time(recipient.declined_at),
            "declinedReason": recipient.declined_reason,
            "deliveryMethod": "email",
            "creationReason": "sender",
            "requireIdLookup": "false",
            "templateLocked": "false",
            "templateRequired": "false",
        }
    )
    if not connect:  # fields of the REST Signer model that the Connect message lacks
        data["recipientType"] = "signer" if recipient.kind == "signer" else "carboncopy"
        data["completedCount"] = "1" if recipient.status == "completed" else "0"
    return data


def _recipients_json(envelope: StoredEnvelope, *, connect: bool) -> dict[str, Any]:
    current = envelope.current_routing_order()
    data: dict[str, Any] = {
        "signers": [
            _recipient_json(r, connect=connect) for r in envelope.recipients if r.kind == "signer"
        ],
        "agents": [],
        "editors": [],
        "intermediaries": [],
        "carbonCopies": [
            _recipient_json(r, connect=connect)
            for r in envelope.recipients
            if r.kind == "carbon_copy"
        ],
        "certifiedDeliveries": [],
        "inPersonSigners": [],
        "seals": [],
        "witnesses": [],
        "recipientCount": str(len(envelope.recipients)),
    }
    if current is not None:
        data["currentRoutingOrder"] = str(current)
    if not connect:
        data["notaries"] = []
    return data


def _custom_fields_json(envelope: StoredEnvelope) -> dict[str, Any]:
    return {
        "textCustomFields": [
            {
                "fieldId": field.field_id,
                "name": field.name,
                "show": _bool_text(field.show),
                "required": _bool_text(field.required),
                "value": field.value,
            }
            for field in envelope.text_custom_fields
        ],
        "listCustomFields": [],
    }


class _Wire:
    """Builds DocuSign-shaped JSON for one account (URIs, sender identity)."""

    def __init__(self, *, account_id: str, user_id: str, user_name: str, user_email: str) -> None:
        self.account_id = account_id
        self.user_id = user_id
        self.user_name = user_name
        self.user_email = user_email

    def envelope(
        self, envelope: StoredEnvelope, *, include: Collection[str], connect: bool
    ) -> dict[str, Any]:
        """An Envelope (REST) or envelopeSummary (Connect); `include` as DocuSign's param."""
        uri = f"/envelopes/{envelope.envelope_id}"
        data = _compact(
            {
                "status": envelope.status,
                "documentsUri": f"{uri}/documents",
                "recipientsUri": f"{uri}/recipients",
                "attachmentsUri": f"{uri}/attachments",
                "envelopeUri": uri,
                "emailSubject": envelope.email_subject,
                "emailBlurb": envelope.email_blurb,
                "envelopeId": envelope.envelope_id,
                "signingLocation": "online",
                "customFieldsUri": f"{uri}/custom_fields",
                "notificationUri": f"{uri}/notification",
                "enableWetSign": "true",
                "allowMarkup": "false",
                "allowReassign": "true",
                "createdDateTime": ds_time(envelope.created_at),
                "lastModifiedDateTime": ds_time(envelope.last_modified_at),
                "deliveredDateTime": ds_time(envelope.delivered_at),
                "initialSentDateTime": ds_time(envelope.initial_sent_at),
                "sentDateTime": ds_time(envelope.sent_at),
                "completedDateTime": ds_time(envelope.completed_at),
                "voidedDateTime": ds_time(envelope.voided_at),
                "voidedReason": envelope.voided_reason,
                "declinedDateTime": ds_time(envelope.declined_at),
                "statusChangedDateTime": ds_time(envelope.status_changed_at),
                "documentsCombinedUri": f"{uri}/documents/combined",
                "certificateUri": f"{uri}/documents/certificate",
                "templatesUri": f"{uri}/templates",
                "sender": {
                    "userName": self.user_name,
                    "userId": self.user_id,
                    "accountId": self.account_id,
                    "email": self.user_email,
                },
                "purgeState": "unpurged",
                "envelopeIdStamping": "true",
                "autoNavigation": "true",
                "is21CFRPart11": "false",
                "signerCanSignOnMobile": "true",
                "isSignatureProviderEnvelope": "false",
                "allowViewHistory": "true",
                "allowComments": "true",
                "hasComments": "false",
                "envelopeLocation": "current_site",
                "isDynamicEnvelope": "false",
                "burnDefaultTabData": "false",
            }
        )
        if not connect:
            data["statusDateTime"] = ds_time(envelope.status_changed_at)
        if "recipients" in include:
            data["recipients"] = _recipients_json(envelope, connect=connect)
        if "custom_fields" in include:
            data["customFields"] = _custom_fields_json(envelope)
        return data

    def documents(self, envelope: StoredEnvelope) -> list[dict[str, Any]]:
        """EnvelopeDocument entries as Documents::list returns them, certificate last."""
        uri = f"/envelopes/{envelope.envelope_id}/documents"
        entries = [
            {
                "documentId": document.document_id,
                "documentIdGuid": document.document_id_guid,
                "name": document.name,
                "type": "content",
                "uri": f"{uri}/{document.document_id}",
                "order": str(document.order),
                "pages": [
                    {"pageId": "", "sequence": "1", "height": "792", "width": "612", "dpi": "72"}
                ],
                "display": "inline",
                "includeInDownload": "true",
                "signerMustAcknowledge": "no_interaction",
                "templateRequired": "false",
                "authoritativeCopy": "false",
                "containsPdfFormFields": "false",
                "sizeBytes": str(document.size),
            }
            for document in envelope.documents
        ]
        entries.append(
            {
                "documentId": "certificate",
                "name": "Summary",
                "type": "summary",
                "uri": f"{uri}/certificate",
                "order": "999",
                "display": "inline",
                "includeInDownload": "true",
                "signerMustAcknowledge": "no_interaction",
                "templateRequired": "false",
                "authoritativeCopy": "false",
            }
        )
        return entries

    def connect_message(
        self,
        envelope: StoredEnvelope,
        *,
        event: str,
        recipient_id: str | None,
        include_data: Collection[str],
        configuration_id: int,
        document_bytes: Callable[[StoredDocument], bytes],
    ) -> dict[str, Any]:
        """A Connect JSON SIM message, keys as in docusign-connect.schema-v2.json."""
        summary = self.envelope(envelope, include=include_data, connect=True)
        if "documents" in include_data:
            summary["envelopeDocuments"] = [
                {
                    "documentId": document.document_id,
                    "documentIdGuid": document.document_id_guid,
                    "name": document.name,
                    "type": "content",
                    "order": str(document.order),
                    "display": "inline",
                    "includeInDownload": "true",
                    "signerMustAcknowledge": "no_interaction",
                    "templateRequired": "false",
                    "authoritative": "false",
                    "PDFBytes": base64.b64encode(document_bytes(document)).decode("ascii"),
                }
                for document in envelope.documents
            ]
        data: dict[str, Any] = {
            "accountId": self.account_id,
            "userId": self.user_id,
            "envelopeId": envelope.envelope_id,
            "envelopeSummary": summary,
        }
        if recipient_id is not None:
            data["recipientId"] = recipient_id
        return {
            "event": event,
            "apiVersion": "v2.1",
            "uri": f"/restapi/v2.1/accounts/{self.account_id}/envelopes/{envelope.envelope_id}",
            "retryCount": 0,
            "configurationId": configuration_id,
            "generatedDateTime": ds_time(_now()),
            "data": data,
        }


def sandbox_view(envelope: StoredEnvelope) -> dict[str, Any]:
    """The control API's plain view of an envelope (snake_case, RFC 3339)."""

    def at(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "envelope_id": envelope.envelope_id,
        "status": envelope.status,
        "email_subject": envelope.email_subject,
        "custom_fields": {field.name: field.value for field in envelope.text_custom_fields},
        "current_routing_order": envelope.current_routing_order(),
        "created_at": at(envelope.created_at),
        "sent_at": at(envelope.sent_at),
        "delivered_at": at(envelope.delivered_at),
        "completed_at": at(envelope.completed_at),
        "declined_at": at(envelope.declined_at),
        "voided_at": at(envelope.voided_at),
        "voided_reason": envelope.voided_reason,
        "documents": [
            {"document_id": d.document_id, "name": d.name, "size": d.size, "sha256": d.sha256}
            for d in envelope.documents
        ],
        "recipients": [
            {
                "kind": r.kind,
                "recipient_id": r.recipient_id,
                "name": r.name,
                "email": r.email,
                "routing_order": r.routing_order,
                "status": r.status,
                "sent_at": at(r.sent_at),
                "delivered_at": at(r.delivered_at),
                "signed_at": at(r.signed_at),
                "declined_at": at(r.declined_at),
                "declined_reason": r.declined_reason,
                "resends": [at(moment) for moment in r.resends],
            }
            for r in envelope.recipients
        ],
        "event_notification_url": (
            envelope.event_notification.url if envelope.event_notification else None
        ),
    }


# --- request parsing --------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """DocuSign accepts numbers where its schema says string (routingOrder: 1 or "1")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return _bool_text(value)
    if isinstance(value, int | float | str):
        return str(value).strip()
    raise _bad_body(f"expected a string, got {type(value).__name__}")


def _truthy(value: Any) -> bool:
    return _text(value) in ("true", "True", "1")


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad_body(f"{where} must be an object")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad_body(f"{where} must be an array")
    return value


_UNSUPPORTED_DEFINITION_FIELDS = ("templateId", "templateRoles", "compositeTemplates")
_EVENT_STATUS_NAMES = {"sent", "delivered", "completed", "declined", "voided"}


def _event_notification(raw: Any) -> EventNotificationConfig | None:
    data = _object(raw, "eventNotification")
    if not data:
        return None
    url = _text(data.get("url"))
    if not url:
        raise _bad_body("eventNotification.url is required")
    event_data = _object(data.get("eventData"), "eventNotification.eventData")
    if (_text(event_data.get("format")) or "").lower() != "json":
        # Without eventData DocuSign sends legacy XML; the sandbox only speaks JSON SIM, and
        # a client that forgets this would get XML from the real service.
        raise _bad_body(
            "the sandbox sends JSON SIM messages only: set eventNotification.eventData to "
            '{"version": "restv2.1", "format": "json"}'
        )
    events: list[str] = []
    for item in _array(data.get("events"), "eventNotification.events"):
        events.append((_text(item) or "").lower())
    for item in _array(data.get("envelopeEvents"), "eventNotification.envelopeEvents"):
        code = (_text(_object(item, "envelopeEvent").get("envelopeEventStatusCode")) or "").lower()
        if code in _EVENT_STATUS_NAMES:
            events.append(f"envelope-{code}")
    for item in _array(data.get("recipientEvents"), "eventNotification.recipientEvents"):
        code = (
            _text(_object(item, "recipientEvent").get("recipientEventStatusCode")) or ""
        ).lower()
        if code in _EVENT_STATUS_NAMES:
            events.append(f"recipient-{code}")
    include_data = [
        (_text(item) or "").lower()
        for item in _array(event_data.get("includeData"), "eventData.includeData")
    ]
    return EventNotificationConfig(
        url=url,
        events=events or None,
        include_hmac=_truthy(data.get("includeHMAC")),
        include_data=include_data,
    )


def _parse_recipient(raw: Any, kind: Literal["signer", "carbon_copy"], where: str) -> Recipient:
    data = _object(raw, where)
    email = _text(data.get("email")) or ""
    name = _text(data.get("name")) or ""
    recipient_id = _text(data.get("recipientId")) or ""
    if not recipient_id:
        raise DocuSignError(400, "INVALID_RECIPIENT_ID", f"{where}: recipientId is required")
    if not _EMAIL.match(email):
        raise DocuSignError(
            400,
            "INVALID_EMAIL_ADDRESS_FOR_RECIPIENT",
            f"The email address for the recipient is invalid. {where}: {email!r}",
        )
    if not name:
        raise DocuSignError(400, "INVALID_USERNAME_FOR_RECIPIENT", f"{where}: name is required")
    routing = _text(data.get("routingOrder")) or "1"
    if not routing.isdigit() or int(routing) < 1:
        raise _bad_body(f"{where}: routingOrder must be a positive integer, got {routing!r}")
    return Recipient(
        kind=kind,
        recipient_id=recipient_id,
        recipient_id_guid=str(uuid.uuid4()),
        name=name,
        email=email,
        routing_order=int(routing),
        role_name=_text(data.get("roleName")),
        client_user_id=_text(data.get("clientUserId")),
    )


def _parse_documents(raw: Any) -> list[tuple[StoredDocument, bytes]]:
    parsed: list[tuple[StoredDocument, bytes]] = []
    seen: set[str] = set()
    for index, item in enumerate(_array(raw, "documents")):
        where = f"documents[{index}]"
        data = _object(item, where)
        document_id = _text(data.get("documentId")) or ""
        name = _text(data.get("name")) or ""
        encoded = _text(data.get("documentBase64"))
        if not document_id or not name:
            raise _bad_body(f"{where}: documentId and name are required")
        if document_id in seen or document_id in ("combined", "certificate", "archive"):
            raise _bad_body(f"{where}: documentId {document_id!r} is duplicated or reserved")
        seen.add(document_id)
        if not encoded:
            raise _bad_body(
                f"{where}: documentBase64 is required (the sandbox does not fetch remoteUrl)"
            )
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise _bad_body(f"{where}: documentBase64 is not valid base64") from error
        extension = (_text(data.get("fileExtension")) or "pdf").lower().lstrip(".")
        if extension != "pdf" or not content.startswith(b"%PDF-"):
            raise DocuSignError(
                400,
                "FORMAT_CONVERSION_ERROR",
                f"{where}: the sandbox accepts PDF documents only (content must start %PDF-)",
            )
        order = _text(data.get("order")) or str(index + 1)
        parsed.append(
            (
                StoredDocument(
                    document_id=document_id,
                    document_id_guid=str(uuid.uuid4()),
                    name=name,
                    order=int(order) if order.isdigit() else index + 1,
                    size=len(content),
                    sha256=hashlib.sha256(content).hexdigest(),
                    filename="",
                ),
                content,
            )
        )
    return parsed


def _parse_custom_fields(raw: Any) -> list[TextCustomField]:
    fields: list[TextCustomField] = []
    data = _object(raw, "customFields")
    for index, item in enumerate(_array(data.get("textCustomFields"), "textCustomFields")):
        field = _object(item, f"textCustomFields[{index}]")
        name = _text(field.get("name"))
        if not name:
            raise _bad_body(f"textCustomFields[{index}]: name is required")
        fields.append(
            TextCustomField(
                field_id=str(10_000_000 + index),
                name=name,
                value=_text(field.get("value")) or "",
                show=_text(field.get("show")) != "false",
                required=_truthy(field.get("required")),
            )
        )
    return fields


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise _bad_body("The request body is missing or improperly formatted.") from error
    if not isinstance(data, dict):
        raise _bad_body("The request body must be a JSON object.")
    return data


# --- the store --------------------------------------------------------------------------


class DocuSignStore:
    """Envelopes, access tokens and the Connect delivery log, with the rules that move them.

    State changes are synchronous and hold one lock (the HTTP handlers and a test may touch
    the store from different threads); each returns the Connect deliveries it produced,
    which `deliver` then sends in order. Sending is kept apart from changing so that no
    lock is held across network I/O.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        connect_url: str | None = None,
        hmac_key: str | None = None,
        account_id: str = DEFAULT_ACCOUNT_ID,
        user_id: str = DEFAULT_USER_ID,
        user_name: str = "Dealflow Sandbox Sender",
        user_email: str = "contracts@dealflow.example",
        account_name: str = "dealflow sandbox",
        base_uri: str | None = None,
        jwt_public_keys: dict[str, bytes] | None = None,
        jwt_audiences: Iterable[str] = (),
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        connect_include_data: Iterable[str] = DEFAULT_CONNECT_INCLUDE_DATA,
        connect_events: Iterable[str] | None = None,
        configuration_id: int = DEFAULT_CONFIGURATION_ID,
        delivery_timeout: float = 10.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / STATE_FILENAME
        self.documents_dir = self.state_dir / DOCUMENTS_DIRNAME
        self.connect_url = connect_url
        self.hmac_key = hmac_key
        self.account_id = account_id
        self.user_id = user_id
        self.account_name = account_name
        self.base_uri = base_uri
        self.jwt_public_keys = dict(jwt_public_keys or {})
        self.jwt_audiences = frozenset(jwt_audiences)
        self.token_lifetime = token_lifetime
        self.connect_include_data = tuple(connect_include_data)
        self.connect_events = frozenset(connect_events) if connect_events is not None else None
        self.configuration_id = configuration_id
        self.delivery_timeout = delivery_timeout
        self.wire = _Wire(
            account_id=account_id, user_id=user_id, user_name=user_name, user_email=user_email
        )
        self._lock = threading.RLock()
        self._state = self._load()
        self._send_lock: asyncio.Lock | None = None
        self._send_lock_loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[list[Delivery]]] = set()

    # persistence

    def _load(self) -> _State:
        return load_state(self.path, _State)

    def _save(self) -> None:
        save_state(self.path, self._state)

    def document_bytes(self, document: StoredDocument) -> bytes:
        return (self.documents_dir / document.filename).read_bytes()

    # OAuth

    def issue_token(self, form: dict[str, str], *, oauth_host: str) -> dict[str, Any]:
        """The JWT bearer grant: check the assertion's structure, then issue a token.

        Signatures are verified only for integration keys listed in `jwt_public_keys`; with
        none configured any RS256 JWT of the right shape is accepted, as the sandbox has no
        way to know the client's public key.
        """
        if form.get("grant_type") != JWT_BEARER_GRANT:
            raise OAuthError(
                400, "unsupported_grant_type", "grant_type must be " + JWT_BEARER_GRANT
            )
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise OAuthError(
                400, "invalid_grant", f"the assertion is not a JWT: {error}"
            ) from error
        if header.get("alg") != "RS256":
            raise OAuthError(400, "invalid_grant", "the assertion must be signed with RS256")
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise OAuthError(400, "invalid_grant", "iss (the integration key) is missing")
        if self.jwt_public_keys:
            key = self.jwt_public_keys.get(issuer)
            if key is None:
                raise OAuthError(400, "invalid_grant", "issuer_not_found")
            try:
                jwt.decode(
                    assertion,
                    key=key,
                    algorithms=["RS256"],
                    options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
                )
            except jwt.PyJWTError as error:
                raise OAuthError(400, "invalid_grant", "no_valid_keys_or_signatures") from error
        audience = claims.get("aud")
        accepted = {oauth_host, *self.jwt_audiences}
        if audience not in accepted:
            raise OAuthError(
                400,
                "invalid_grant",
                f"aud must be the OAuth host name ({oauth_host}), got {audience!r}",
            )
        now = _now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise OAuthError(400, "invalid_grant", "iat and exp are required (seconds since epoch)")
        issued = datetime.fromtimestamp(iat, UTC)
        expires = datetime.fromtimestamp(exp, UTC)
        if issued > now + _CLOCK_SKEW:
            raise OAuthError(400, "invalid_grant", "iat is in the future")
        if expires <= now:
            raise OAuthError(400, "invalid_grant", "the assertion has expired")
        if expires - issued > timedelta(hours=1) + _CLOCK_SKEW:
            raise OAuthError(400, "invalid_grant", "exp may be at most one hour after iat")
        scope = claims.get("scope")
        if not isinstance(scope, str) or "signature" not in scope.split():
            raise OAuthError(400, "invalid_scope", "scope must include 'signature'")
        subject = claims.get("sub")
        if subject is not None and (not isinstance(subject, str) or not subject):
            raise OAuthError(400, "invalid_grant", "sub must be the user id to impersonate")
        token = AccessToken(
            token=secrets.token_urlsafe(48),
            user_id=subject or self.user_id,
            client_id=issuer,
            scope=scope,
            expires_at=now + timedelta(seconds=self.token_lifetime),
        )
        with self._lock:
            self._state.tokens = {
                value: entry
                for value, entry in self._state.tokens.items()
                if entry.expires_at > now
            }
            self._state.tokens[token.token] = token
            self._save()
        return {
            "access_token": token.token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": scope,
        }

    def authenticate(self, authorization: str | None) -> AccessToken:
        """The token behind an `Authorization: Bearer` header, or DocuSign's 401."""
        scheme, _, value = (authorization or "").partition(" ")
        with self._lock:
            token = self._state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.expires_at <= _now():
            raise DocuSignError(
                401,
                "USER_AUTHENTICATION_FAILED",
                "One or both of Username and Password are invalid. Invalid access token",
            )
        return token

    def userinfo(self, token: AccessToken, *, base_uri: str) -> dict[str, Any]:
        return {
            "sub": token.user_id,
            "name": self.wire.user_name,
            "given_name": "Dealflow",
            "family_name": "Sandbox",
            "created": "2024-01-01T00:00:00.0000000Z",
            "email": self.wire.user_email,
            "accounts": [
                {
                    "account_id": self.account_id,
                    "is_default": True,
                    "account_name": self.account_name,
                    "base_uri": self.base_uri or base_uri,
                }
            ],
        }

    def check_account(self, account_id: str) -> None:
        if account_id != self.account_id:
            raise DocuSignError(
                400,
                "USER_LACKS_MEMBERSHIP",
                "The UserID does not have a valid membership in this Account.",
            )

    # envelopes: reads

    def get(self, envelope_id: str) -> StoredEnvelope:
        with self._lock:
            envelope = self._state.envelopes.get(envelope_id)
            if envelope is None:
                raise _not_found(envelope_id)
            return envelope.model_copy(deep=True)

    def envelopes(
        self,
        *,
        custom_field: tuple[str, str] | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        statuses: Collection[str] | None = None,
        envelope_ids: Collection[str] | None = None,
    ) -> list[StoredEnvelope]:
        """Envelopes matching every given filter, oldest first.

        `from_date` compares with the last modification, so a recipient's progress counts
        as a change: a polling client that asks "what changed since T" misses nothing.
        """
        with self._lock:
            candidates = [e.model_copy(deep=True) for e in self._state.envelopes.values()]
        selected = []
        for envelope in sorted(candidates, key=lambda e: e.created_at):
            if (
                custom_field is not None
                and envelope.custom_field(custom_field[0]) != custom_field[1]
            ):
                continue
            if from_date is not None and envelope.last_modified_at < from_date:
                continue
            if to_date is not None and envelope.last_modified_at > to_date:
                continue
            if statuses and envelope.status not in statuses:
                continue
            if envelope_ids is not None and envelope.envelope_id not in envelope_ids:
                continue
            selected.append(envelope)
        return selected

    def document(
        self, envelope_id: str, document_id: str, *, certificate: bool
    ) -> tuple[str, bytes]:
        """(filename, PDF bytes) for a document id, `combined` or `certificate`."""
        envelope = self.get(envelope_id)
        if document_id == "certificate":
            return "Summary.pdf", self._certificate_pdf(envelope)
        if document_id == "combined":
            return f"{envelope.envelope_id}.pdf", self._combined_pdf(envelope, certificate)
        for document in envelope.documents:
            if document.document_id == document_id:
                name = (
                    document.name
                    if document.name.lower().endswith(".pdf")
                    else f"{document.name}.pdf"
                )
                return name, self.document_bytes(document)
        raise DocuSignError(
            404, "DOCUMENT_DOES_NOT_EXIST", f"The document specified was not found: {document_id}"
        )

    def _certificate_lines(self, envelope: StoredEnvelope) -> list[str]:
        lines = [
            "Certificate Of Completion (dealflow DocuSign sandbox)",
            "",
            f"Envelope Id: {envelope.envelope_id}",
            f"Subject: {envelope.email_subject or ''}",
            f"Status: {envelope.status}",
            f"Created: {ds_time(envelope.created_at)}",
            f"Sent: {ds_time(envelope.sent_at) or '-'}",
            f"Completed: {ds_time(envelope.completed_at) or '-'}",
        ]
        if envelope.voided_at is not None:
            lines.append(f"Voided: {ds_time(envelope.voided_at)} ({envelope.voided_reason})")
        lines += ["", "Documents:"]
        lines += [f"  {d.document_id}. {d.name}  sha256 {d.sha256}" for d in envelope.documents]
        lines += ["", "Signer events:"]
        for recipient in envelope.signers:
            lines.append(
                f"  {recipient.name} <{recipient.email}> routing order {recipient.routing_order}:"
                f" {recipient.status}"
            )
            lines.append(
                f"    sent {ds_time(recipient.sent_at) or '-'}, viewed"
                f" {ds_time(recipient.delivered_at) or '-'}, signed"
                f" {ds_time(recipient.signed_at) or '-'}"
            )
            if recipient.declined_at is not None:
                lines.append(
                    f"    declined {ds_time(recipient.declined_at)}: {recipient.declined_reason}"
                )
        return lines

    def _certificate_pdf(self, envelope: StoredEnvelope) -> bytes:
        return minimal_pdf([self._certificate_lines(envelope)])

    def _combined_pdf(self, envelope: StoredEnvelope, certificate: bool) -> bytes:
        cover = [
            f"{envelope.email_subject or 'Envelope'}",
            f"Envelope Id: {envelope.envelope_id}   Status: {envelope.status}",
            "",
            "The original documents are attached to this PDF, byte for byte:",
        ]
        cover += [f"  {d.name} ({d.size} bytes, sha256 {d.sha256})" for d in envelope.documents]
        cover += ["", "Signatures:"]
        for recipient in envelope.signers:
            signed = ds_time(recipient.signed_at) if recipient.signed_at else "not signed"
            cover.append(f"  {recipient.name} <{recipient.email}>: {signed}")
        pages = [cover]
        if certificate:
            pages.append(self._certificate_lines(envelope))
        attachments = [
            (d.name if d.name.lower().endswith(".pdf") else f"{d.name}.pdf", self.document_bytes(d))
            for d in sorted(envelope.documents, key=lambda d: d.order)
        ]
        return minimal_pdf(pages, attachments)

    # envelopes: changes

    def create(self, body: dict[str, Any]) -> tuple[StoredEnvelope, list[Delivery]]:
        """Envelopes::create with inline documents; status "sent" sends it at once."""
        for name in _UNSUPPORTED_DEFINITION_FIELDS:
            if body.get(name):
                raise _bad_body(f"{name} is not supported by the sandbox; send documents inline")
        status = (_text(body.get("status")) or "created").lower()
        if status not in ("created", "sent"):
            raise _bad_body(f"status must be 'created' or 'sent' on create, got {status!r}")
        recipients_raw = _object(body.get("recipients"), "recipients")
        recipients = [
            _parse_recipient(item, "signer", f"signers[{index}]")
            for index, item in enumerate(_array(recipients_raw.get("signers"), "signers"))
        ] + [
            _parse_recipient(item, "carbon_copy", f"carbonCopies[{index}]")
            for index, item in enumerate(_array(recipients_raw.get("carbonCopies"), "carbonCopies"))
        ]
        ids = [r.recipient_id for r in recipients]
        if len(ids) != len(set(ids)):
            raise DocuSignError(400, "INVALID_RECIPIENT_ID", "recipientId values must be unique")
        documents = _parse_documents(body.get("documents"))
        subject = _text(body.get("emailSubject"))
        if status == "sent" and (
            not subject or not documents or not any(r.kind == "signer" for r in recipients)
        ):
            raise DocuSignError(
                400,
                "ENVELOPE_IS_INCOMPLETE",
                "The Envelope is not Complete. A Complete Envelope Requires Documents, "
                "Recipients, Tabs, and a Subject Line.",
            )
        notification = _event_notification(body.get("eventNotification"))
        custom_fields = _parse_custom_fields(body.get("customFields"))
        now = _now()
        envelope_id = str(uuid.uuid4())
        directory = self.documents_dir / envelope_id
        directory.mkdir(parents=True, exist_ok=True)
        stored_documents = []
        for document, content in documents:
            filename = f"{envelope_id}/{document.document_id_guid}.pdf"
            (self.documents_dir / filename).write_bytes(content)
            stored_documents.append(document.model_copy(update={"filename": filename}))
        envelope = StoredEnvelope(
            envelope_id=envelope_id,
            account_id=self.account_id,
            status="created",
            email_subject=subject,
            email_blurb=_text(body.get("emailBlurb")),
            created_at=now,
            last_modified_at=now,
            status_changed_at=now,
            documents=stored_documents,
            recipients=recipients,
            text_custom_fields=custom_fields,
            event_notification=notification,
        )
        deliveries: list[Delivery] = []
        with self._lock:
            if status == "sent":
                self._send(envelope, deliveries)
            self._commit(envelope, deliveries)
            return envelope.model_copy(deep=True), deliveries

    def update(
        self, envelope_id: str, body: dict[str, Any], *, resend: bool
    ) -> tuple[StoredEnvelope, list[Delivery]]:
        """Envelopes::update: send a draft, void (with a reason), resend, edit a draft."""
        status = (_text(body.get("status")) or "").lower()
        deliveries: list[Delivery] = []
        with self._lock:
            envelope = self._envelope(envelope_id)
            if status == "voided":
                if envelope.status not in _ACTIVE:
                    raise DocuSignError(
                        400,
                        "ENVELOPE_CANNOT_VOID_INVALID_STATE",
                        f"Only envelopes in the 'Sent' or 'Delivered' states may be voided; "
                        f"this one is '{envelope.status}'.",
                    )
                reason = _text(body.get("voidedReason"))
                if not reason:
                    raise DocuSignError(
                        400, "ENVELOPE_VOID_REASON_REQUIRED", "A void reason is required."
                    )
                now = _now()
                envelope.status = "voided"
                envelope.voided_at = now
                envelope.voided_reason = reason
                self._touch(envelope, now, status_changed=True)
                self._emit(envelope, "envelope-voided", None, deliveries)
            elif status == "sent":
                if envelope.status != "created":
                    raise DocuSignError(
                        400,
                        "ENVELOPE_INVALID_STATUS",
                        f"The envelope is already {envelope.status}.",
                    )
                subject = _text(body.get("emailSubject")) or envelope.email_subject
                envelope.email_subject = subject
                if not subject or not envelope.documents or not envelope.signers:
                    raise DocuSignError(
                        400, "ENVELOPE_IS_INCOMPLETE", "The Envelope is not Complete."
                    )
                self._send(envelope, deliveries)
            elif status:
                raise _bad_body(
                    f"the sandbox can change status to 'sent' or 'voided', not {status!r}"
                )
            elif envelope.status == "created":
                for key, attribute in (
                    ("emailSubject", "email_subject"),
                    ("emailBlurb", "email_blurb"),
                ):
                    if key in body:
                        setattr(envelope, attribute, _text(body[key]))
                self._touch(envelope, _now(), status_changed=False)
            if resend:
                self._resend(envelope, [r.recipient_id for r in envelope.recipients])
            self._commit(envelope, deliveries)
            return envelope.model_copy(deep=True), deliveries

    def update_recipients(
        self, envelope_id: str, body: dict[str, Any], *, resend: bool
    ) -> list[dict[str, Any]]:
        """EnvelopeRecipients::update: correct name/email, or resend (`resend_envelope`).

        Returns the recipientUpdateResults, one per recipient named in the body.
        """
        wanted: list[dict[str, Any]] = []
        for key in ("signers", "carbonCopies"):
            wanted += [_object(item, key) for item in _array(body.get(key), key)]
        results: list[dict[str, Any]] = []
        with self._lock:
            envelope = self._envelope(envelope_id)
            if envelope.status not in _ACTIVE and envelope.status != "created":
                raise DocuSignError(
                    400, "ENVELOPE_INVALID_STATUS", f"The envelope is {envelope.status}."
                )
            by_id = {r.recipient_id: r for r in envelope.recipients}
            to_resend: list[str] = []
            for item in wanted:
                recipient_id = _text(item.get("recipientId")) or ""
                recipient = by_id.get(recipient_id)
                result: dict[str, Any] = {"recipientId": recipient_id}
                if recipient is None:
                    result["errorDetails"] = {
                        "errorCode": "INVALID_RECIPIENT_ID",
                        "message": f"No recipient {recipient_id!r} in this envelope.",
                    }
                elif recipient.status in ("completed", "declined"):
                    result["errorDetails"] = {
                        "errorCode": "RECIPIENT_ALREADY_COMPLETED",
                        "message": "The recipient has already completed the envelope.",
                    }
                else:
                    email, name = _text(item.get("email")), _text(item.get("name"))
                    if email and _EMAIL.match(email):
                        recipient.email = email
                    if name:
                        recipient.name = name
                    to_resend.append(recipient_id)
                    result["recipientIdGuid"] = recipient.recipient_id_guid
                    result["errorDetails"] = {"errorCode": "SUCCESS", "message": ""}
                results.append(result)
            if resend:
                self._resend(envelope, to_resend)
            self._touch(envelope, _now(), status_changed=False)
            self._commit(envelope)
        return results

    def act(
        self, envelope_id: str, email: str, action: str, *, reason: str | None = None
    ) -> tuple[StoredEnvelope, list[Delivery]]:
        """A signer views, signs or declines, as DocuSign's signing page would record it.

        Routing order is enforced: only signers at the current routing order can act, so a
        later signer acting early is a 409, as they would not have the email yet.
        """
        if action not in ("view", "sign", "decline"):
            raise DocuSignError(
                400,
                "INVALID_REQUEST_PARAMETER",
                f"action must be view, sign or decline, not {action!r}",
            )
        deliveries: list[Delivery] = []
        with self._lock:
            envelope = self._envelope(envelope_id)
            if envelope.status not in _ACTIVE:
                raise DocuSignError(
                    409,
                    "ENVELOPE_INVALID_STATUS",
                    f"The envelope is '{envelope.status}'; signers can act only while it is "
                    "sent or delivered.",
                )
            wanted = email.strip().lower()
            matches = [s for s in envelope.signers if s.email.lower() == wanted]
            if not matches:
                raise DocuSignError(
                    404, "RECIPIENT_NOT_FOUND", f"No signer with email {email!r} in this envelope."
                )
            open_matches = [s for s in matches if s.status not in ("completed", "declined")]
            if not open_matches:
                raise DocuSignError(
                    409, "RECIPIENT_ALREADY_COMPLETED", f"{email} has already {matches[0].status}."
                )
            recipient = min(open_matches, key=lambda s: s.routing_order)
            current = envelope.current_routing_order()
            if recipient.status == "created" or recipient.routing_order != current:
                waiting = [
                    s.email
                    for s in envelope.signers
                    if s.routing_order < recipient.routing_order and s.status != "completed"
                ]
                raise DocuSignError(
                    409,
                    "RECIPIENT_NOT_IN_SEQUENCE",
                    f"{email} has routing order {recipient.routing_order}; signers before it "
                    f"have not completed: {', '.join(waiting)}.",
                )
            now = _now()
            if recipient.status == "sent":
                recipient.status = "delivered"
                recipient.delivered_at = now
                self._touch(envelope, now, status_changed=False)
                self._emit(envelope, "recipient-delivered", recipient.recipient_id, deliveries)
                if envelope.status == "sent":
                    envelope.status = "delivered"
                    envelope.delivered_at = now
                    self._touch(envelope, now, status_changed=True)
                    self._emit(envelope, "envelope-delivered", None, deliveries)
            if action == "sign":
                recipient.status = "completed"
                recipient.signed_at = now
                self._touch(envelope, now, status_changed=False)
                self._emit(envelope, "recipient-completed", recipient.recipient_id, deliveries)
                if envelope.current_routing_order() is None:
                    envelope.status = "completed"
                    envelope.completed_at = now
                    for copy in envelope.recipients:
                        if copy.kind == "carbon_copy":
                            copy.status = "completed"
                    self._touch(envelope, now, status_changed=True)
                    self._emit(envelope, "envelope-completed", None, deliveries)
                else:
                    self._route(envelope, now, deliveries)
            elif action == "decline":
                recipient.status = "declined"
                recipient.declined_at = now
                recipient.declined_reason = reason or "Declined in the DocuSign sandbox"
                self._touch(envelope, now, status_changed=False)
                self._emit(envelope, "recipient-declined", recipient.recipient_id, deliveries)
                envelope.status = "declined"
                envelope.declined_at = now
                self._touch(envelope, now, status_changed=True)
                self._emit(envelope, "envelope-declined", None, deliveries)
            self._commit(envelope, deliveries)
            return envelope.model_copy(deep=True), deliveries

    def _envelope(self, envelope_id: str) -> StoredEnvelope:
        """A working copy of the envelope (caller holds the lock).

        Changes are made on the copy and committed with `_commit`, so a request that fails
        half-way through its checks leaves the stored envelope exactly as it was.
        """
        envelope = self._state.envelopes.get(envelope_id)
        if envelope is None:
            raise _not_found(envelope_id)
        return envelope.model_copy(deep=True)

    def _commit(self, envelope: StoredEnvelope, deliveries: Sequence[Delivery] = ()) -> None:
        """Store a changed envelope and its Connect messages, then persist (lock held)."""
        self._state.envelopes[envelope.envelope_id] = envelope
        self._state.deliveries.extend(deliveries)
        self._save()

    @staticmethod
    def _touch(envelope: StoredEnvelope, now: datetime, *, status_changed: bool) -> None:
        envelope.last_modified_at = now
        if status_changed:
            envelope.status_changed_at = now

    def _send(self, envelope: StoredEnvelope, deliveries: list[Delivery]) -> None:
        now = _now()
        envelope.status = "sent"
        envelope.sent_at = now
        envelope.initial_sent_at = envelope.initial_sent_at or now
        self._touch(envelope, now, status_changed=True)
        for copy in envelope.recipients:
            if copy.kind == "carbon_copy":
                copy.status = "sent"
                copy.sent_at = now
        self._emit(envelope, "envelope-sent", None, deliveries)
        self._route(envelope, now, deliveries)

    def _route(self, envelope: StoredEnvelope, now: datetime, deliveries: list[Delivery]) -> None:
        """Send to the signers at the current routing order who have not had it yet."""
        current = envelope.current_routing_order()
        for signer in envelope.signers:
            if signer.routing_order == current and signer.status == "created":
                signer.status = "sent"
                signer.sent_at = now
                self._emit(envelope, "recipient-sent", signer.recipient_id, deliveries)

    def _resend(self, envelope: StoredEnvelope, recipient_ids: Iterable[str]) -> None:
        """Record a resend for each named recipient who currently has the envelope."""
        if envelope.status not in _ACTIVE:
            raise DocuSignError(
                400,
                "ENVELOPE_INVALID_STATUS",
                f"Cannot resend an envelope that is {envelope.status}.",
            )
        now = _now()
        wanted = set(recipient_ids)
        for recipient in envelope.recipients:
            if recipient.recipient_id in wanted and recipient.status in _ACTIVE:
                recipient.resends.append(now)

    def _emit(
        self,
        envelope: StoredEnvelope,
        event: str,
        recipient_id: str | None,
        deliveries: list[Delivery],
    ) -> None:
        """Snapshot the envelope now into a signed Connect message, if anyone listens."""
        notification = envelope.event_notification
        if notification is not None:
            if notification.events is not None and event not in notification.events:
                return
            url: str | None = notification.url
            include_data: Collection[str] = notification.include_data
            key = self.hmac_key if notification.include_hmac else None
        else:
            if self.connect_events is not None and event not in self.connect_events:
                return
            url = self.connect_url
            include_data = self.connect_include_data
            key = self.hmac_key
        message = self.wire.connect_message(
            envelope,
            event=event,
            recipient_id=recipient_id,
            include_data=include_data,
            configuration_id=self.configuration_id,
            document_bytes=self.document_bytes,
        )
        body = json.dumps(message, separators=(",", ":"))
        deliveries.append(
            Delivery(
                delivery_id=str(uuid.uuid4()),
                envelope_id=envelope.envelope_id,
                event=event,
                recipient_id=recipient_id,
                url=url,
                body=body,
                signature=connect_signature(key, body.encode()) if key else None,
                created_at=_now(),
            )
        )

    # Connect delivery

    def deliveries(
        self, *, envelope_id: str | None = None, event: str | None = None
    ) -> list[Delivery]:
        with self._lock:
            return [
                d.model_copy(deep=True)
                for d in self._state.deliveries
                if (envelope_id is None or d.envelope_id == envelope_id)
                and (event is None or d.event == event)
            ]

    def drop_next(self, count: int) -> int:
        """Drop the next `count` Connect messages instead of sending them (replaces any
        earlier count); returns the new count."""
        with self._lock:
            self._state.drop_remaining = max(0, count)
            self._save()
            return self._state.drop_remaining

    @property
    def drop_remaining(self) -> int:
        with self._lock:
            return self._state.drop_remaining

    def _ordered_send_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._send_lock is None or self._send_lock_loop is not loop:
            self._send_lock = asyncio.Lock()
            self._send_lock_loop = loop
        return self._send_lock

    async def deliver(
        self, deliveries: Sequence[Delivery], *, redelivery: bool = False
    ) -> list[Delivery]:
        """Send `deliveries` in order (after any already being sent); return them updated.

        Each message is tried once; the outcome is recorded on the delivery. A drop counter
        set by `drop_next` swallows messages here, not when they were produced, so "drop
        the next N" counts messages in the order they go out.
        """
        if not deliveries:
            return []
        async with self._ordered_send_lock():
            async with httpx.AsyncClient(trust_env=False, timeout=self.delivery_timeout) as client:
                for delivery in deliveries:
                    attempt = await self._attempt(client, delivery, redelivery=redelivery)
                    with self._lock:
                        for stored in self._state.deliveries:
                            if stored.delivery_id == delivery.delivery_id:
                                stored.attempts.append(attempt)
                                break
                        self._save()
        ids = {d.delivery_id for d in deliveries}
        with self._lock:
            by_id = {
                d.delivery_id: d.model_copy(deep=True)
                for d in self._state.deliveries
                if d.delivery_id in ids
            }
        return [by_id[d.delivery_id] for d in deliveries]

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: Delivery, *, redelivery: bool
    ) -> Attempt:
        url = delivery.url or (self.connect_url if redelivery else None)
        with self._lock:
            if url is not None and not redelivery and self._state.drop_remaining > 0:
                self._state.drop_remaining -= 1
                logger.info("dropped Connect %s for %s", delivery.event, delivery.envelope_id)
                return Attempt(at=_now(), url=url, dropped=True)
        if url is None:
            return Attempt(at=_now(), url=None, error="no Connect URL configured")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "DocuSign-Connect-Sandbox/1.0",
        }
        if delivery.signature is not None:
            headers["X-DocuSign-Signature-1"] = delivery.signature
        try:
            response = await client.post(url, content=delivery.body.encode(), headers=headers)
        except httpx.HTTPError as error:
            logger.warning("Connect %s to %s failed: %s", delivery.event, url, error)
            return Attempt(at=_now(), url=url, error=f"{type(error).__name__}: {error}")
        logger.info("Connect %s -> %s: %d", delivery.event, url, response.status_code)
        return Attempt(at=_now(), url=url, status_code=response.status_code)

    def deliver_in_background(self, deliveries: Sequence[Delivery]) -> None:
        """Send after the REST response, as DocuSign does; `wait_for_deliveries` awaits it."""
        if not deliveries:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(deliveries))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_for_deliveries(self) -> None:
        """Wait until every background delivery started so far has been attempted."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Send one stored message again, byte for byte (a duplicate, as Connect retries are)."""
        with self._lock:
            found = [d for d in self._state.deliveries if d.delivery_id == delivery_id]
        if not found:
            raise DocuSignError(404, "DELIVERY_NOT_FOUND", f"No Connect delivery {delivery_id}")
        (delivered,) = await self.deliver(found, redelivery=True)
        return delivered


def connect_signature(key: str, body: bytes) -> str:
    """DocuSign Connect's HMAC: base64(HMAC-SHA256(key, raw body))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode("ascii")


# --- routers ----------------------------------------------------------------------------


def _request_base(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def _include(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def create_oauth_router(store: DocuSignStore) -> APIRouter:
    """DocuSign's account server: `/oauth/token` (JWT grant) and `/oauth/userinfo`."""
    router = APIRouter(
        prefix="/oauth", tags=["sandbox: docusign oauth"], route_class=_DocuSignRoute
    )

    @router.post("/token")
    async def token(request: Request) -> JSONResponse:
        """Exchange a JWT assertion for an access token (form-encoded, as the SDK sends)."""
        form = {
            key: values[0]
            for key, values in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        host = request.headers.get("host", "")
        return JSONResponse(store.issue_token(form, oauth_host=host))

    @router.get("/userinfo")
    async def userinfo(request: Request) -> JSONResponse:
        """The token's user and accounts; `base_uri` is where the REST API answers."""
        try:
            access = store.authenticate(request.headers.get("authorization"))
        except DocuSignError as error:
            raise OAuthError(401, "invalid_request", "invalid or expired access token") from error
        return JSONResponse(store.userinfo(access, base_uri=_request_base(request)))

    return router


def create_rest_router(store: DocuSignStore) -> APIRouter:
    """The eSignature REST v2.1 subset under `/restapi/v2.1/accounts/{accountId}`."""
    router = APIRouter(
        prefix="/restapi/v2.1/accounts/{account_id}",
        tags=["sandbox: docusign esignature"],
        route_class=_DocuSignRoute,
    )

    def authorize(request: Request, account_id: str) -> None:
        store.authenticate(request.headers.get("authorization"))
        store.check_account(account_id)

    @router.post("/envelopes", status_code=201)
    async def create_envelope(account_id: str, request: Request) -> JSONResponse:
        """Envelopes::create → EnvelopeSummary; Connect messages follow asynchronously."""
        authorize(request, account_id)
        envelope, deliveries = store.create(await _json_body(request))
        store.deliver_in_background(deliveries)
        return JSONResponse(
            {
                "envelopeId": envelope.envelope_id,
                "uri": f"/envelopes/{envelope.envelope_id}",
                "statusDateTime": ds_time(envelope.status_changed_at),
                "status": envelope.status,
            },
            status_code=201,
        )

    @router.get("/envelopes")
    async def list_status_changes(
        account_id: str,
        request: Request,
        from_date: str | None = None,
        to_date: str | None = None,
        custom_field: str | None = None,
        status: str | None = None,
        envelope_ids: str | None = None,
        include: str | None = None,
        start_position: str | None = None,
        count: str | None = None,
    ) -> JSONResponse:
        """Envelopes::listStatusChanges. Like DocuSign, it needs from_date or envelope_ids."""
        authorize(request, account_id)
        ids = {i.strip() for i in envelope_ids.split(",") if i.strip()} if envelope_ids else None
        if from_date is None and ids is None:
            raise DocuSignError(
                400,
                "INVALID_REQUEST_PARAMETER",
                "The request contained at least one invalid parameter. No value specified "
                "for parameter 'from_date'.",
            )
        field: tuple[str, str] | None = None
        if custom_field is not None:
            name, separator, value = custom_field.partition("=")
            if not separator or not name:
                raise DocuSignError(
                    400, "INVALID_REQUEST_PARAMETER", "custom_field must look like name=value"
                )
            field = (name, value)
        statuses = {s.strip().lower() for s in (status or "").split(",") if s.strip()} - {"any"}
        found = store.envelopes(
            custom_field=field,
            from_date=_parse_from_date(from_date) if from_date else None,
            to_date=_parse_from_date(to_date) if to_date else None,
            statuses=statuses or None,
            envelope_ids=ids,
        )
        start = int(start_position) if start_position and start_position.isdigit() else 0
        limit = int(count) if count and count.isdigit() else len(found)
        page = found[start : start + limit]
        wanted = _include(include)
        data: dict[str, Any] = {
            "resultSetSize": str(len(page)),
            "totalSetSize": str(len(found)),
            "startPosition": str(start),
            "endPosition": str(start + len(page) - 1),
            "nextUri": "",
            "previousUri": "",
        }
        if page:  # DocuSign leaves the key out when nothing matched
            data["envelopes"] = [
                store.wire.envelope(e, include=wanted, connect=False) for e in page
            ]
        return JSONResponse(data)

    @router.get("/envelopes/{envelope_id}")
    async def get_envelope(
        account_id: str, envelope_id: str, request: Request, include: str | None = None
    ) -> JSONResponse:
        """Envelopes::get; `include=recipients,custom_fields,documents` adds those parts."""
        authorize(request, account_id)
        envelope = store.get(envelope_id)
        wanted = _include(include)
        data = store.wire.envelope(envelope, include=wanted, connect=False)
        if "documents" in wanted:
            data["envelopeDocuments"] = store.wire.documents(envelope)
        return JSONResponse(data)

    @router.put("/envelopes/{envelope_id}")
    async def update_envelope(
        account_id: str, envelope_id: str, request: Request, resend_envelope: str | None = None
    ) -> JSONResponse:
        """Envelopes::update: `{"status": "voided", "voidedReason"}`, `{"status": "sent"}`."""
        authorize(request, account_id)
        envelope, deliveries = store.update(
            envelope_id, await _json_body(request), resend=_truthy(resend_envelope)
        )
        store.deliver_in_background(deliveries)
        return JSONResponse({"envelopeId": envelope.envelope_id})

    @router.get("/envelopes/{envelope_id}/recipients")
    async def list_recipients(account_id: str, envelope_id: str, request: Request) -> JSONResponse:
        """EnvelopeRecipients::list with each recipient's status and timestamps."""
        authorize(request, account_id)
        return JSONResponse(_recipients_json(store.get(envelope_id), connect=False))

    @router.put("/envelopes/{envelope_id}/recipients")
    async def update_recipients(
        account_id: str, envelope_id: str, request: Request, resend_envelope: str | None = None
    ) -> JSONResponse:
        """EnvelopeRecipients::update; `resend_envelope=true` records a resend per recipient."""
        authorize(request, account_id)
        results = store.update_recipients(
            envelope_id, await _json_body(request), resend=_truthy(resend_envelope)
        )
        return JSONResponse({"recipientUpdateResults": results})

    @router.get("/envelopes/{envelope_id}/documents")
    async def list_documents(account_id: str, envelope_id: str, request: Request) -> JSONResponse:
        """EnvelopeDocuments::list, with the certificate entry DocuSign adds."""
        authorize(request, account_id)
        envelope = store.get(envelope_id)
        return JSONResponse(
            {
                "envelopeId": envelope.envelope_id,
                "envelopeDocuments": store.wire.documents(envelope),
            }
        )

    @router.get("/envelopes/{envelope_id}/documents/{document_id}")
    async def get_document(
        account_id: str,
        envelope_id: str,
        document_id: str,
        request: Request,
        certificate: str | None = None,
    ) -> Response:
        """The PDF of one document, `combined` (certificate=true appends the certificate),
        or `certificate`."""
        authorize(request, account_id)
        filename, content = store.document(
            envelope_id, document_id, certificate=_truthy(certificate)
        )
        return Response(
            content,
            media_type="application/pdf",
            headers={"Content-Disposition": f'file; filename="{filename}"'},
        )

    return router


def create_control_router(store: DocuSignStore) -> APIRouter:
    """The control API: act as the signers, look at envelopes, steer Connect."""
    router = APIRouter(
        prefix="/_sandbox/docusign", tags=["sandbox: docusign"], route_class=_DocuSignRoute
    )

    @router.post("/envelopes/{envelope_id}/recipients/{email}/{action}")
    async def act(envelope_id: str, email: str, action: str, request: Request) -> JSONResponse:
        """view | sign | decline (`{"reason"?}`); returns the envelope and the Connect
        deliveries this caused, already attempted, so a caller can assert on both."""
        body = await _json_body(request)
        envelope, deliveries = store.act(
            envelope_id, email, action, reason=_text(body.get("reason"))
        )
        sent = await store.deliver(deliveries)
        return JSONResponse(
            {
                "envelope": sandbox_view(store.get(envelope.envelope_id)),
                "deliveries": [d.view() for d in sent],
            }
        )

    @router.get("/envelopes")
    async def list_envelopes(
        custom_field: str | None = None, status: str | None = None
    ) -> JSONResponse:
        """Every envelope, oldest first; `custom_field=name=value` and `status` filter."""
        field: tuple[str, str] | None = None
        if custom_field is not None:
            name, _, value = custom_field.partition("=")
            field = (name, value)
        statuses = {s.strip() for s in (status or "").split(",") if s.strip()}
        found = store.envelopes(custom_field=field, statuses=statuses or None)
        return JSONResponse({"envelopes": [sandbox_view(e) for e in found]})

    @router.get("/envelopes/{envelope_id}")
    async def get_envelope(envelope_id: str) -> JSONResponse:
        """One envelope with its recipients, and the Connect deliveries it caused."""
        view = sandbox_view(store.get(envelope_id))
        view["deliveries"] = [d.view() for d in store.deliveries(envelope_id=envelope_id)]
        return JSONResponse(view)

    @router.get("/connect")
    async def connect_config() -> JSONResponse:
        """Where Connect messages go and how many will be dropped."""
        return JSONResponse(
            {
                "url": store.connect_url,
                "hmac": store.hmac_key is not None,
                "drop_remaining": store.drop_remaining,
            }
        )

    @router.put("/connect")
    async def set_connect(request: Request) -> JSONResponse:
        """`{"url"?, "hmac_key"?}`: point Connect at a service that started after the sandbox.

        Kept in memory only: after a restart, `install`'s options apply again.
        """
        body = await _json_body(request)
        if "url" in body:
            store.connect_url = _text(body["url"]) or None
        if "hmac_key" in body:
            store.hmac_key = _text(body["hmac_key"]) or None
        return await connect_config()

    @router.get("/connect/deliveries")
    async def list_deliveries(
        envelope_id: str | None = None, event: str | None = None
    ) -> JSONResponse:
        """The Connect delivery log, oldest first."""
        return JSONResponse(
            {
                "deliveries": [
                    d.view() for d in store.deliveries(envelope_id=envelope_id, event=event)
                ]
            }
        )

    @router.post("/connect/drop")
    async def drop(request: Request) -> JSONResponse:
        """`{"count": N}`: drop the next N Connect messages (to exercise polling fallbacks)."""
        body = await _json_body(request)
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise _bad_body("count must be a non-negative integer")
        return JSONResponse({"drop_remaining": store.drop_next(count)})

    @router.post("/connect/redeliver/{delivery_id}")
    async def redeliver(delivery_id: str) -> JSONResponse:
        """Send one logged message again, identical body and signature (a duplicate)."""
        return JSONResponse((await store.redeliver(delivery_id)).view())

    return router


def install(
    app: FastAPI,
    state_dir: Path,
    *,
    connect_url: str | None = None,
    hmac_key: str | None = None,
    **options: Any,
) -> DocuSignStore:
    """Add the DocuSign sandbox (OAuth, REST, control API) to `app`; return its store.

    `options` go to `DocuSignStore` (account_id, user_id, base_uri, jwt_public_keys,
    jwt_audiences, token_lifetime, connect_include_data, connect_events, ...). Serve `app`
    over HTTPS too (see the module docstring) for the SDK's OAuth calls.
    """
    store = DocuSignStore(Path(state_dir), connect_url=connect_url, hmac_key=hmac_key, **options)
    app.include_router(create_oauth_router(store))
    app.include_router(create_rest_router(store))
    app.include_router(create_control_router(store))
    return store
