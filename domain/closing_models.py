"""Inputs and results of the closed-won activities, and the ``invoice_paid`` signal's payload.

Pydantic, like the rest of ``domain``: they cross the Temporal boundary through the pydantic data
converter with money as ``Decimal`` (a string on the wire). Importable from workflow code.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel

from domain.models import DealTerms, Quote


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
