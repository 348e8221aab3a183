"""Deals, their children, quote versions and documents."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CustomTerm, Deal, Document, LineItem, QuoteVersion, Signer
from domain.models import AccountIn, CustomTermIn, DealTerms, LineItemIn, SignerIn

_SCALAR_FIELDS = (
    "external_id",
    "name",
    "currency",
    "term_months",
    "billing_frequency",
    "payment_terms_days",
    "discount_pct",
    "competitor",
    "notes",
    "close_by",
)
_ACCOUNT_FIELDS = ("name", "domain", "country", "region", "employees", "industry", "tax_id")


def new_deal_id() -> str:
    return f"deal_{uuid.uuid4().hex[:20]}"


def _apply(deal: Deal, data: dict[str, Any]) -> None:
    for field in _SCALAR_FIELDS:
        if field in data:
            setattr(deal, field, data[field])
    if data.get("account") is not None:
        for field in _ACCOUNT_FIELDS:
            if field in data["account"]:
                setattr(deal, f"account_{field}", data["account"][field])
    if data.get("line_items") is not None:
        deal.line_items = [
            LineItem(
                position=i,
                sku=li["sku"],
                description=li["description"],
                quantity=li["quantity"],
                unit_price=li["unit_price"],
            )
            for i, li in enumerate(data["line_items"])
        ]
    if data.get("signers") is not None:
        deal.signers = [
            Signer(
                name=s["name"],
                email=s["email"],
                title=s.get("title"),
                routing_order=s["routing_order"],
            )
            for s in data["signers"]
        ]
    if data.get("custom_terms") is not None:
        deal.custom_terms = [
            CustomTerm(position=i, kind=t["kind"], text=t["text"])
            for i, t in enumerate(data["custom_terms"])
        ]


async def create_deal(session: AsyncSession, *, owner_email: str, data: dict[str, Any]) -> Deal:
    """Insert a deal with its line items, signers and custom terms."""
    deal = Deal(id=new_deal_id(), owner_email=owner_email, stage="draft", revision=1)
    deal.line_items, deal.signers, deal.custom_terms = [], [], []
    _apply(deal, data)
    session.add(deal)
    await session.flush()
    return deal


async def update_deal(session: AsyncSession, *, deal: Deal, data: dict[str, Any]) -> Deal:
    """Apply a partial change (lists replace whole) and bump the revision."""
    _apply(deal, data)
    deal.revision += 1
    deal.updated_at = dt.datetime.now(dt.UTC)
    await session.flush()
    return deal


async def get_deal(session: AsyncSession, *, deal_id: str, for_update: bool = False) -> Deal | None:
    """One deal with its children loaded."""
    stmt = select(Deal).where(Deal.id == deal_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_stage(session: AsyncSession, *, deal_id: str, stage: str) -> None:
    """Mirror the closure's stage onto the deal row."""
    deal = await session.get(Deal, deal_id)
    if deal is not None and deal.stage != stage:
        deal.stage = stage
        await session.flush()


def deal_terms(deal: Deal) -> DealTerms:
    """The domain view of a deal: what pricing, documents and approvals read."""
    return DealTerms(
        deal_id=deal.id,
        name=deal.name,
        owner_email=deal.owner_email,
        currency=deal.currency,
        term_months=deal.term_months,
        billing_frequency=deal.billing_frequency,  # type: ignore[arg-type]
        payment_terms_days=deal.payment_terms_days,
        discount_pct=Decimal(deal.discount_pct).normalize() + Decimal("0.00"),
        line_items=tuple(
            LineItemIn(
                sku=li.sku,
                description=li.description,
                quantity=Decimal(li.quantity).normalize(),
                unit_price=Decimal(li.unit_price).normalize(),
            )
            for li in deal.line_items
        ),
        account=AccountIn(
            name=deal.account_name,
            domain=deal.account_domain,
            country=deal.account_country,
            region=deal.account_region,
            employees=deal.account_employees,
            industry=deal.account_industry,
            tax_id=deal.account_tax_id,
        ),
        signers=tuple(
            SignerIn(name=s.name, email=s.email, title=s.title, routing_order=s.routing_order)
            for s in deal.signers
        ),
        custom_terms=tuple(CustomTermIn(kind=t.kind, text=t.text) for t in deal.custom_terms),  # type: ignore[arg-type]
        competitor=deal.competitor,
        notes=deal.notes,
    )


async def get_quote_version(
    session: AsyncSession, *, deal_id: str, version: int
) -> QuoteVersion | None:
    """One stored quote version."""
    stmt = select(QuoteVersion).where(
        QuoteVersion.deal_id == deal_id, QuoteVersion.version == version
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def latest_quote_version(session: AsyncSession, *, deal_id: str) -> QuoteVersion | None:
    """The newest quote version of a deal."""
    stmt = (
        select(QuoteVersion)
        .where(QuoteVersion.deal_id == deal_id)
        .order_by(QuoteVersion.version.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def count_quote_versions(session: AsyncSession, *, deal_id: str) -> int:
    """How many quote versions a deal has."""
    stmt = select(func.count()).select_from(QuoteVersion).where(QuoteVersion.deal_id == deal_id)
    return int((await session.execute(stmt)).scalar_one())


async def list_documents(
    session: AsyncSession, *, deal_id: str, version: int | None = None
) -> list[Document]:
    """A deal's documents, newest version first, in package order within a version."""
    stmt = select(Document).where(Document.deal_id == deal_id)
    if version is not None:
        stmt = stmt.where(Document.version == version)
    stmt = stmt.order_by(Document.version.desc(), Document.created_at, Document.id)
    return list((await session.execute(stmt)).scalars())


async def get_document(session: AsyncSession, *, document_id: str) -> Document | None:
    """One document by id."""
    return await session.get(Document, document_id)


async def insert_document(session: AsyncSession, **values: Any) -> None:
    """Record a rendered document once: a retried render finds the row and leaves it."""
    stmt = insert(Document).values(content_type="application/pdf", **values)
    await session.execute(stmt.on_conflict_do_nothing())


async def insert_quote_version(session: AsyncSession, **values: Any) -> None:
    """Store a priced quote version once: a retried pricing finds the row and leaves it."""
    await session.execute(insert(QuoteVersion).values(**values).on_conflict_do_nothing())
