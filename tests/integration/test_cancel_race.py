"""A cancel while the approval chain's first activities are still under way (pinned races)."""

from __future__ import annotations

import contextlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from api.closure import start_closure
from db import deals as deals_db
from db.models import ApprovalRequest
from dealflow.heartbeat import PulseInterceptor
from dealflow.holds import HoldPoints
from dealflow.ids import approval_chain_workflow_id, deal_closure_workflow_id
from messages.approval import Withdrawal
from tests.utils.deals import OPS, REP, create_deal, record_history, wait_for_stage
from tests.utils.parking import failure_points
from tests.utils.polling import eventually, hold_reached
from worker import WORKFLOWS, build_activities
from workflows.approval_chain import ApprovalChainWorkflow


async def _attempted(client: Client, workflow_id: str, activity: str) -> bool:
    """The activity was scheduled and has failed at least once (it is retrying)."""
    desc = await client.get_workflow_handle(workflow_id).describe()
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name == activity and pending.attempt > 1:
            return True
    return False


@pytest.mark.parametrize("activity", ["decision_stats", "resolve_person"])
async def test_cancel_while_the_chain_retries_its_first_activity(
    http: httpx.AsyncClient, auth, settings, temporal_client: Client, activity: str
):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm(activity, deal["id"], mode="transient")
    chain_id = approval_chain_workflow_id(deal["id"], 1)
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
        await eventually(
            lambda: _attempted(temporal_client, chain_id, activity),
            timeout=60,
            what=f"{activity} retrying",
        )
        resp = await http.post(
            f"/v1/deals/{deal['id']}/cancel",
            json={"reason": "customer went dark"},
            headers=auth(OPS),
        )
    finally:
        points.clear(activity, deal["id"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == "cancelled"
    chain = await temporal_client.get_workflow_handle(chain_id).result()
    assert chain["outcome"] == "withdrawn"
    closure = temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"]))
    events = [e.event_type async for e in closure.fetch_history_events()]
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED in events
    if activity == "decision_stats":
        # The chain's own activity was cancelled by the withdrawal (not waited out).
        chain_events = [
            e.event_type
            async for e in temporal_client.get_workflow_handle(chain_id).fetch_history_events()
        ]
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED in chain_events
        await record_history(
            temporal_client.get_workflow_handle(chain_id),
            "approval_chain_withdrawn_while_retrying_stats",
        )


async def test_a_cancel_that_cannot_finish_in_time_answers_202_and_still_ends(
    http: httpx.AsyncClient, auth, settings, sessions
):
    """The withdrawal's own step keeps failing: the API answers 202 (accepted) within its bound,
    not a client timeout; once the step heals the deal ends cancelled without another call."""
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")

    # The stage shows a moment before the chain opens its request; a chain withdrawn before that
    # has nothing to withdraw (and so no failing step to wait on).
    async def opened() -> bool:
        async with sessions() as s:
            status = await s.scalar(
                select(ApprovalRequest.status).where(ApprovalRequest.deal_id == deal["id"])
            )
        return status == "pending"

    await eventually(opened, what="the approval request opened")
    points.arm("withdraw_request", deal["id"], mode="transient")
    try:
        resp = await http.post(
            f"/v1/deals/{deal['id']}/cancel",
            json={"reason": "customer went dark"},
            headers=auth(OPS),
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["stage"] != "cancelled"
        again = await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
        assert again.status_code == 409
    finally:
        points.clear("withdraw_request", deal["id"])
    final = await wait_for_stage(http, deal["id"], auth(REP), "cancelled", timeout=120)
    assert final["stage_reason"] == "customer went dark"


async def test_a_withdrawal_landing_with_a_finished_activity_still_ends_the_chain(
    http: httpx.AsyncClient, auth, settings, sessions, temporal_client: Client
):
    """The chain's withdraw signal and the completion of the activity its request task awaits
    arrive in ONE workflow task (no workflow worker polls while both happen). The SDK then hands
    the task the activity's result and drops its cancellation; the chain must still end withdrawn
    at once, without delivering the request (it used to deliver and wait for the reminder, and
    the deal's cancel hung)."""
    deal = await create_deal(http, auth(REP))
    deal_id = deal["id"]
    queue = f"stage-end-race-{uuid.uuid4().hex[:8]}"
    on_queue = settings.model_copy(update={"task_queue": queue})
    holds = HoldPoints(settings.state_dir, enabled=True)
    holds.arm("open_request", deal_id)
    chain = temporal_client.get_workflow_handle(approval_chain_workflow_id(deal_id, 1))
    closure = temporal_client.get_workflow_handle(deal_closure_workflow_id(deal_id))
    activities = Worker(
        temporal_client,
        task_queue=queue,
        activities=build_activities(on_queue, sessions),
        interceptors=[PulseInterceptor()],
        activity_executor=ThreadPoolExecutor(max_workers=2),
    )
    try:
        async with activities:
            async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)):
                async with sessions() as s:
                    row = await deals_db.get_deal(s, deal_id=deal_id)
                    await start_closure(temporal_client, on_queue, row)
                await hold_reached(holds, "open_request", deal_id)
            # No workflow worker now: the signal and the completion wait for the same task.
            await chain.signal(
                ApprovalChainWorkflow.withdraw, Withdrawal(by=OPS, reason="customer went dark")
            )
            holds.release("open_request", deal_id)
            await eventually(
                lambda: _completed(chain, "open_request"), timeout=60, what="open_request done"
            )
            async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)):
                status = await eventually(
                    lambda: _result_if_done(chain), timeout=60, what="the chain to end"
                )
    finally:
        holds.release("open_request", deal_id)
        with contextlib.suppress(RPCError):
            await closure.terminate("test over")
    assert status["outcome"] == "withdrawn"
    assert [s["status"] for s in status["steps"]] == ["withdrawn"]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in chain.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert "deliver" not in scheduled
    assert scheduled[-1] == "withdraw_request"
    async with sessions() as s:
        rows = (
            await s.scalars(select(ApprovalRequest).where(ApprovalRequest.deal_id == deal_id))
        ).all()
    assert [r.status for r in rows] == ["withdrawn"]
    await record_history(chain, "approval_chain_withdrawn_as_its_request_opened")


async def _completed(handle: WorkflowHandle, activity: str) -> bool | None:
    names: dict[int, str] = {}
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            if names.get(e.activity_task_completed_event_attributes.scheduled_event_id) == activity:
                return True
    return None


async def _result_if_done(handle: WorkflowHandle) -> dict | None:
    desc = await handle.describe()
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        return None
    return await handle.result()
