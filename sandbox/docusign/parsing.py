"""Reading an envelope definition and its parts from a request, with DocuSign's error codes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from typing import Any, Literal

from fastapi import Request

from sandbox.docusign.models import (
    _EMAIL,
    DocuSignError,
    EventNotificationConfig,
    Recipient,
    StoredDocument,
    TextCustomField,
    _bad_body,
)
from sandbox.docusign.wire import _bool_text

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
