"""Request and response schemas at the edge (``XxxCreate`` / ``XxxUpdate`` / ``XxxRead``).

Structural checks live here (types, formats, ranges: a negative price is never a valid deal).
Completeness checks (no signers yet, a US account without a state) live in
``domain.validation`` and are reported by the closure as ``needs_attention``, so a rep can save a
draft before it is complete.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from api.fields import (
    BoundedText,
    Currency,
    MoneyIn,
    Pct,
    Quantity,
    RequiredText,
)
from dealflow import limits

# Every text type is as long as its column (dealflow/limits.py) and refuses what PostgreSQL cannot
# store (api/fields.py).
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,3}$")]
TermMonths = Annotated[int, Field(ge=1, le=limits.MAX_TERM_MONTHS)]
PaymentTermsDays = Annotated[int, Field(ge=0, le=limits.MAX_PAYMENT_TERMS_DAYS)]
Employees = Annotated[int, Field(ge=0, le=limits.MAX_EMPLOYEES)]
Email = EmailStr  # email-validator bounds it (254 characters) within the column (limits.EMAIL)


class _In(BaseModel):
    # Unknown fields are refused: a typo ("discount_percent") must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class LineItemCreate(_In):
    sku: RequiredText(limits.SKU)
    description: BoundedText(limits.LINE_DESCRIPTION)
    quantity: Quantity
    unit_price: MoneyIn

    @model_validator(mode="after")
    def _line_total_fits(self) -> LineItemCreate:
        # The bound that keeps the largest quote inside Numeric(18, 4): see dealflow/limits.py.
        if self.quantity * self.unit_price > limits.MAX_LINE_TOTAL:
            raise ValueError(
                f"quantity x unit_price is {self.quantity * self.unit_price:f}; a line may "
                f"total at most {limits.MAX_LINE_TOTAL:,}"
            )
        return self


class AccountCreate(_In):
    name: RequiredText(limits.ACCOUNT_NAME)
    domain: BoundedText(limits.DOMAIN, min_len=3)
    country: Country
    region: Region | None = None
    employees: Employees | None = None
    industry: RequiredText(limits.INDUSTRY) | None = None
    tax_id: BoundedText(limits.TAX_ID) | None = None


class AccountUpdate(_In):
    name: RequiredText(limits.ACCOUNT_NAME) | None = None
    domain: BoundedText(limits.DOMAIN, min_len=3) | None = None
    country: Country | None = None
    region: Region | None = None
    employees: Employees | None = None
    industry: RequiredText(limits.INDUSTRY) | None = None
    tax_id: BoundedText(limits.TAX_ID) | None = None


class SignerCreate(_In):
    name: RequiredText(limits.PERSON_NAME)
    email: Email
    title: RequiredText(limits.TITLE) | None = None
    routing_order: Annotated[int, Field(ge=1, le=100)]


class CustomTermCreate(_In):
    kind: Literal["legal", "security", "payment", "other"]
    text: RequiredText(limits.CUSTOM_TERM_TEXT)


LineItems = Annotated[list[LineItemCreate], Field(max_length=limits.MAX_LINE_ITEMS)]
Signers = Annotated[list[SignerCreate], Field(max_length=limits.MAX_SIGNERS)]
CustomTerms = Annotated[list[CustomTermCreate], Field(max_length=limits.MAX_CUSTOM_TERMS)]
Notes = BoundedText(limits.NOTES, strip=False)


class DealCreate(_In):
    external_id: RequiredText(limits.EXTERNAL_ID) | None = None
    name: RequiredText(limits.DEAL_NAME)
    currency: Currency
    term_months: TermMonths
    billing_frequency: Literal["annual", "quarterly", "monthly"]
    payment_terms_days: PaymentTermsDays
    discount_pct: Pct = Decimal("0")
    line_items: LineItems = []
    account: AccountCreate
    signers: Signers = []
    custom_terms: CustomTerms = []
    competitor: RequiredText(limits.COMPETITOR) | None = None
    notes: Notes | None = None
    close_by: date | None = None


class DealUpdate(_In):
    """A partial change. Lists (line items, signers, custom terms) replace the whole list."""

    external_id: RequiredText(limits.EXTERNAL_ID) | None = None
    name: RequiredText(limits.DEAL_NAME) | None = None
    currency: Currency | None = None
    term_months: TermMonths | None = None
    billing_frequency: Literal["annual", "quarterly", "monthly"] | None = None
    payment_terms_days: PaymentTermsDays | None = None
    discount_pct: Pct | None = None
    line_items: LineItems | None = None
    account: AccountUpdate | None = None
    signers: Signers | None = None
    custom_terms: CustomTerms | None = None
    competitor: RequiredText(limits.COMPETITOR) | None = None
    notes: Notes | None = None
    close_by: date | None = None


class CancelCreate(_In):
    reason: BoundedText(limits.REASON) | None = None


class QuoteRead(BaseModel):
    version: int
    subtotal: str
    discount: str
    tax: str
    total: str
    currency: str
    tax_note: str | None = None


class DocumentRead(BaseModel):
    id: str
    kind: str
    version: int
    sha256: str
    url: str
    reason: str | None = None


class ApprovalRead(BaseModel):
    step_id: str
    stage: int
    role: str
    approver_email: str
    reason: str
    status: str
    due_at: datetime | None = None
    reminded_at: datetime | None = None
    escalated_to: str | None = None
    decided_by: str | None = None
    decision: str | None = None
    comment: str | None = None
    decided_at: datetime | None = None
    holder_email: str | None = None
    delegate_email: str | None = None
    escalation_level: int = 0
    expected_decision: dict[str, Any] | None = None
    carried_from_version: int | None = None


class TimelineRead(BaseModel):
    at: datetime
    event: str
    detail: str | None = None


class DealRead(BaseModel):
    id: str
    external_id: str | None
    name: str
    owner_email: str
    currency: str
    term_months: int
    billing_frequency: str
    payment_terms_days: int
    discount_pct: str
    line_items: list[dict[str, Any]]
    account: dict[str, Any]
    signers: list[dict[str, Any]]
    custom_terms: list[dict[str, Any]]
    competitor: str | None
    notes: str | None
    close_by: date | None = None
    revision: int
    stage: str
    stage_reason: str | None = None
    problems: list[dict[str, str]] = []
    quote: QuoteRead | None = None
    documents: list[DocumentRead] = []
    approvals: list[ApprovalRead] = []
    approval_required: bool | None = None
    signature: dict[str, Any] | None = None
    billing: dict[str, Any] | None = None
    crm: dict[str, Any] | None = None
    # After closed-won: {"status", "csm_email", "kickoff_at", "renewal_at"} (the handoff mirror).
    handoff: dict[str, Any] | None = None
    timeline: list[TimelineRead] = []
    workflow_id: str | None = None
    live: bool = Field(
        False, description="True when the closure state was read from the running workflow."
    )
    created_at: datetime
    updated_at: datetime


class ReadyToCloseRead(BaseModel):
    workflow_id: str
    run_id: str
    status_url: str
