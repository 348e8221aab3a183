"""Small builders for domain test values: a valid deal by default, override what a test needs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from domain.approval_policy import ApprovalPolicy, load_policy
from domain.models import AccountIn, CustomTermIn, DealTerms, LineItemIn, SignerIn
from domain.tax import TaxTable, load_tax_table

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
TAX_TABLE_PATH = CONFIG_DIR / "tax_jurisdictions.toml"
POLICY_PATH = CONFIG_DIR / "approval_policy.toml"


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like a literal in assertions
    return Decimal(str(value))


def tax_table() -> TaxTable:
    return load_tax_table(TAX_TABLE_PATH)


def policy() -> ApprovalPolicy:
    return load_policy(POLICY_PATH)


def line(
    sku: str = "PLAT-SEAT", quantity: str | int = 10, unit_price: str | int = "1000.00"
) -> LineItemIn:
    return LineItemIn(
        sku=sku,
        description=f"{sku} subscription",
        quantity=D(quantity),
        unit_price=D(unit_price),
    )


def account(**overrides: Any) -> AccountIn:
    fields: dict[str, Any] = {
        "name": "Acme Corp",
        "domain": "acme.example",
        "country": "US",
        "region": "FL",  # not in the tax table: no sales tax, so totals stay round
        "employees": 120,
    }
    fields.update(overrides)
    return AccountIn(**fields)


def signer(
    name: str = "Pat Buyer",
    email: str = "pat@acme.example",
    title: str | None = "Head of Operations",
    routing_order: int = 1,
) -> SignerIn:
    return SignerIn(name=name, email=email, title=title, routing_order=routing_order)


def term(kind: str, text: str = "Custom clause.") -> CustomTermIn:
    return CustomTermIn(kind=kind, text=text)


def make_deal(**overrides: Any) -> DealTerms:
    """A valid 12-month, annually billed USD deal of 10,000.00 with no discount and no tax."""
    fields: dict[str, Any] = {
        "deal_id": "deal-1",
        "name": "Acme platform",
        "owner_email": "rep@dealflow.example",
        "currency": "USD",
        "term_months": 12,
        "billing_frequency": "annual",
        "payment_terms_days": 30,
        "discount_pct": D(0),
        "line_items": (line(quantity=10, unit_price="1000.00"),),
        "account": account(),
        "signers": (signer(),),
        "custom_terms": (),
    }
    fields.update(overrides)
    return DealTerms(**fields)


def deal_with_total(total: str, **overrides: Any) -> DealTerms:
    """A deal whose quote total is exactly ``total`` (one line, no discount, no tax)."""
    return make_deal(line_items=(line(quantity=1, unit_price=total),), **overrides)
