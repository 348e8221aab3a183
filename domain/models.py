"""Typed values shared by the domain functions, activities and workflows.

They are pydantic models so they cross the Temporal boundary through the pydantic data converter
(money stays ``Decimal`` on the wire, as a string) and so the API can reuse them. Frozen: a quote
or a plan is a fact once computed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

BillingFrequency = Literal["annual", "quarterly", "monthly"]
TermKind = Literal["legal", "security", "payment", "other"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class LineItemIn(_Frozen):
    sku: str
    description: str
    quantity: Decimal
    unit_price: Decimal


class AccountIn(_Frozen):
    name: str
    domain: str
    country: str  # ISO 3166-1 alpha-2, upper case
    region: str | None = None  # US state / Canadian province code, e.g. "CA", "ON"
    employees: int | None = None
    industry: str | None = None
    tax_id: str | None = None  # e.g. an EU VAT id "DE123456789"


class SignerIn(_Frozen):
    name: str
    email: str
    title: str | None = None
    routing_order: int


class CustomTermIn(_Frozen):
    kind: TermKind
    text: str


class DealTerms(_Frozen):
    """Everything about a deal that pricing, documents and approvals depend on."""

    deal_id: str
    name: str
    owner_email: str
    currency: str  # ISO 4217, upper case
    term_months: int
    billing_frequency: BillingFrequency
    payment_terms_days: int
    discount_pct: Decimal
    line_items: tuple[LineItemIn, ...]
    account: AccountIn
    signers: tuple[SignerIn, ...]
    custom_terms: tuple[CustomTermIn, ...] = ()
    competitor: str | None = None
    notes: str | None = None


class PricedLine(_Frozen):
    sku: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    line_total: Decimal


class TaxResult(_Frozen):
    jurisdiction: str  # e.g. "US-CA", "CA-ON", "EU-DE", "none"
    rate_pct: Decimal
    amount: Decimal
    reverse_charge: bool = False
    note: str  # human-readable reason, printed on the order form


class Installment(_Frozen):
    seq: int  # 1-based
    period_start_month: int  # 0-based month offset from the subscription start
    period_months: int
    amount: Decimal


class RevenueMonth(_Frozen):
    month_index: int  # 0-based month offset from the subscription start
    amount: Decimal


class Quote(_Frozen):
    currency: str
    lines: tuple[PricedLine, ...]
    subtotal: Decimal
    discount_pct: Decimal
    discount: Decimal
    taxable_amount: Decimal
    tax: TaxResult
    total: Decimal
    term_months: int
    billing_frequency: BillingFrequency
    payment_schedule: tuple[Installment, ...]
    revenue_schedule: tuple[RevenueMonth, ...]


class DocumentChoice(_Frozen):
    kind: Literal["order_form", "msa", "dpa", "security_exhibit", "executive_summary"]
    template: str  # path under templates/, e.g. "contracts/order_form.html.j2"
    reason: str


class PlannedApproval(_Frozen):
    role: str  # "finance_director", "sales_vp", "legal", "infosec", "cfo", "ceo"
    reasons: tuple[str, ...]  # one written reason per rule that fired
    rule_ids: tuple[str, ...]


class PlanStage(_Frozen):
    index: int  # 0-based, stages run in order
    mode: Literal["all", "any"]
    approvals: tuple[PlannedApproval, ...]


class ApprovalPlan(_Frozen):
    policy_version: str
    policy_sha256: str
    stages: tuple[PlanStage, ...]  # only non-empty stages

    @property
    def is_empty(self) -> bool:
        return not self.stages


class Problem(_Frozen):
    field: str  # dotted path, e.g. "line_items[0].quantity"
    message: str
