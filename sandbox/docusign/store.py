"""The DocuSign sandbox's store: envelopes and the rules that move them (create, send, sign,
decline, void, resend), persisted on every change; OAuth and Connect come from their modules."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sandbox.docusign.auth import OAuthGrants
from sandbox.docusign.connect import ConnectDelivery, connect_signature
from sandbox.docusign.models import (
    _ACTIVE,
    _EMAIL,
    DEFAULT_ACCOUNT_ID,
    DEFAULT_CONFIGURATION_ID,
    DEFAULT_CONNECT_INCLUDE_DATA,
    DEFAULT_TOKEN_LIFETIME,
    DEFAULT_USER_ID,
    DOCUMENTS_DIRNAME,
    STATE_FILENAME,
    Delivery,
    DocuSignError,
    StoredDocument,
    StoredEnvelope,
    _bad_body,
    _not_found,
    _now,
    _State,
    ds_time,
)
from sandbox.docusign.parsing import (
    _UNSUPPORTED_DEFINITION_FIELDS,
    _array,
    _event_notification,
    _object,
    _parse_custom_fields,
    _parse_documents,
    _parse_recipient,
    _text,
)
from sandbox.docusign.wire import _Wire, minimal_pdf
from sandbox.files import load_state, save_state

# --- the store --------------------------------------------------------------------------


class DocuSignStore(OAuthGrants, ConnectDelivery):
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
