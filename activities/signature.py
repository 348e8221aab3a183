"""Activities of the signature process: send the envelope, read it, remind, void, store the signed
documents, through the DocuSign client (``integrations/docusign.py``, injected by worker.py).

The DocuSign SDK is synchronous, so every call runs in a thread. A retried ``send_envelope``
first looks for the envelope our key marks (a create that timed out may still have succeeded).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

from docusign_esign import (
    CustomFields,
    Document,
    EnvelopeDefinition,
    Recipients,
    Signer,
    TextCustomField,
)
from docusign_esign.client.api_exception import ApiException
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import deals as deals_db
from db.audit import append_audit
from db.models import Document as DocumentRow
from db.models import Person
from db.org import OrgDirectory
from dealflow.faults import CrashPoints
from dealflow.holds import HoldPoints
from dealflow.ids import document_id, envelope_key
from dealflow.settings import Settings
from integrations.docusign import KEY_FIELD, DocuSignClient
from messages.signature import (
    DocumentRef,
    EnvelopeState,
    ResendInput,
    SendEnvelopeInput,
    SignerRef,
    StoreSignedInput,
    VoidInput,
)


class SignatureActivities:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        docusign: DocuSignClient,
        crash_points: CrashPoints,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._docusign = docusign
        self._crash = crash_points
        self._holds = HoldPoints(settings.state_dir, enabled=settings.is_sandbox)

    @activity.defn
    async def send_envelope(self, input: SendEnvelopeInput) -> str:
        """Create and send the envelope for a quote version, or find the one already sent."""
        self._crash.failures.check("send_envelope", input.deal_id)
        key = envelope_key(input.deal_id, input.quote_version)
        existing = await asyncio.to_thread(self._docusign.find, key)
        if existing:
            return existing
        signers = await self._with_countersigner(input.signers)
        documents = []
        async with self._sessions() as session:
            rows = {
                d.id: d
                for d in await deals_db.list_documents(
                    session, deal_id=input.deal_id, version=input.quote_version
                )
            }
        for i, ref in enumerate(input.documents, start=1):
            row = rows[ref.id]
            pdf = (self._settings.document_dir / row.storage_ref).read_bytes()
            documents.append(
                Document(
                    document_base64=base64.b64encode(pdf).decode(),
                    name=ref.kind.replace("_", " ").title(),
                    file_extension="pdf",
                    document_id=str(i),
                )
            )
        signers = [
            Signer(
                email=s.email,
                name=s.name,
                recipient_id=str(i),
                routing_order=str(s.routing_order),
            )
            for i, s in enumerate(signers, start=1)
        ]
        definition = EnvelopeDefinition(
            email_subject=input.email_subject,
            documents=documents,
            recipients=Recipients(signers=signers),
            custom_fields=CustomFields(
                text_custom_fields=[TextCustomField(name=KEY_FIELD, value=key, show="false")]
            ),
            status="sent",
        )
        try:
            envelope_id = await asyncio.to_thread(self._docusign.create, definition)
        except ApiException as err:
            if err.status and 400 <= int(err.status) < 500 and int(err.status) != 429:
                raise ApplicationError(
                    f"DocuSign refused the envelope: {err.body!r}",
                    type="DocuSignRejected",
                    non_retryable=True,
                ) from err
            raise
        self._crash.checkpoint("send_envelope.after_create")
        return envelope_id

    async def _with_countersigner(self, signers: list[SignerRef]) -> list[SignerRef]:
        """The customer's signers in routing order, then our countersigner (org directory)."""
        ordered = sorted(signers, key=lambda s: s.routing_order)
        org = OrgDirectory.load(self._settings.org_directory_path)
        async with self._sessions() as session:
            person = await session.get(Person, org.countersigner)
        if person is None:
            raise ApplicationError(
                f"countersigner {org.countersigner} is not in the org directory",
                type="DocuSignRejected",
                non_retryable=True,
            )
        last = max((s.routing_order for s in ordered), default=0)
        return [
            *ordered,
            SignerRef(
                name=person.name, email=person.email, title=person.title, routing_order=last + 1
            ),
        ]

    @activity.defn
    async def envelope_state(self, envelope_id: str) -> EnvelopeState:
        """The envelope and its recipients as DocuSign has them now."""
        self._crash.failures.check("envelope_state", envelope_id)
        state = await asyncio.to_thread(self._docusign.state, envelope_id)
        # Test hook: hold the state as read, so a test can deliver a hint during the read.
        await self._holds.wait("envelope_state", envelope_id)
        return state

    @activity.defn
    async def resend_envelope(self, input: ResendInput) -> None:
        """Remind signers who have not signed (DocuSign re-sends their email)."""
        self._crash.failures.check("resend_envelope", input.deal_id or input.envelope_id)
        await asyncio.to_thread(self._docusign.resend, input.envelope_id, input.recipient_ids)

    @activity.defn
    async def void_envelope(self, input: VoidInput) -> None:
        """Void the envelope unless it already ended (voiding twice is an error at DocuSign)."""
        self._crash.failures.check("void_envelope", input.deal_id or input.envelope_id)
        state = await asyncio.to_thread(self._docusign.state, input.envelope_id)
        if state.status in ("voided", "completed", "declined"):
            return
        await asyncio.to_thread(self._docusign.void, input.envelope_id, input.reason)

    @activity.defn
    async def store_signed_documents(self, input: StoreSignedInput) -> list[DocumentRef]:
        """Download the combined signed PDF and the certificate; store each once, with sha256."""
        self._crash.failures.check("store_signed_documents", input.deal_id)
        refs = []
        for kind, which in (("signed_contract", "combined"), ("certificate", "certificate")):
            data = await asyncio.to_thread(self._docusign.download, input.envelope_id, which)
            refs.append(
                await store_document(
                    self._settings,
                    self._sessions,
                    deal_id=input.deal_id,
                    version=input.quote_version,
                    kind=kind,
                    data=data,
                    reason=f"From DocuSign envelope {input.envelope_id}",
                )
            )
        return refs


async def store_document(
    settings: Settings,
    sessions: async_sessionmaker,
    *,
    deal_id: str,
    version: int,
    kind: str,
    data: bytes,
    reason: str,
    actor: str = "workflow",
) -> DocumentRef:
    """Store a PDF we received (signed contract, certificate, wet signature) once per kind."""
    doc_id = document_id(deal_id, kind, version)
    sha = hashlib.sha256(data).hexdigest()
    rel = Path(deal_id) / f"v{version}" / f"{kind}.pdf"
    path = settings.document_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pdf.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    async with sessions.begin() as session:
        stmt = insert(DocumentRow).values(
            id=doc_id,
            deal_id=deal_id,
            kind=kind,
            version=version,
            template="",
            reason=reason,
            content_type="application/pdf",
            sha256=sha,
            size_bytes=len(data),
            storage_ref=str(rel),
            html_sha256="",
            html_storage_ref="",
        )
        await session.execute(stmt.on_conflict_do_nothing())
        row = await session.get(DocumentRow, doc_id)
        assert row is not None
        await append_audit(
            session,
            deal_id=deal_id,
            actor=actor,
            channel="docusign" if actor == "workflow" else "api",
            event="document.stored",
            detail={"kind": kind, "version": version, "sha256": row.sha256},
            idempotency_key=f"{doc_id}/stored",
        )
    return DocumentRef(
        id=doc_id, kind=kind, version=version, sha256=row.sha256, template="", reason=reason
    )
