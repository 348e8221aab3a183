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

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
MoneyIn = Annotated[Decimal, Field(ge=0, max_digits=16, decimal_places=4, allow_inf_nan=False)]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=4, allow_inf_nan=False)]
Pct = Annotated[Decimal, Field(ge=0, le=100, decimal_places=4, allow_inf_nan=False)]


class _In(BaseModel):
    # Unknown fields are refused: a typo ("discount_percent") must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class LineItemCreate(_In):
    sku: Short
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
    quantity: Quantity
    unit_price: MoneyIn


class AccountCreate(_In):
    name: Name
    domain: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=255)]
    country: Country
    region: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,3}$")] | None = None
    employees: Annotated[int, Field(ge=0)] | None = None
    industry: Short | None = None
    tax_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None


class AccountUpdate(_In):
    name: Name | None = None
    domain: Annotated[str, StringConstraints(min_length=3, max_length=255)] | None = None
    country: Country | None = None
    region: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,3}$")] | None = None
    employees: Annotated[int, Field(ge=0)] | None = None
    industry: Short | None = None
    tax_id: Annotated[str, StringConstraints(max_length=64)] | None = None


class SignerCreate(_In):
    name: Name
    email: EmailStr
    title: Short | None = None
    routing_order: Annotated[int, Field(ge=1, le=100)]


class CustomTermCreate(_In):
    kind: Literal["legal", "security", "payment", "other"]
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)]


class DealCreate(_In):
    external_id: Short | None = None
    name: Name
    currency: Currency
    term_months: Annotated[int, Field(ge=1, le=120)]
    billing_frequency: Literal["annual", "quarterly", "monthly"]
    payment_terms_days: Annotated[int, Field(ge=0, le=365)]
    discount_pct: Pct = Decimal("0")
    line_items: Annotated[list[LineItemCreate], Field(max_length=500)] = []
    account: AccountCreate
    signers: Annotated[list[SignerCreate], Field(max_length=20)] = []
    custom_terms: Annotated[list[CustomTermCreate], Field(max_length=50)] = []
    competitor: Short | None = None
    notes: Annotated[str, StringConstraints(max_length=20000)] | None = None
    close_by: date | None = None


class DealUpdate(_In):
    """A partial change. Lists (line items, signers, custom terms) replace the whole list."""

    external_id: Short | None = None
    name: Name | None = None
    currency: Currency | None = None
    term_months: Annotated[int, Field(ge=1, le=120)] | None = None
    billing_frequency: Literal["annual", "quarterly", "monthly"] | None = None
    payment_terms_days: Annotated[int, Field(ge=0, le=365)] | None = None
    discount_pct: Pct | None = None
    line_items: Annotated[list[LineItemCreate], Field(max_length=500)] | None = None
    account: AccountUpdate | None = None
    signers: Annotated[list[SignerCreate], Field(max_length=20)] | None = None
    custom_terms: Annotated[list[CustomTermCreate], Field(max_length=50)] | None = None
    competitor: Short | None = None
    notes: Annotated[str, StringConstraints(max_length=20000)] | None = None
    close_by: date | None = None


class CancelCreate(_In):
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


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
