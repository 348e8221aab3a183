"""What the DocuSign sandbox answers: DocuSign's JSON shapes of envelopes, recipients and
documents, the control API's view, and a tiny PDF writer for the documents it generates."""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sandbox.docusign.models import Recipient, StoredDocument, StoredEnvelope, _now, ds_time

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
