"""``/v1/handoffs/{deal}``: read, supply missing fields, reassign, retry, cancel, items done;
and ``POST /v1/deals/{id}/lost``.

Reads come from the handoff workflow's ``status`` query (``live: true``), else the database
mirror. PATCH is accepted from the moment the deal exists, so a rep can supply the primary
contact and success goals before the deal is won and the handoff never waits for them. The
Temporal calls are in ``api/handoff.py``; a task marked done in ``api/handoff_tasks.py``.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api.access import deal_or_404, is_deal_owner
from api.closure import closure_status
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep, require_role
from api.errors import ApiError
from api.handoff import (
    cancel_result,
    cs_lead,
    csm_of,
    end_closure_lost,
    handoff_read,
    live_handoff,
    mirror_read,
    reassign_csm,
    request_retry,
    see_handoff,
    start_cancel,
    tell_details_updated,
    works_on,
)
from api.handoff_schemas import (
    HandoffCancelCreate,
    HandoffItemRead,
    HandoffPatch,
    HandoffRead,
    HandoffRetryRead,
    LostCreate,
    LostRead,
    ReassignCreate,
)
from api.handoff_tasks import closed_conflict, complete_task, item_read
from db import deals as deals_db
from db import handoff as handoff_db
from db.audit import append_audit
from db.org import get_person
from messages.closure import CancelRequest, LostInfo
from messages.handoff import CancelHandoff, Reassign

router = APIRouter(prefix="/v1/handoffs", tags=["handoffs"])
lost_router = APIRouter(prefix="/v1/deals", tags=["deals"])

WON_STAGES = frozenset({"closed_won", "handoff"})


@router.get("/{deal_id}", response_model=HandoffRead)
async def get_handoff(
    deal_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> HandoffRead:
    """The handoff (owner rep, the assigned CSM, the CS lead, ops, admin)."""
    seen = await see_handoff(session, temporal, deal_id)
    if not (works_on(person, seen) or person.email == cs_lead(settings)):
        raise ApiError(403, "forbidden", "Only the owner, the CSM, the CS lead or ops may read.")
    if seen.live is not None:
        return handoff_read(seen.live)
    return await mirror_read(session, deal_id, exists=seen.exists)


@router.patch("/{deal_id}", response_model=HandoffRead)
async def patch_handoff(
    deal_id: str,
    body: HandoffPatch,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> HandoffRead:
    """Supply what ``missing`` names (owner rep, the CSM, ops); a waiting handoff resumes."""
    seen = await see_handoff(session, temporal, deal_id)
    if not works_on(person, seen):
        raise ApiError(403, "forbidden", "Only the owner, the CSM or ops may change the handoff.")
    changes = body.model_dump(exclude_unset=True, mode="json")
    if not changes:
        raise ApiError(422, "invalid_request", "The change is empty.")
    details = await handoff_db.save_details(session, deal_id, changes=changes, by=person.email)
    revision = details.revision
    await append_audit(
        session,
        deal_id=deal_id,
        actor=person.email,
        channel="api",
        event="handoff.details_updated",
        detail={"fields": sorted(changes), "revision": revision},
    )
    await session.commit()
    if seen.exists:
        await tell_details_updated(temporal, deal_id, revision)
    if seen.live is not None:
        return handoff_read(seen.live)
    return HandoffRead(deal_id=deal_id, status=None, live=False)


@router.post("/{deal_id}/reassign", response_model=HandoffRead)
async def reassign(
    deal_id: str,
    body: ReassignCreate,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> HandoffRead:
    """Another CSM (the CS lead, admin); everything pending moves to them."""
    await deal_or_404(session, deal_id)
    if person.email != cs_lead(settings) and "admin" not in person.roles:
        raise ApiError(403, "forbidden", "Only the CS lead or an admin may reassign.")
    target = await get_person(session, email=str(body.csm_email))
    if target is None or "csm" not in target.roles:
        raise ApiError(422, "invalid_request", f"{body.csm_email} is not a CSM.")
    status = await reassign_csm(
        temporal, deal_id, Reassign(csm_email=target.email, reason=body.reason, by=person.email)
    )
    return handoff_read(status)


@router.post("/{deal_id}/retry", status_code=202, response_model=HandoffRetryRead)
async def retry_handoff(
    deal_id: str, person: CurrentPerson, session: SessionDep, temporal: TemporalDep
) -> HandoffRetryRead:
    """Run the activity that parked the handoff (needs_attention) again (ops, admin).

    The same as the ``retry`` signal sent from the Temporal UI. 409 ``not_parked`` when
    nothing waits for a retry.
    """
    await deal_or_404(session, deal_id)
    require_role(person, "ops", "admin")
    live, exists = await live_handoff(temporal, deal_id)
    if live is None or live.parked is None:
        status = live.status if live is not None else None
        if live is None and not exists:
            raise ApiError(404, "no_handoff", f"Deal {deal_id} has no handoff.")
        raise ApiError(
            409,
            "not_parked",
            "Nothing to retry: the handoff is not waiting for a retry.",
            [{"status": status}],
        )
    parked = live.parked
    await append_audit(
        session,
        deal_id=deal_id,
        actor=person.email,
        channel="api",
        event="handoff.retry_requested",
        detail={"step": parked.step, "error": parked.message},
    )
    await session.commit()
    await request_retry(temporal, deal_id, person.email)
    return HandoffRetryRead(
        status="retry requested",
        step=parked.step,
        error_type=parked.error_type,
        error=parked.message,
    )


@router.post(
    "/{deal_id}/cancel",
    response_model=HandoffRead,
    responses={
        202: {
            "model": HandoffRead,
            "description": "The cancel was accepted but is not recorded yet (closing the open "
            "tasks is retrying or parked): the handoff as it stands; it ends cancelled.",
        }
    },
)
async def cancel_handoff(
    deal_id: str,
    body: HandoffCancelCreate,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> HandoffRead | JSONResponse:
    """Cancel the handoff (ops, admin): its timers stop, open items and renewal alerts close
    (``cancelled`` in ``GET /v1/tasks``), the reason goes in the timeline, the status ends
    ``cancelled``. 409 ``handoff_ended`` when it already ended (cancelled, or finished after
    its last renewal alert). The deal stays won (stage ``handoff``)."""
    await deal_or_404(session, deal_id)
    require_role(person, "ops", "admin")
    _, exists = await live_handoff(temporal, deal_id)
    if not exists:
        raise ApiError(404, "no_handoff", f"Deal {deal_id} has no handoff.")
    await append_audit(
        session,
        deal_id=deal_id,
        actor=person.email,
        channel="api",
        event="handoff.cancel_requested",
        detail={"reason": body.reason},
    )
    update = await start_cancel(
        temporal, deal_id, CancelHandoff(reason=body.reason, by=person.email)
    )
    await session.commit()  # accepted: the request is on record
    ended = await cancel_result(update)
    if ended is not None:
        return handoff_read(ended)
    # Accepted but not ended in time: 202 with the handoff as it stands.
    now, _ = await live_handoff(temporal, deal_id)
    read = (
        handoff_read(now)
        if now is not None
        else HandoffRead(deal_id=deal_id, status=None, live=False)
    )
    return JSONResponse(status_code=202, content=jsonable_encoder(read))


@router.post("/{deal_id}/items/{item_id}/done", response_model=HandoffItemRead)
async def item_done(
    deal_id: str,
    item_id: str,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> HandoffItemRead:
    """An onboarding item done (its owner, the CSM); 409 when it already is."""
    task = await handoff_db.lock_task(session, item_id)
    if task is None or task.deal_id != deal_id or task.kind != "onboarding_item":
        raise ApiError(404, "not_found", f"Item {item_id} does not exist on this handoff.")
    csm = await csm_of(session, None, deal_id)
    if person.email not in (task.owner_email, csm):
        raise ApiError(403, "forbidden", "Only the item's owner or the CSM may mark it done.")
    if task.status != "open":
        raise closed_conflict(task)
    await complete_task(session, temporal, person, task)
    await session.commit()
    return item_read(task)


# --- lost deals -------------------------------------------------------------------------------


@lost_router.post("/{deal_id}/lost", response_model=LostRead)
async def mark_lost(
    deal_id: str,
    body: LostCreate,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> LostRead:
    """The deal is lost (owner rep): a running closure is ended as for cancel, at closed_lost;
    a deal with none (a draft, or a closure that ended) is set closed_lost here. Won: 409."""
    deal = await deal_or_404(session, deal_id)
    if not is_deal_owner(person, deal):
        raise ApiError(403, "forbidden", "Only the deal's owner may mark it lost.")
    stage = deal.stage
    if stage != "draft":
        live = await closure_status(temporal, deal.id)
        stage = live.stage if live is not None else deal.stage
    if stage in WON_STAGES:
        raise ApiError(409, "deal_won", f"The deal is {stage}; a won deal cannot be lost.")
    if stage == "closed_lost":
        raise ApiError(409, "already_lost", "The deal is already lost.")
    withdrawn = False
    if stage != "draft":
        lost = LostInfo(reason=body.reason, competitor=body.competitor, notes=body.notes)
        withdrawn = await end_closure_lost(
            temporal, deal.id, CancelRequest(by=person.email, reason=body.reason, lost=lost)
        )
        await session.refresh(deal)
        if deal.stage in WON_STAGES:  # won while we asked
            raise ApiError(409, "deal_won", f"The deal is {deal.stage}; it cannot be lost.")
    deal = await deal_or_404(session, deal_id, for_update=True)
    now = dt.datetime.now(dt.UTC)
    if deal.stage != "closed_lost":
        await deals_db.set_stage(session, deal_id=deal.id, stage="closed_lost")
    if body.competitor:
        deal.competitor = body.competitor
    await append_audit(
        session,
        deal_id=deal.id,
        actor=person.email,
        channel="api",
        event="deal.lost",
        detail={"reason": body.reason, "competitor": body.competitor},
        at=now,
        idempotency_key=f"deal-lost/{deal.id}",
    )
    await handoff_db.record_learning(
        session,
        deal,
        kind="lost",
        at=now,
        reason=body.reason,
        competitor=body.competitor,
        notes=body.notes,
    )
    await session.commit()
    return LostRead(
        id=deal.id,
        stage="closed_lost",
        reason=body.reason,
        competitor=body.competitor or deal.competitor,
        withdrawn=withdrawn,
    )
