"""``/v1/deals``: create, change, read, ready-to-close, cancel, retry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.access import approvers_of, deal_or_404, owns_or_operates, require_deal_owner

# The retry route (another branch edits it now) still calls these by their old names.
from api.closure import (
    CANCEL_ANSWER_SECONDS,
    cancel_closure,
    closure_status,
    describe_status,
    live_approval_steps,
    signature_status,
    start_closure,
)
from api.deal_read import deal_read
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep, require_role
from api.errors import ApiError
from api.idempotency import IdempotencyKey
from api.schemas import (
    CancelCreate,
    DealCreate,
    DealRead,
    DealUpdate,
    ReadyToCloseRead,
    TimelineRead,
)
from db import contact_deals as contact_deals_db
from db import deals as deals_db
from db import handoff as handoff_db
from db.audit import append_audit
from db.models import Deal
from dealflow.ids import deal_closure_workflow_id
from messages.closure import CancelRequest, DealUpdated
from workflows.deal_closure import DealClosureWorkflow

router = APIRouter(prefix="/v1/deals", tags=["deals"])

# While a closure is in one of these stages the rep may change the deal; anywhere else a change
# would race the process (a contract out for approval must not change under the approvers).
EDITABLE_STAGES = frozenset({"draft", "needs_attention", "changes_requested", "declined"})


async def _live_closure(temporal: TemporalDep, deal: Deal, *, read: bool = False):
    """The closure's live status (``closure_status``), or None: a draft has no closure to ask,
    and a closure that cannot answer leaves the caller with the deal row (the mirror)."""
    return await closure_status(temporal, deal.id, read=read) if deal.stage != "draft" else None


async def _current_stage(temporal: TemporalDep, deal: Deal) -> str:
    live = await _live_closure(temporal, deal)
    return live.stage if live is not None else deal.stage


@router.post("", status_code=201, response_model=DealRead)
async def create_deal(
    body: DealCreate,
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Create a deal owned by the calling rep."""
    require_role(person, "rep")
    create, replayed = await idempotency.open_create(
        session, person_email=person.email, key=idempotency_key, request=request, body=body
    )
    if replayed is not None:
        return replayed
    try:
        deal = await deals_db.create_deal(
            session, owner_email=person.email, data=body.model_dump(exclude_unset=False)
        )
        await append_audit(
            session,
            deal_id=deal.id,
            actor=person.email,
            channel="api",
            event="deal.created",
            detail={"name": deal.name, "revision": deal.revision},
        )
        read = await deal_read(session, settings, deal, None)
        return await create.commit(201, read)
    except IntegrityError as err:
        if (replayed := await create.after_conflict()) is not None:
            return replayed
        if "external_id" in str(err.orig):
            raise ApiError(
                409,
                "duplicate_external_id",
                f"A deal with external_id {body.external_id!r} already exists.",
            ) from None
        raise


@router.get("/{deal_id}", response_model=DealRead)
async def get_deal(
    deal_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> DealRead:
    """The deal and its live closure state (owner, the deal's approvers, ops)."""
    deal = await deal_or_404(session, deal_id)
    live = await _live_closure(temporal, deal, read=True)
    steps = await live_approval_steps(temporal, live) if live is not None else []
    allowed = owns_or_operates(person, deal) or person.email in await approvers_of(
        session, deal.id, live, steps
    )
    if not allowed:
        raise ApiError(
            403, "forbidden", "Only the owner, the deal's approvers and ops may read it."
        )
    read = await deal_read(session, settings, deal, live, steps)
    # A deal made from a campaign contact names the contact first in its timeline.
    origin = await contact_deals_db.origin_timeline(session, deal_id=deal.id)
    read.timeline = [*(TimelineRead(**t) for t in origin), *read.timeline]
    if live is not None:
        signature = await signature_status(temporal, live)
        read.signature = _signature_body(signature) if signature else None
    read.handoff = await handoff_db.deal_summary(session, deal.id)
    return read


def _signature_body(signature) -> dict[str, Any]:  # noqa: ANN001 - SignatureStatus
    body = signature.model_dump(mode="json")
    body["recipients"] = [
        {
            "email": r["email"],
            "name": r["name"],
            "routing_order": r["routing_order"],
            "status": r["status"],
            "at": r["at"],
        }
        for r in body["recipients"]
    ]
    return body


@router.patch("/{deal_id}", response_model=DealRead)
async def update_deal(
    deal_id: str,
    body: DealUpdate,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> DealRead:
    """Change a deal; a closure waiting for a fix resumes with a new quote version."""
    deal = await deal_or_404(session, deal_id, for_update=True)
    require_deal_owner(person, deal)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ApiError(422, "invalid_request", "The change is empty.")
    stage = await _current_stage(temporal, deal)
    if stage not in EDITABLE_STAGES:
        raise ApiError(
            409,
            "deal_locked",
            f"The deal cannot be changed while its closure is at stage {stage!r}.",
            [{"stage": stage, "editable_stages": sorted(EDITABLE_STAGES)}],
        )
    try:
        await deals_db.update_deal(session, deal=deal, data=changes)
        await append_audit(
            session,
            deal_id=deal.id,
            actor=person.email,
            channel="api",
            event="deal.updated",
            detail={"revision": deal.revision, "fields": sorted(changes)},
        )
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ApiError(
            409, "duplicate_external_id", "Another deal already has that external_id."
        ) from None
    if stage != "draft":
        handle = temporal.get_workflow_handle(deal_closure_workflow_id(deal.id))
        await handle.signal(
            DealClosureWorkflow.deal_updated, DealUpdated(revision=deal.revision, by=person.email)
        )
    return await deal_read(session, settings, deal, None)


@router.post("/{deal_id}/ready-to-close", response_model=ReadyToCloseRead, status_code=202)
async def ready_to_close(
    deal_id: str,
    response: Response,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> ReadyToCloseRead:
    """Start the deal closure (202), or return the one already running (200)."""
    # Locked while starting: a cancel of the draft (below) and this start cannot interleave.
    deal = await deal_or_404(session, deal_id, for_update=True)
    require_deal_owner(person, deal)
    if deal.stage == "cancelled":
        raise ApiError(
            409, "closure_ended", "This deal was cancelled; its closure cannot start again."
        )
    handle, started = await start_closure(temporal, settings, deal)
    if not started:
        status = await describe_status(handle)
        if status != WorkflowExecutionStatus.RUNNING:
            raise ApiError(
                409,
                "closure_ended",
                f"This deal's closure has already ended ({deal.stage}); it cannot start again.",
            )
        response.status_code = 200
        run_id = (await handle.describe()).run_id
    else:
        run_id = handle.result_run_id or ""
        # The deal leaves draft with its closure, in this transaction: even when the closure's
        # own first write fails (it parks), GET reads the live closure and cancel finds it.
        await deals_db.set_stage(session, deal_id=deal.id, stage="quoting")
        await append_audit(
            session,
            deal_id=deal.id,
            actor=person.email,
            channel="api",
            event="closure.started",
            detail={"workflow_id": handle.id, "run_id": run_id},
        )
        await session.commit()
    return ReadyToCloseRead(workflow_id=handle.id, run_id=run_id, status_url=f"/v1/deals/{deal.id}")


@router.post(
    "/{deal_id}/cancel",
    response_model=DealRead,
    responses={
        202: {
            "model": DealRead,
            "description": "The cancel was accepted but is not recorded yet (a step it waits on "
            "is retrying or parked): the deal as it stands; it ends cancelled on its own.",
        }
    },
)
async def cancel_deal(
    deal_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    body: CancelCreate | None = None,
) -> DealRead | JSONResponse:
    """Cancel the closure (owner rep, ops); answers once the cancellation is recorded.

    Works in every stage that has not ended, including needs_attention and declined. A draft
    has no closure: the deal itself is marked cancelled (audited), and ready-to-close then
    answers 409 — cancelling a draft means "this will not be sold", as for a closure.

    Bounded: when the closure has accepted the cancel but not recorded it within
    ``CANCEL_ANSWER_SECONDS`` (its approval chain or signature must first finish withdrawing,
    and a step of that is retrying or parked), the answer is 202 with the deal as it stands;
    the closure still ends cancelled, and GET shows it. A second cancel meanwhile is 409.
    """
    deal = await deal_or_404(session, deal_id, for_update=True)
    require_deal_owner(person, deal, also=("ops", "admin"))
    handle = temporal.get_workflow_handle(deal_closure_workflow_id(deal.id))
    if deal.stage in ("draft", "cancelled") and await describe_status(handle) is None:
        if deal.stage == "cancelled":
            raise ApiError(409, "closure_ended", "This deal is already cancelled.")
        reason = body.reason if body else None
        await deals_db.set_stage(session, deal_id=deal.id, stage="cancelled")
        await append_audit(
            session,
            deal_id=deal.id,
            actor=person.email,
            channel="api",
            event="deal.cancelled",
            detail={"reason": reason, "stage": "draft"} if reason else {"stage": "draft"},
        )
        await session.commit()
        return await deal_read(session, settings, deal, None)
    request = CancelRequest(by=person.email, reason=body.reason if body else None)
    # Let go of the row: the workflow records the cancellation on it before the update answers.
    await session.rollback()
    try:
        status = await cancel_closure(handle, request, answer_within=CANCEL_ANSWER_SECONDS)
    except WorkflowUpdateFailedError as err:
        raise ApiError(409, "closure_ended", str(err.cause or err)) from None
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise ApiError(409, "closure_ended", "This deal's closure has already ended.") from None
        raise
    await session.refresh(deal)
    if status is None:
        # Accepted, still ending: what is known now (the live status, else the row).
        live = await closure_status(temporal, deal.id)
        steps = live.approval_steps if live is not None else None
        read = await deal_read(session, settings, deal, live, steps)
        return JSONResponse(status_code=202, content=jsonable_encoder(read))
    return await deal_read(session, settings, deal, status, status.approval_steps)


@router.post("/{deal_id}/retry", status_code=202)
async def retry_deal(
    deal_id: str, person: CurrentPerson, session: SessionDep, temporal: TemporalDep
) -> dict[str, Any]:
    """Run the step that parked the closure (needs_attention) again (ops, admin, the owner).

    The same as the ``retry`` signal sent from the Temporal UI; a child's failure (approval
    chain, signature) is forwarded to the child. 409 when nothing is parked.
    """
    deal = await deal_or_404(session, deal_id)
    require_deal_owner(person, deal, also=("ops", "admin"))
    live = await _live_closure(temporal, deal)
    if live is None or live.parked is None:
        stage = live.stage if live is not None else deal.stage
        raise ApiError(
            409,
            "not_parked",
            "Nothing to retry: the closure is not waiting for a retry.",
            [{"stage": stage}],
        )
    parked = live.parked
    await append_audit(
        session,
        deal_id=deal.id,
        actor=person.email,
        channel="api",
        event="closure.retry_requested",
        detail={"step": parked.step, "error": parked.message},
    )
    await session.commit()
    await temporal.get_workflow_handle(deal_closure_workflow_id(deal.id)).signal(
        DealClosureWorkflow.retry, person.email
    )
    return {
        "status": "retry requested",
        "step": parked.step,
        "error_type": parked.error_type,
        "error": parked.message,
    }
