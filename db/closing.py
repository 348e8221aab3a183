"""Closed-won data access: the step ledger, revenue schedule rows, commissions.

Functions take a session and keyword arguments; the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.closing_models import ClosingStep, Commission, RevenueScheduleRow
from domain.billing import RevenueRow

# The steps whose external_ref is a Stripe invoice or subscription id (the webhook's keys).
INVOICE_STEP = "stripe.invoice"
SUBSCRIPTION_STEP = "stripe.subscription"


async def get_steps(
    session: AsyncSession, *, deal_id: str, quote_version: int
) -> dict[str, ClosingStep]:
    """Every recorded step of a deal's quote version, by step name."""
    rows = await session.scalars(
        select(ClosingStep).where(
            ClosingStep.deal_id == deal_id, ClosingStep.quote_version == quote_version
        )
    )
    return {row.step: row for row in rows}


async def record_step_done(
    session: AsyncSession,
    *,
    deal_id: str,
    quote_version: int,
    step: str,
    external_ref: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Mark a step done with what the outside system answered (replacing a rejection)."""
    values = {"status": "done", "external_ref": external_ref, "detail": detail or {}}
    stmt = insert(ClosingStep).values(
        deal_id=deal_id, quote_version=quote_version, step=step, **values
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["deal_id", "quote_version", "step"],
            set_={**values, "updated_at": func.now()},
            # A done step is never overwritten: the first answer is the one we keep.
            where=ClosingStep.status != "done",
        )
    )


async def record_step_rejected(
    session: AsyncSession, *, deal_id: str, quote_version: int, step: str, reason: str
) -> int:
    """Count a refusal of a step (its next attempt needs a fresh idempotency key); return it."""
    stmt = insert(ClosingStep).values(
        deal_id=deal_id,
        quote_version=quote_version,
        step=step,
        status="rejected",
        detail={"rejections": 1, "reason": reason},
    )
    rejections = func.coalesce(ClosingStep.detail["rejections"].as_integer(), 0) + 1
    stmt = stmt.on_conflict_do_update(
        index_elements=["deal_id", "quote_version", "step"],
        set_={
            "detail": func.jsonb_build_object("rejections", rejections, "reason", reason),
            "updated_at": func.now(),
        },
        where=ClosingStep.status != "done",
    ).returning(ClosingStep.detail)
    detail = (await session.execute(stmt)).scalar_one_or_none()
    return int((detail or {}).get("rejections", 0))


async def find_deal_by_invoice(session: AsyncSession, *, invoice_id: str) -> str | None:
    """The deal whose closing created this Stripe invoice (a subscription's first one too)."""
    return await _find_deal(session, step=INVOICE_STEP, external_ref=invoice_id)


async def find_deal_by_subscription(session: AsyncSession, *, subscription_id: str) -> str | None:
    """The deal whose closing created this Stripe subscription (for its later invoices)."""
    return await _find_deal(session, step=SUBSCRIPTION_STEP, external_ref=subscription_id)


async def _find_deal(session: AsyncSession, *, step: str, external_ref: str) -> str | None:
    return await session.scalar(
        select(ClosingStep.deal_id)
        .where(
            ClosingStep.step == step,
            ClosingStep.external_ref == external_ref,
            ClosingStep.status == "done",
        )
        .order_by(ClosingStep.id.desc())
        .limit(1)
    )


async def insert_revenue_rows(
    session: AsyncSession,
    *,
    deal_id: str,
    quote_version: int,
    currency: str,
    rows: Sequence[RevenueRow],
) -> int:
    """Write the rows not written yet; return how many this call wrote."""
    if not rows:
        return 0
    stmt = (
        insert(RevenueScheduleRow)
        .values(
            [
                {
                    "deal_id": deal_id,
                    "quote_version": quote_version,
                    "month_index": row.month_index,
                    "period_start": row.period_start,
                    "period_end": row.period_end,
                    "amount": row.amount,
                    "currency": currency,
                }
                for row in rows
            ]
        )
        .on_conflict_do_nothing(index_elements=["deal_id", "quote_version", "month_index"])
        .returning(RevenueScheduleRow.id)
    )
    return len((await session.execute(stmt)).all())


async def list_revenue_rows(
    session: AsyncSession, *, deal_id: str, quote_version: int
) -> list[RevenueScheduleRow]:
    rows = await session.scalars(
        select(RevenueScheduleRow)
        .where(
            RevenueScheduleRow.deal_id == deal_id,
            RevenueScheduleRow.quote_version == quote_version,
        )
        .order_by(RevenueScheduleRow.month_index)
    )
    return list(rows)


async def insert_commission(
    session: AsyncSession,
    *,
    deal_id: str,
    quote_version: int,
    rep_email: str,
    basis_amount: Decimal,
    rate_pct: Decimal,
    amount: Decimal,
    currency: str,
    payable_on: str,
    payable_at: dt.datetime | None,
    policy_version: str,
) -> Commission:
    """Write the commission once; return the stored row (the first one, on a retry)."""
    stmt = insert(Commission).values(
        deal_id=deal_id,
        quote_version=quote_version,
        rep_email=rep_email,
        basis_amount=basis_amount,
        rate_pct=rate_pct,
        amount=amount,
        currency=currency,
        payable_on=payable_on,
        status="payable" if payable_on == "close" else "pending_payment",
        payable_at=payable_at,
        policy_version=policy_version,
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["deal_id", "quote_version"]))
    row = await session.scalar(
        select(Commission).where(
            Commission.deal_id == deal_id, Commission.quote_version == quote_version
        )
    )
    assert row is not None
    return row


async def mark_commission_paid(session: AsyncSession, *, deal_id: str, paid_at: dt.datetime) -> int:
    """A commission waiting for payment becomes payable when the invoice is paid (once)."""
    result = await session.execute(
        update(Commission)
        .where(Commission.deal_id == deal_id, Commission.status == "pending_payment")
        .values(status="payable", payable_at=paid_at)
    )
    return result.rowcount or 0
