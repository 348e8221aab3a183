"""The API's side of the handoff workflow: read it, message it (signals, updates), and who may.

The handoff's counterpart to ``api/closure.py``: every Temporal call the handoff routes make is
here, with the answers the routes give when the workflow is not there or refuses (``ApiError``).
Reads come from the workflow's ``status`` query (``live: true``), else the database mirror.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from api.access import deal_or_404, is_deal_owner
from api.closure import CANCEL_ANSWER_SECONDS, NO_ANSWER, QUERY_TIMEOUT
from api.errors import ApiError
from api.handoff_schemas import HandoffRead
from api.list_schemas import WorkflowTold
from api.updates import result_within
from db import handoff as handoff_db
from db.models import Deal, Person
from dealflow.ids import deal_closure_workflow_id, handoff_workflow_id
from dealflow.settings import Settings
from domain.handoff import CustomerSuccess
from messages.closure import CancelRequest
from messages.handoff import CancelHandoff, HandoffStatus, ItemDone, Reassign
from workflows.deal_closure import DealClosureWorkflow
from workflows.handoff import HandoffWorkflow

# --- who may -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _customer_success(path: Path, mtime: float) -> CustomerSuccess:
    return CustomerSuccess.load(path)


def cs_lead(settings: Settings) -> str | None:
    """The CS lead of ``config/org.toml`` (read again when the file changes)."""
    path = settings.org_directory_path
    return _customer_success(path, path.stat().st_mtime).lead


async def csm_of(session: AsyncSession, live: HandoffStatus | None, deal_id: str) -> str | None:
    """The handoff's CSM: the live one, else the mirror's."""
    if live is not None:
        return live.csm.email if live.csm else None
    mirror = await handoff_db.get_handoff(session, deal_id)
    return mirror.csm_email if mirror else None


@dataclass(frozen=True)
class HandoffSeen:
    """A route's view of a handoff: the deal, the live status (None when no worker answers),
    whether the workflow exists, and its CSM."""

    deal: Deal
    live: HandoffStatus | None
    exists: bool
    csm: str | None


async def see_handoff(session: AsyncSession, client: Client, deal_id: str) -> HandoffSeen:
    """The deal (404 if there is none) and its handoff as it stands."""
    deal = await deal_or_404(session, deal_id)
    live, exists = await live_handoff(client, deal_id)
    return HandoffSeen(deal, live, exists, await csm_of(session, live, deal_id))


def works_on(person: Person, seen: HandoffSeen) -> bool:
    """The deal's owning rep, the handoff's CSM, ops or an admin."""
    return (
        is_deal_owner(person, seen.deal)
        or (seen.csm is not None and person.email == seen.csm)
        or bool({"ops", "admin"} & set(person.roles))
    )


# --- reads -------------------------------------------------------------------------------------


def _handle(client: Client, deal_id: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(HandoffWorkflow.run, handoff_workflow_id(deal_id))


async def live_handoff(client: Client, deal_id: str) -> tuple[HandoffStatus | None, bool]:
    """(status, exists): the live status, or None with whether the workflow exists at all."""
    try:
        return await _handle(client, deal_id).query(
            HandoffWorkflow.status, rpc_timeout=QUERY_TIMEOUT
        ), True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None, False
        if err.status in NO_ANSWER:
            return None, True
        raise


def handoff_read(live: HandoffStatus) -> HandoffRead:
    """The body of ``GET /v1/handoffs/{deal}`` from the live status."""
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


async def mirror_read(session: AsyncSession, deal_id: str, *, exists: bool) -> HandoffRead:
    """No worker answered: the database mirror (``live: false``); 404 before closed-won."""
    mirror = await handoff_db.get_handoff(session, deal_id)
    if mirror is None:
        raise ApiError(404, "no_handoff", f"Deal {deal_id} has no handoff (it is not won yet).")
    return HandoffRead(
        deal_id=deal_id,
        status=mirror.status,
        status_reason=mirror.status_reason,
        live=False,
        csm={"email": mirror.csm_email, "reason": mirror.csm_reason} if mirror.csm_email else None,
        kickoff={"at": mirror.kickoff_at.isoformat()} if mirror.kickoff_at else None,
        workflow_id=handoff_workflow_id(deal_id) if exists else None,
    )


# --- signals and updates -----------------------------------------------------------------------


async def tell_details_updated(client: Client, deal_id: str, revision: int) -> None:
    """A waiting handoff builds its package again; one that ended has nothing to do."""
    try:
        await _handle(client, deal_id).signal(HandoffWorkflow.details_updated, revision)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


async def reassign_csm(client: Client, deal_id: str, request: Reassign) -> HandoffStatus:
    """The ``reassign`` update; 409 ``handoff_ended`` when refused, 404 without a handoff."""
    try:
        return await _handle(client, deal_id).execute_update(
            HandoffWorkflow.reassign, request, result_type=HandoffStatus
        )
    except WorkflowUpdateFailedError as err:
        raise ApiError(409, "handoff_ended", str(err.cause or err)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, "no_handoff", f"Deal {deal_id} has no handoff.") from None
        raise


async def request_retry(client: Client, deal_id: str, by: str) -> None:
    """The ``retry`` signal: the activity that parked the handoff runs again."""
    await _handle(client, deal_id).signal(HandoffWorkflow.retry, by)


async def start_cancel(
    client: Client, deal_id: str, request: CancelHandoff
) -> WorkflowUpdateHandle[HandoffStatus]:
    """Send the ``cancel`` update and wait until it is accepted (validated, in the history).
    409 ``handoff_ended`` when refused or the workflow has ended."""
    try:
        return await _handle(client, deal_id).start_update(
            HandoffWorkflow.cancel, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    except WorkflowUpdateFailedError as err:
        raise ApiError(409, "handoff_ended", str(err.cause or err)) from None
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise ApiError(409, "handoff_ended", "This handoff has already ended.") from None
        raise


async def cancel_result(
    update: WorkflowUpdateHandle[HandoffStatus], *, answer_within: float = CANCEL_ANSWER_SECONDS
) -> HandoffStatus | None:
    """The accepted cancel's result, or None if it has not ended in time (bounded like the
    deal's cancel; the handoff still ends cancelled)."""
    return await result_within(update, answer_within)


async def tell_item_done(
    client: Client, task_id: str, deal_id: str, by: str, at: dt.datetime
) -> WorkflowTold:
    """The ``item_done`` signal (stops the item's reminder and escalation): what was told."""
    workflow_id = handoff_workflow_id(deal_id)
    try:
        await _handle(client, deal_id).signal(
            HandoffWorkflow.item_done, ItemDone(item_id=task_id, by=by, at=at)
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return WorkflowTold(workflow_id=workflow_id, told=False, detail="the handoff ended")
    return WorkflowTold(workflow_id=workflow_id, told=True, detail="item_done signal")


# --- lost deals --------------------------------------------------------------------------------


async def end_closure_lost(client: Client, deal_id: str, request: CancelRequest) -> bool:
    """End a running closure as for cancel, at closed_lost (``request.lost`` set): True if it
    did; False when the closure has ended already (rejected, cancelled) or never ran."""
    handle = client.get_workflow_handle(deal_closure_workflow_id(deal_id))
    try:
        await handle.execute_update(DealClosureWorkflow.cancel, request)
        return True
    except WorkflowUpdateFailedError:
        return False  # the closure has ended (rejected, cancelled): the route sets the stage
    except RPCError as err:
        if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise
        return False
