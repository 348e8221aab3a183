"""What the signature process exchanges: the tracking's input, signals and status, and the
signature activities' inputs and results (DocuSign envelopes as we see them).

Pure pydantic models, importable from workflow code (passed through the sandbox). ``DocumentRef``
lives here because the signature both receives rendered documents and returns signed ones; the
closure uses the same type.
"""

from __future__ import annotations

import datetime as dt
from datetime import datetime

from pydantic import BaseModel

# Parking models are part of what the workflows exchange (status, options); they live with the
# park-and-retry logic, pure and passed through the sandbox.
from messages.parking import ParkedFailure, RetryBudget


class DocumentRef(BaseModel):
    id: str
    kind: str
    version: int
    sha256: str
    template: str
    reason: str


RECIPIENT_RANK = {
    "created": 0,
    "sent": 1,
    "delivered": 2,
    "completed": 3,
    "signed": 3,
    "declined": 4,
}


class SignerRef(BaseModel):
    name: str
    email: str
    title: str | None = None
    routing_order: int


class SendEnvelopeInput(BaseModel):
    deal_id: str
    quote_version: int
    email_subject: str
    documents: list[DocumentRef]
    signers: list[SignerRef]


class RecipientState(BaseModel):
    recipient_id: str
    email: str
    name: str
    routing_order: int
    status: str
    delivered_at: dt.datetime | None = None
    signed_at: dt.datetime | None = None
    declined_at: dt.datetime | None = None
    declined_reason: str | None = None


class EnvelopeState(BaseModel):
    envelope_id: str
    status: str
    recipients: list[RecipientState]
    voided_reason: str | None = None


class ResendInput(BaseModel):
    envelope_id: str
    recipient_ids: list[str]
    deal_id: str | None = None  # the failure points' key (None in older histories)


class VoidInput(BaseModel):
    envelope_id: str
    reason: str
    deal_id: str | None = None  # the failure points' key (None in older histories)


class StoreSignedInput(BaseModel):
    deal_id: str
    quote_version: int
    envelope_id: str


class SignatureTiming(BaseModel):
    poll_seconds: float = 900.0
    reminder_business_days: int = 2
    reminder_seconds: float | None = None  # overrides business days (tests, demos)
    not_opened_alert_seconds: float = 48 * 3600.0
    expire_seconds: float = 30 * 86400.0
    activity_timeout_seconds: float = 30.0


class SignatureInput(BaseModel):
    deal_id: str
    deal_name: str
    quote_version: int
    owner_email: str
    documents: list[DocumentRef]
    signers: list[SignerRef]
    timing: SignatureTiming = SignatureTiming()
    retry: RetryBudget = RetryBudget()


class ConnectEvent(BaseModel):
    key: str  # dedupe key computed by the API from the message
    event: str
    envelope_id: str
    recipient_email: str | None = None


class OfflineSignature(BaseModel):
    document: DocumentRef
    by: str


class SignatureWithdrawal(BaseModel):
    by: str
    reason: str


class RecipientView(BaseModel):
    recipient_id: str
    email: str
    name: str
    routing_order: int
    status: str
    at: datetime | None = None
    declined_reason: str | None = None


class SignatureStatus(BaseModel):
    provider: str = "docusign"
    envelope_id: str | None = None
    status: str = "creating"  # creating, sent, delivered, completed, declined, voided, expired
    method: str | None = None  # docusign, wet
    recipients: list[RecipientView] = []
    declined_reason: str | None = None
    documents: list[DocumentRef] = []
    reminders_sent: int = 0
    events_received: int = 0
    duplicates_dropped: int = 0
    polls: int = 0
    reads: int = 0  # envelope re-reads (hints, polls, timers)
    parked: ParkedFailure | None = None
