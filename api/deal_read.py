"""The deal as the API shows it (``DealRead``): the row, and the live closure when it answers.

A closure that answers its query gives the stage, timeline, approvals, quote and documents;
without one (a draft, or no worker to answer) the database mirror gives the quote and documents
of the latest quote version.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import DealRead, DocumentRead, QuoteRead
from db import deals as deals_db
from db.models import Deal
from dealflow.ids import deal_closure_workflow_id
from dealflow.settings import Settings
from domain.money import plain_decimal, quantize
from messages.approval import ApprovalStep
from messages.closure import DealClosureStatus


class _Quote(Protocol):
    """The live quote summary and the quote-version row both have these."""

    version: int
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal
    currency: str


class _Document(Protocol):
    """The live document reference and the document row both have these."""

    id: str
    kind: str
    version: int
    sha256: str
    reason: str | None


def money(amount: Decimal, currency: str) -> str:
    """An amount as the API writes it: a string, rounded to the currency's minor unit."""
    return str(quantize(Decimal(amount), currency))


def _quote_read(q: _Quote, tax_note: str | None) -> QuoteRead:
    return QuoteRead(
        version=q.version,
        subtotal=money(q.subtotal, q.currency),
        discount=money(q.discount, q.currency),
        tax=money(q.tax, q.currency),
        total=money(q.total, q.currency),
        currency=q.currency,
        tax_note=tax_note,
    )


def _document_reads(settings: Settings, docs: Sequence[_Document]) -> list[DocumentRead]:
    return [
        DocumentRead(
            id=d.id,
            kind=d.kind,
            version=d.version,
            sha256=d.sha256,
            url=f"{settings.public_base_url}/v1/documents/{d.id}",
            reason=d.reason,
        )
        for d in docs
    ]


def _deal_body(deal: Deal) -> dict[str, Any]:
    return {
        "id": deal.id,
        "external_id": deal.external_id,
        "name": deal.name,
        "owner_email": deal.owner_email,
        "currency": deal.currency,
        "term_months": deal.term_months,
        "billing_frequency": deal.billing_frequency,
        "payment_terms_days": deal.payment_terms_days,
        "discount_pct": plain_decimal(deal.discount_pct),
        "line_items": [
            {
                "sku": li.sku,
                "description": li.description,
                "quantity": plain_decimal(li.quantity),
                "unit_price": money(li.unit_price, deal.currency),
            }
            for li in deal.line_items
        ],
        "account": {
            "name": deal.account_name,
            "domain": deal.account_domain,
            "country": deal.account_country,
            "region": deal.account_region,
            "employees": deal.account_employees,
            "industry": deal.account_industry,
            "tax_id": deal.account_tax_id,
        },
        "signers": [
            {"name": s.name, "email": s.email, "title": s.title, "routing_order": s.routing_order}
            for s in deal.signers
        ],
        "custom_terms": [{"kind": t.kind, "text": t.text} for t in deal.custom_terms],
        "competitor": deal.competitor,
        "notes": deal.notes,
        "close_by": deal.close_by,
        "revision": deal.revision,
        "stage": deal.stage,
        "created_at": deal.created_at,
        "updated_at": deal.updated_at,
    }


def _approvals(live: DealClosureStatus, steps: list[ApprovalStep]) -> list[dict[str, Any]]:
    if not steps:
        return [a.model_dump() for a in live.approvals]
    out = []
    for s in steps:
        row = s.model_dump()
        row["expected_decision"] = (
            {
                "median_hours": s.expected_median_hours,
                "p90_hours": s.expected_p90_hours,
                "source": s.expected_source,
            }
            if s.expected_source
            else None
        )
        out.append(row)
    return out


async def deal_read(
    session: AsyncSession,
    settings: Settings,
    deal: Deal,
    live: DealClosureStatus | None,
    steps: list[ApprovalStep] | None = None,
) -> DealRead:
    """The deal's read body: ``live`` (the closure's status query) when given, else the mirror."""
    body = _deal_body(deal)
    body["workflow_id"] = deal_closure_workflow_id(deal.id) if deal.stage != "draft" else None
    if live is not None:
        body.update(
            stage=live.stage,
            stage_reason=live.stage_reason,
            live=True,
            problems=[p.model_dump() for p in live.problems],
            approval_required=live.approval_required,
            timeline=[t.model_dump() for t in live.timeline],
            approvals=_approvals(live, steps or []),
            billing=live.billing,
            crm=live.crm,
        )
        if live.quote is not None:
            body["quote"] = _quote_read(live.quote, live.quote.tax_note)
        body["documents"] = _document_reads(settings, live.documents)
        return DealRead(**body)
    # No live answer (no closure, or no worker to answer the query): the database mirror.
    qv = await deals_db.latest_quote_version(session, deal_id=deal.id)
    if qv is not None:
        body["quote"] = _quote_read(qv, qv.quote.get("tax", {}).get("note"))
        docs = await deals_db.list_documents(session, deal_id=deal.id, version=qv.version)
        body["documents"] = _document_reads(settings, docs)
    return DealRead(**body)
