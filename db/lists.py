"""Keyset queries behind the lists: deals, campaigns and the approver's inbox.

Each takes the position to resume after (the last row's sort key, or None) and returns at most
``limit + 1`` rows, so the caller knows whether there is a next page without a COUNT. Each sort
ends in the primary key, so the order is total and a cursor names exactly one place. The
indexes that serve them are in migration ``0005`` (names in the comments below).

Deals and campaigns are sorted by ``created_at`` (newest first), not ``updated_at``: a stage
change moves ``updated_at``, and a row that moved ahead of a client's position while it paged
would be skipped. ``created_at`` never moves, so paging is stable while rows change and while
rows are added.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, true, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from db.campaign_models import Campaign
from db.models import ApprovalRequest, Deal, QuoteVersion


async def list_deals(
    session: AsyncSession,
    *,
    owner_email: str | None,
    stage: str | None,
    customer: str | None,
    after: Sequence[Any] | None,
    limit: int,
) -> Sequence[Row]:
    """Deals newest first, with their latest quote's total (ix_i9_deals_* indexes)."""
    latest = (
        select(QuoteVersion.total, QuoteVersion.currency)
        .where(QuoteVersion.deal_id == Deal.id)
        .order_by(QuoteVersion.version.desc())
        .limit(1)
        .lateral("latest_quote")
    )
    stmt = select(
        Deal.id,
        Deal.name,
        Deal.stage,
        Deal.owner_email,
        Deal.account_name,
        Deal.currency,
        Deal.created_at,
        Deal.updated_at,
        latest.c.total,
        latest.c.currency.label("quote_currency"),
    ).outerjoin(latest, true())
    if owner_email is not None:
        stmt = stmt.where(Deal.owner_email == owner_email)
    if stage is not None:
        stmt = stmt.where(Deal.stage == stage)
    if customer is not None:
        stmt = stmt.where(func.lower(Deal.account_name) == customer.lower())
    if after is not None:
        stmt = stmt.where(tuple_(Deal.created_at, Deal.id) < tuple_(after[0], after[1]))
    stmt = stmt.order_by(Deal.created_at.desc(), Deal.id.desc()).limit(limit + 1)
    return (await session.execute(stmt)).all()


async def list_campaigns(
    session: AsyncSession,
    *,
    owner_email: str | None,
    status: str | None,
    after: Sequence[Any] | None,
    limit: int,
) -> Sequence[Campaign]:
    """Campaigns newest first (ix_i9_campaigns_* indexes)."""
    stmt = select(Campaign)
    if owner_email is not None:
        stmt = stmt.where(Campaign.owner_email == owner_email)
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    if after is not None:
        stmt = stmt.where(tuple_(Campaign.created_at, Campaign.id) < tuple_(after[0], after[1]))
    stmt = stmt.order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit + 1)
    return list((await session.execute(stmt)).scalars())


async def approval_inbox(
    session: AsyncSession,
    *,
    email: str,
    after: Sequence[Any] | None,
    limit: int,
) -> Sequence[Row]:
    """Pending steps ``email`` may decide, soonest due first (no due time last).

    Read from ``approval_requests``, the mirror the approval chain's activities keep: the holder
    (the approver, or whoever an escalation moved the step to) and the delegate (out of office)
    are exactly who the chain's ``decide`` validator admits. Steps of the caller's own deals are
    left out: nobody may decide those, whatever the route.

    Two branches, as the holder and as the delegate, each an ordered range scan of its partial
    index (ix_i9_approval_requests_pending_holder / _pending_delegate) joined to its deal by
    primary key and cut at ``limit + 1``, then merged: an ``OR`` of the two would make
    PostgreSQL fetch every pending step of the person and sort them (measured: 91 ms for 500
    pending steps among 10,000 deals, against well under 1 ms this way).
    """
    r = ApprovalRequest

    def branch(*who: Any) -> Any:
        stmt = (
            select(
                r.step_id,
                r.deal_id,
                r.role,
                r.reason,
                r.status,
                r.due_at,
                r.requested_at,
                r.approver_email,
                r.holder_email,
                r.delegate_email,
                r.escalated_to,
                r.escalation_level,
                r.quote_version,
                Deal.name.label("deal_name"),
                Deal.account_name.label("customer"),
            )
            .join(Deal, Deal.id == r.deal_id)
            .where(r.status == "pending", *who, Deal.owner_email != email)
        )
        if after is not None:
            due, step_id = after
            if due is None:
                stmt = stmt.where(r.due_at.is_(None), r.step_id > step_id)
            else:
                stmt = stmt.where(
                    or_(
                        r.due_at > due,
                        and_(r.due_at == due, r.step_id > step_id),
                        r.due_at.is_(None),
                    )
                )
        return stmt.order_by(r.due_at.asc().nulls_last(), r.step_id).limit(limit + 1).subquery()

    held = branch(r.holder_email == email)
    delegated = branch(r.delegate_email == email, r.holder_email != email)
    merged = union_all(select(held), select(delegated)).subquery("inbox")
    stmt = (
        select(merged, QuoteVersion.total, QuoteVersion.currency)
        .outerjoin(
            QuoteVersion,
            and_(
                QuoteVersion.deal_id == merged.c.deal_id,
                QuoteVersion.version == merged.c.quote_version,
            ),
        )
        .order_by(merged.c.due_at.asc().nulls_last(), merged.c.step_id)
        .limit(limit + 1)
    )
    return (await session.execute(stmt)).all()


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None
