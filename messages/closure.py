"""What the deal-closure process exchanges: the closure's input, options, signals, update and
status; the deal activities' inputs and results; the closing (closed-won) activities' inputs and
results and the ``invoice_paid`` signal.

Pure pydantic models, money as ``Decimal`` (a string on the wire through the pydantic data
converter); importable from workflow code (passed through the sandbox).
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from domain.models import ApprovalPlan, DealTerms, Problem, Quote
from messages.approval import ApprovalStep, PlannedRequest

# Parking models are part of what the workflows exchange (status, options); they live with the
# park-and-retry logic, pure and passed through the sandbox.
from messages.parking import ParkedFailure, RetryBudget
from messages.signature import DocumentRef, SignatureStatus, SignatureTiming


class LoadDealInput(BaseModel):
    deal_id: str


class LoadDealResult(BaseModel):
    revision: int
    terms: DealTerms | None  # None when the deal cannot even be read as terms
    problems: tuple[Problem, ...]
    close_by: dt.date | None = None
    external_id: str | None = None


class PriceQuoteInput(BaseModel):
    deal_id: str
    version: int
    revision: int
    terms: DealTerms


class PricedQuote(BaseModel):
    version: int
    quote: Quote
    terms_sha256: str
    tax_table_version: str


class RenderDocumentsInput(BaseModel):
    deal_id: str
    version: int
    # Render at most this many of the documents not stored yet (None: all of them). A closure
    # renders a large package in a few short calls: each call that ends well has its own retry
    # budget, and a worker lost mid-call loses at most one call's renders.
    at_most: int | None = None


class RenderDocumentsResult(BaseModel):
    documents: tuple[DocumentRef, ...]  # those stored, in the package's order
    remaining: int = 0  # documents still to render (a call with ``at_most``)


class PlanApprovalsInput(BaseModel):
    deal_id: str
    version: int


class PlanApprovalsResult(BaseModel):
    plan: ApprovalPlan
    assignees: dict[str, str]  # policy role -> approver email (from the org directory)
    requests: list[PlannedRequest] = []
    escalation_levels: int = 2
    link_ttl_hours: float = 72.0
    min_history: int = 3


class RecordStageInput(BaseModel):
    deal_id: str
    stage: str
    reason: str | None = None
    at: dt.datetime
    idempotency_key: str


class SignedDocumentRef(BaseModel):
    """A signed document as the CRM note links it."""

    id: str
    kind: str
    sha256: str
    url: str


class ClosingInput(BaseModel):
    """What every closed-won activity needs. Idempotency keys derive from deal id + version."""

    deal_id: str
    quote_version: int
    owner_email: str
    external_id: str | None
    terms: DealTerms
    quote: Quote
    close_date: date
    signed_documents: list[SignedDocumentRef]


class CrmResult(BaseModel):
    crm_deal_id: str
    note_id: str
    status: str  # "closed_won"


class BillingResult(BaseModel):
    stripe_customer_id: str
    stripe_invoice_id: str | None  # the one invoice, or a subscription's first invoice
    stripe_subscription_id: str | None
    status: str  # "invoice_sent" | "subscription_created"
    due_date: date | None  # when the (first) invoice falls due: the unpaid timer starts here
    amount_due: Decimal  # the (first) invoice as we priced it: payment_schedule[0], tax included


class RevenueResult(BaseModel):
    rows: int  # revenue schedule rows of this deal and quote version (written now or before)
    commission_amount: Decimal
    commission_payable_on: str  # "close" | "payment"


class InvoicePaid(BaseModel):
    """Signal ``invoice_paid`` on the deal closure, sent by ``POST /v1/webhooks/stripe``."""

    invoice_id: str
    paid_at: datetime
    amount_paid: Decimal | None = None


class DealClosureOptions(BaseModel):
    """Timing chosen by the caller from Settings: nothing in workflows/ reads the environment."""

    activity_timeout_seconds: float = 30.0
    # Every approval SLA in wall-clock seconds instead of the policy's hours (tests, demos).
    approval_sla_override_seconds: float | None = None
    signature: SignatureTiming = SignatureTiming()
    public_base_url: str = "http://127.0.0.1:8000"
    finance_email: str | None = None  # told, with the rep, when an invoice is overdue
    payment_grace_seconds: float = 7 * 86400.0
    # Retry budget of every activity, passed on to the children.
    retry: RetryBudget = RetryBudget()


class DealClosureInput(BaseModel):
    deal_id: str
    owner_email: str
    options: DealClosureOptions = DealClosureOptions()


class DealUpdated(BaseModel):
    revision: int
    by: str


class LostInfo(BaseModel):
    reason: str
    competitor: str | None = None
    notes: str | None = None


class CancelRequest(BaseModel):
    by: str
    reason: str | None = None
    lost: LostInfo | None = None  # POST /v1/deals/{id}/lost: end at closed_lost, not cancelled


class QuoteSummary(BaseModel):
    version: int
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal
    currency: str
    tax_note: str
    terms_sha256: str


class PlannedApprovalStatus(BaseModel):
    step_id: str
    stage: int
    mode: str
    role: str
    approver_email: str
    reason: str
    reasons: list[str]
    status: str  # "planned" until the approval chain asks


class TimelineEntry(BaseModel):
    at: datetime
    event: str
    detail: str | None = None


class DealClosureStatus(BaseModel):
    deal_id: str
    stage: str
    approval_chain_workflow_id: str | None = None  # the running chain, for live approvals
    stage_reason: str | None = None
    problems: list[Problem] = []
    quote: QuoteSummary | None = None
    documents: list[DocumentRef] = []
    approvals: list[PlannedApprovalStatus] = []
    approval_steps: list[ApprovalStep] = []  # the last chain's steps, once it has run
    signature_workflow_id: str | None = None  # the running signature tracking, for live state
    signature: SignatureStatus | None = None
    billing: dict[str, Any] | None = None
    crm: dict[str, Any] | None = None
    parked: ParkedFailure | None = None  # while the closure waits in needs_attention for a retry
    approval_required: bool | None = None
    policy_version: str | None = None
    policy_sha256: str | None = None
    timeline: list[TimelineEntry] = []
