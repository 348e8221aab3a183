"""DocuSign eSignature through ``docusign-esign``: envelopes, recipients, documents.

The SDK is synchronous (urllib3), so every call runs in a thread. Authentication is the JWT
grant: the integration key, the impersonated user and the RSA private key from Settings; the
token is cached until shortly before it expires. DocuSign takes no idempotency key on envelope
creation, so each envelope carries our own key in a hidden custom field (``dealflow_key`` =
deal id + quote version) and a retried create first looks for it: a create that timed out may
still have succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import threading
import time
from pathlib import Path

from docusign_esign import (
    ApiClient,
    Configuration,
    CustomFields,
    Document,
    Envelope,
    EnvelopeDefinition,
    EnvelopesApi,
    Recipients,
    Signer,
    TextCustomField,
)
from docusign_esign.client.api_exception import ApiException
from docusign_esign.client.api_response import RESTClientObject
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
from messages.signature import (
    DocumentRef,
    EnvelopeState,
    RecipientState,
    ResendInput,
    SendEnvelopeInput,
    SignerRef,
    StoreSignedInput,
    VoidInput,
)

KEY_FIELD = "dealflow_key"


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class DocuSignClient:
    """A small interface over the SDK: the few calls dealflow makes, blocking."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._api: EnvelopesApi | None = None
        self._account_id = ""
        self._expires = 0.0

    def _envelopes(self) -> tuple[EnvelopesApi, str]:
        with self._lock:
            if self._api is None or time.time() > self._expires:
                self._connect()
            assert self._api is not None
            return self._api, self._account_id

    def _connect(self) -> None:
        s = self._settings
        client = ApiClient(oauth_host_name=s.docusign_oauth_host)
        if s.docusign_ca_cert:
            # The sandbox serves OAuth over TLS with a self-signed certificate; trust it the way
            # the SDK allows (it hardcodes https for OAuth).
            configuration = Configuration()
            configuration.ssl_ca_cert = str(s.docusign_ca_cert)
            client.rest_client = RESTClientObject(configuration=configuration)
        token = client.request_jwt_user_token(
            client_id=s.docusign_integration_key,
            user_id=s.docusign_user_id,
            oauth_host_name=s.docusign_oauth_host,
            private_key_bytes=s.secret("docusign_private_key").encode(),
            expires_in=3600,
            scopes=["signature", "impersonation"],
        )
        account = client.get_user_info(token.access_token).accounts[0]
        client.host = account.base_uri + "/restapi"
        client.set_default_header("Authorization", f"Bearer {token.access_token}")
        self._api = EnvelopesApi(client)
        self._account_id = account.account_id
        self._expires = time.time() + int(token.expires_in or 3600) - 300

    def find(self, key: str) -> str | None:
        api, account = self._envelopes()
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = api.list_status_changes(
            account, custom_field=f"{KEY_FIELD}={key}", from_date=since
        )
        for envelope in result.envelopes or []:
            if envelope.status != "voided":
                return envelope.envelope_id
        return None

    def create(self, definition: EnvelopeDefinition) -> str:
        api, account = self._envelopes()
        return api.create_envelope(account, envelope_definition=definition).envelope_id

    def state(self, envelope_id: str) -> EnvelopeState:
        api, account = self._envelopes()
        envelope = api.get_envelope(account, envelope_id)
        recipients = api.list_recipients(account, envelope_id)
        return EnvelopeState(
            envelope_id=envelope_id,
            status=envelope.status,
            voided_reason=envelope.voided_reason,
            recipients=[
                RecipientState(
                    recipient_id=r.recipient_id,
                    email=r.email,
                    name=r.name,
                    routing_order=int(r.routing_order or 1),
                    status=r.status,
                    delivered_at=_parse_time(r.delivered_date_time),
                    signed_at=_parse_time(r.signed_date_time),
                    declined_at=_parse_time(r.declined_date_time),
                    declined_reason=r.declined_reason,
                )
                for r in recipients.signers or []
            ],
        )

    def resend(self, envelope_id: str, recipient_ids: list[str]) -> None:
        api, account = self._envelopes()
        api.update_recipients(
            account,
            envelope_id,
            recipients=Recipients(signers=[Signer(recipient_id=r) for r in recipient_ids]),
            resend_envelope="true",
        )

    def void(self, envelope_id: str, reason: str) -> None:
        api, account = self._envelopes()
        api.update(account, envelope_id, envelope=Envelope(status="voided", voided_reason=reason))

    def download(self, envelope_id: str, document: str) -> bytes:
        api, account = self._envelopes()
        data = api.get_document(account, document, envelope_id)
        return data if isinstance(data, bytes) else Path(data).read_bytes()


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
