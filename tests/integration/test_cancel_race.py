"""A cancel while the approval chain's first activities are still under way (pinned races)."""

from __future__ import annotations

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from dealflow.ids import approval_chain_workflow_id, deal_closure_workflow_id
from tests.utils.deals import OPS, REP, create_deal, record_history, wait_for_stage
from tests.utils.parking import failure_points
from tests.utils.polling import eventually


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
    http: httpx.AsyncClient, auth, settings
):
    """The withdrawal's own step keeps failing: the API answers 202 (accepted) within its bound,
    not a client timeout; once the step heals the deal ends cancelled without another call."""
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
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
