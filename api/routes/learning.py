"""``GET /v1/learning/events``: one event per won or lost deal (ops, admin, sales_vp)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import CurrentPerson, SessionDep
from api.errors import ApiError
from api.handoff_schemas import LearningEventList, LearningEventRead
from api.pagination import LimitQuery, check_choice, check_query_params
from db import handoff as handoff_db
from dealflow.limits import LIST_DEFAULT_LIMIT
from domain.money import plain_decimal

router = APIRouter(prefix="/v1/learning", tags=["learning"])


def _dec(value: Decimal | None) -> str | None:
    return plain_decimal(value) if value is not None else None


@router.get("/events", response_model=LearningEventList)
async def learning_events(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    kind: Annotated[str | None, Query(description="won or lost")] = None,
    since: Annotated[dt.datetime | None, Query(description="RFC 3339; events at or after")] = None,
    limit: LimitQuery = LIST_DEFAULT_LIMIT,
) -> LearningEventList:
    """Newest first."""
    if not ({"ops", "admin"} & set(person.roles) or "sales_vp" in (person.approver_roles or [])):
        raise ApiError(403, "forbidden", "Learning events are for ops, admin and the Sales VP.")
    check_query_params(request, ("kind", "since", "limit"))
    check_choice("kind", kind, {"won", "lost"})
    if since is not None and since.tzinfo is None:
        raise ApiError(422, "invalid_request", "since needs a time zone (RFC 3339, e.g. ...Z).")
    rows = await handoff_db.list_learning(session, kind=kind, since=since, limit=limit)
    return LearningEventList(
        items=[
            LearningEventRead(
                deal_id=r.deal_id,
                kind=r.kind,
                at=r.at,
                cycle_days=_dec(r.cycle_days),
                total=_dec(r.total),
                currency=r.currency,
                discount_pct=_dec(r.discount_pct),
                competitor=r.competitor,
                reason=r.reason,
                approval_hours=_dec(r.approval_hours),
                signature_hours=_dec(r.signature_hours),
            )
            for r in rows
        ]
    )
