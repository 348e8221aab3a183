"""``/v1/handoffs/{deal}``: read, supply missing fields, reassign, items done; and
``POST /v1/deals/{id}/lost``.

Reads come from the handoff workflow's ``status`` query (``live: true``), else the database
mirror. PATCH is accepted from the moment the deal exists, so a rep can supply the primary
contact and success goals before the deal is won and the handoff never waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import tomllib
from pathlib import Path

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from api.access import deal_or_404
from api.closure import CANCEL_ANSWER_SECONDS, NO_ANSWER, QUERY_TIMEOUT, closure_status
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep, require_role
from api.errors import ApiError
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
from api.list_schemas import TaskDoneRead, WorkflowTold
from db import deals as deals_db
from db import handoff as handoff_db
from db.audit import append_audit
from db.handoff_models import HandoffTask
from db.models import Deal, Person
from dealflow.ids import deal_closure_workflow_id, handoff_workflow_id
from dealflow.settings import Settings
from messages.closure import CancelRequest, LostInfo
from workflows.deal_closure import DealClosureWorkflow
from workflows.handoff import (
    CancelHandoff,
    HandoffStatus,
    HandoffWorkflow,
    ItemDone,
    Reassign,
)

router = APIRouter(prefix="/v1/handoffs", tags=["handoffs"])
lost_router = APIRouter(prefix="/v1/deals", tags=["deals"])

WON_STAGES = frozenset({"closed_won", "handoff"})


@functools.lru_cache(maxsize=4)
def _customer_success(path: Path, mtime: float) -> dict:
    with path.open("rb") as fh:
        return tomllib.load(fh).get("customer_success", {})


def cs_lead(settings: Settings) -> str | None:
    path = settings.org_directory_path
    return _customer_success(path, path.stat().st_mtime).get("lead")


async def live_handoff(client: Client, deal_id: str) -> tuple[HandoffStatus | None, bool]:
    """(status, exists): the live status, or None with whether the workflow exists at all."""
    handle = client.get_workflow_handle_for(HandoffWorkflow.run, handoff_workflow_id(deal_id))
    try:
        return await handle.query(HandoffWorkflow.status, rpc_timeout=QUERY_TIMEOUT), True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None, False
        if err.status in NO_ANSWER:
            return None, True
        raise


def _is_owner(person: Person, deal: Deal) -> bool:
    return deal.owner_email == person.email and "rep" in person.roles


def _read(live: HandoffStatus) -> HandoffRead:
    body = live.model_dump(mode="json")
    return HandoffRead(
        deal_id=live.deal_id,
        status=live.status,
        status_reason=live.status_reason,
        package=body["package"],
        missing=body["missing"],
        csm=body["csm"],
        kickoff=body["kickoff"],
        items=body["items"],
        renewal=body["renewal"],
        timeline=body["timeline"],
        workflow_id=handoff_workflow_id(live.deal_id),
        parked=body["parked"],
    )


async def _csm_of(session: SessionDep, live: HandoffStatus | None, deal_id: str) -> str | None:
    if live is not None:
        return live.csm.email if live.csm else None
    mirror = await handoff_db.get_handoff(session, deal_id)
    return mirror.csm_email if mirror else None


@router.get("/{deal_id}", response_model=HandoffRead)
async def get_handoff(
    deal_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> HandoffRead:
    """The handoff (owner rep, the assigned CSM, the CS lead, ops, admin)."""
    deal = await deal_or_404(session, deal_id)
    live, exists = await live_handoff(temporal, deal_id)
    csm = await _csm_of(session, live, deal_id)
    allowed = (
        _is_owner(person, deal)
        or (csm is not None and person.email == csm)
        or person.email == cs_lead(settings)
        or {"ops", "admin"} & set(person.roles)
    )
    if not allowed:
        raise ApiError(403, "forbidden", "Only the owner, the CSM, the CS lead or ops may read.")
    if live is not None:
        return _read(live)
    mirror = await handoff_db.get_handoff(session, deal_id)
    if mirror is None:
        raise ApiError(404, "no_handoff", f"Deal {deal_id} has no handoff (it is not won yet).")
    # No worker answered: the database mirror (``live: false``).
    return HandoffRead(
        deal_id=deal_id,
        status=mirror.status,
        status_reason=mirror.status_reason,
        live=False,
        csm={"email": mirror.csm_email, "reason": mirror.csm_reason} if mirror.csm_email else None,
        kickoff={"at": mirror.kickoff_at.isoformat()} if mirror.kickoff_at else None,
        workflow_id=handoff_workflow_id(deal_id) if exists else None,
    )


@router.patch("/{deal_id}", response_model=HandoffRead)
async def patch_handoff(
    deal_id: str,
    body: HandoffPatch,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> HandoffRead:
    """Supply what ``missing`` names (owner rep, the CSM, ops); a waiting handoff resumes."""
    deal = await deal_or_404(session, deal_id)
    live, exists = await live_handoff(temporal, deal_id)
    csm = await _csm_of(session, live, deal_id)
    if not (
        _is_owner(person, deal)
        or (csm is not None and person.email == csm)
        or {"ops", "admin"} & set(person.roles)
    ):
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
    if exists:
        handle = temporal.get_workflow_handle(handoff_workflow_id(deal_id))
        try:
            await handle.signal(HandoffWorkflow.details_updated, revision)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
    if live is not None:
        return _read(live)
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
    target = await session.get(Person, str(body.csm_email))
    if target is None or "csm" not in target.roles:
        raise ApiError(422, "invalid_request", f"{body.csm_email} is not a CSM.")
    handle = temporal.get_workflow_handle(handoff_workflow_id(deal_id))
    try:
        status = await handle.execute_update(
            HandoffWorkflow.reassign,
            Reassign(csm_email=target.email, reason=body.reason, by=person.email),
            result_type=HandoffStatus,
        )
    except WorkflowUpdateFailedError as err:
        raise ApiError(409, "handoff_ended", str(err.cause or err)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, "no_handoff", f"Deal {deal_id} has no handoff.") from None
        raise
    return _read(status)


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
    await temporal.get_workflow_handle(handoff_workflow_id(deal_id)).signal(
        HandoffWorkflow.retry, person.email
    )
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
    handle = temporal.get_workflow_handle(handoff_workflow_id(deal_id))
    request = CancelHandoff(reason=body.reason, by=person.email)
    await append_audit(
        session,
        deal_id=deal_id,
        actor=person.email,
        channel="api",
        event="handoff.cancel_requested",
        detail={"reason": body.reason},
    )
    try:
        update = await handle.start_update(
            HandoffWorkflow.cancel, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    except WorkflowUpdateFailedError as err:
        raise ApiError(409, "handoff_ended", str(err.cause or err)) from None
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise ApiError(409, "handoff_ended", "This handoff has already ended.") from None
        raise
    await session.commit()  # accepted: the request is on record
    # Bounded like the deal's cancel: accepted but not ended in time answers 202 as it stands.
    poll = asyncio.ensure_future(update.result())
    done, _ = await asyncio.wait({poll}, timeout=CANCEL_ANSWER_SECONDS)
    if poll in done:
        return _read(poll.result())
    poll.cancel()
    with contextlib.suppress(asyncio.CancelledError, WorkflowUpdateRPCTimeoutOrCancelledError):
        await poll
    now, _ = await live_handoff(temporal, deal_id)
    read = _read(now) if now is not None else HandoffRead(deal_id=deal_id, status=None, live=False)
    return JSONResponse(status_code=202, content=jsonable_encoder(read))


def item_read(task: HandoffTask) -> HandoffItemRead:
    return HandoffItemRead(
        id=task.id,
        title=task.title,
        owner_email=task.owner_email,
        due_at=task.due_at,
        status=task.status,
        reminded_at=task.reminded_at,
        escalated_to=task.escalated_to,
        done_at=task.done_at,
        done_by=task.done_by,
    )


async def complete_task(
    session: SessionDep, temporal: Client, person: Person, task: HandoffTask
) -> WorkflowTold | None:
    """Mark a locked, open handoff task done (the caller checked it); tell the handoff."""
    if task.kind == "csm_assignment":
        raise ApiError(
            409,
            "use_reassign",
            "Assign the CSM with POST /v1/handoffs/{deal}/reassign; the task closes with it.",
        )
    now = dt.datetime.now(dt.UTC)
    told = None
    if task.kind == "onboarding_item":
        workflow_id = handoff_workflow_id(task.deal_id)
        try:
            await temporal.get_workflow_handle(workflow_id).signal(
                HandoffWorkflow.item_done, ItemDone(item_id=task.id, by=person.email, at=now)
            )
            told = WorkflowTold(workflow_id=workflow_id, told=True, detail="item_done signal")
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            told = WorkflowTold(workflow_id=workflow_id, told=False, detail="the handoff ended")
    task.status, task.done_at, task.done_by = "done", now, person.email
    await append_audit(
        session,
        deal_id=task.deal_id,
        actor=person.email,
        channel="api",
        event=f"handoff.{task.kind}.done",
        detail={"task_id": task.id, "title": task.title},
        idempotency_key=f"handoff-task-done/{task.id}",
    )
    return told


def _closed_conflict(task: HandoffTask) -> ApiError:
    return ApiError(
        409,
        "task_closed",
        f"This item is already {task.status}" + (f" (by {task.done_by})." if task.done_by else "."),
        [{"status": task.status, "done_at": task.done_at.isoformat() if task.done_at else None}],
    )


async def task_done_for_tasks_route(
    session: SessionDep, temporal: Client, person: Person, task_id: str
) -> TaskDoneRead:
    """``POST /v1/tasks/{id}/done`` for a handoff task (the task's owner)."""
    task = await handoff_db.lock_task(session, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"Task {task_id} does not exist.")
    if task.owner_email != person.email:
        raise ApiError(403, "forbidden", "Only the task's owner may mark it done.")
    if task.status != "open":
        raise _closed_conflict(task)
    told = await complete_task(session, temporal, person, task)
    await session.commit()
    return TaskDoneRead(
        id=task.id,
        kind=task.kind,
        title=task.title,
        detail=task.detail,
        due_at=task.due_at,
        status=task.status,
        owner_email=task.owner_email,
        deal_id=task.deal_id,
        created_at=task.created_at,
        done_at=task.done_at,
        done_by=task.done_by,
        workflow=told,
    )


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
    csm = await _csm_of(session, None, deal_id)
    if person.email not in (task.owner_email, csm):
        raise ApiError(403, "forbidden", "Only the item's owner or the CSM may mark it done.")
    if task.status != "open":
        raise _closed_conflict(task)
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
    if not _is_owner(person, deal):
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
        handle = temporal.get_workflow_handle(deal_closure_workflow_id(deal.id))
        lost = LostInfo(reason=body.reason, competitor=body.competitor, notes=body.notes)
        try:
            await handle.execute_update(
                DealClosureWorkflow.cancel,
                CancelRequest(by=person.email, reason=body.reason, lost=lost),
            )
            withdrawn = True
        except WorkflowUpdateFailedError:
            pass  # the closure has ended (rejected, cancelled): the stage is set below
        except RPCError as err:
            if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise
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
