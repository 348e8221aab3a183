"""The lists: `GET /v1/deals`, `GET /v1/approvals` (the approver's inbox), `GET /v1/campaigns`.

Read from the database mirror, never by querying workflows: a list must answer in one indexed
query whatever the number of running processes (``GET /v1/deals/{id}`` is the live view).
Keyset pages with opaque cursors (api/pagination.py). Visibility: a rep sees their own deals and
campaigns, ops and admin everything; the inbox is always the caller's own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import CurrentPerson, SessionDep, SettingsDep
from api.errors import ApiError
from api.list_schemas import (
    CAMPAIGN_STATUSES,
    DEAL_STAGES,
    INBOX_STATUSES,
    CampaignList,
    CampaignListItem,
    DealList,
    DealListItem,
    InboxItem,
    InboxList,
)
from api.pagination import (
    CursorQuery,
    LimitQuery,
    check_choice,
    check_query_params,
    decode_cursor,
    page,
)
from db import lists as lists_db
from db.models import Person
from dealflow.limits import LIST_DEFAULT_LIMIT
from domain.money import quantize

router = APIRouter(tags=["lists"])

SEES_EVERYTHING = frozenset({"ops", "admin"})
Email = Annotated[str | None, Query(max_length=320)]


def _money(amount: Decimal | None, currency: str | None) -> str | None:
    if amount is None or currency is None:
        return None
    return str(quantize(Decimal(amount), currency))


def _owner_scope(person: Person, owner_email: str | None) -> str | None:
    """Whose rows the caller may list: everyone's for ops/admin, else only their own."""
    if SEES_EVERYTHING & set(person.roles):
        return owner_email.lower() if owner_email else None
    if owner_email is not None and owner_email.lower() != person.email:
        raise ApiError(403, "forbidden", "A rep lists only their own; ops and admin list all.")
    return person.email


@router.get("/v1/deals", response_model=DealList)
async def list_deals(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    stage: Annotated[str | None, Query(description="One of the deal stages.")] = None,
    owner_email: Email = None,
    customer: Annotated[
        str | None, Query(max_length=300, description="The account name, any case.")
    ] = None,
    limit: LimitQuery = LIST_DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> DealList:
    """Deals, newest first (rep: their own; ops, admin: all)."""
    check_query_params(request, ("stage", "owner_email", "customer", "limit", "cursor"))
    check_choice("stage", stage, DEAL_STAGES)
    owner = _owner_scope(person, owner_email)
    filters = {"stage": stage, "owner": owner, "customer": customer.lower() if customer else None}
    after = decode_cursor(cursor, "deals", filters, arity=2)
    rows = await lists_db.list_deals(
        session, owner_email=owner, stage=stage, customer=customer, after=after, limit=limit
    )
    rows, next_cursor = page(rows, limit, "deals", filters, lambda r: (r.created_at, r.id))
    return DealList(
        items=[
            DealListItem(
                id=r.id,
                name=r.name,
                stage=r.stage,
                owner_email=r.owner_email,
                customer=r.account_name,
                total=_money(r.total, r.quote_currency),
                currency=r.quote_currency or r.currency,
                updated_at=r.updated_at,
                created_at=r.created_at,
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


def _decides_as(row, email: str) -> str:  # noqa: ANN001 - a Row of approval_inbox
    if row.holder_email == email:
        return "escalation_target" if row.escalated_to == email else "approver"
    return "delegate"


@router.get("/v1/approvals", response_model=InboxList)
async def approval_inbox(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[str, Query(description="Only `pending` today.")] = "pending",
    limit: LimitQuery = LIST_DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> InboxList:
    """The caller's inbox: every pending step they hold or may decide, soonest due first."""
    check_query_params(request, ("status", "limit", "cursor"))
    check_choice("status", status, INBOX_STATUSES)
    filters = {"status": status, "me": person.email}
    after = decode_cursor(cursor, "approvals", filters, arity=2)
    rows = await lists_db.approval_inbox(session, email=person.email, after=after, limit=limit)
    rows, next_cursor = page(rows, limit, "approvals", filters, lambda r: (r.due_at, r.step_id))
    return InboxList(
        items=[
            InboxItem(
                step_id=r.step_id,
                deal_id=r.deal_id,
                deal_name=r.deal_name,
                customer=r.customer,
                role=r.role,
                reason=r.reason,
                status=r.status,
                due_at=r.due_at,
                total=_money(r.total, r.currency),
                currency=r.currency,
                approver_email=r.approver_email,
                holder_email=r.holder_email,
                delegate_email=r.delegate_email,
                escalated_to=r.escalated_to,
                escalation_level=r.escalation_level,
                may_decide_as=_decides_as(r, person.email),
                requested_at=r.requested_at,
                decision_url=f"{settings.public_base_url}/v1/approvals/{r.step_id}/decision",
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


@router.get("/v1/campaigns", response_model=CampaignList)
async def list_campaigns(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    status: Annotated[str | None, Query(description="A campaign status.")] = None,
    owner_email: Email = None,
    limit: LimitQuery = LIST_DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> CampaignList:
    """Campaigns, newest first (rep: their own; ops, admin: all)."""
    check_query_params(request, ("status", "owner_email", "limit", "cursor"))
    check_choice("status", status, CAMPAIGN_STATUSES)
    owner = _owner_scope(person, owner_email)
    filters = {"status": status, "owner": owner}
    after = decode_cursor(cursor, "campaigns", filters, arity=2)
    rows = await lists_db.list_campaigns(
        session, owner_email=owner, status=status, after=after, limit=limit
    )
    rows, next_cursor = page(rows, limit, "campaigns", filters, lambda c: (c.created_at, c.id))
    return CampaignList(
        items=[
            CampaignListItem(
                id=c.id,
                name=c.name,
                status=c.status,
                owner_email=c.owner_email,
                sender_email=c.sender_email,
                contact_count=c.contact_count,
                created_at=c.created_at,
                updated_at=c.updated_at,
                launched_at=c.launched_at,
                finished_at=c.finished_at,
            )
            for c in rows
        ],
        next_cursor=next_cursor,
    )
