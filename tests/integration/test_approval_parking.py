"""The approval chain parks on a failing activity and tells the closure; one retry resumes it.
Nobody may decide a step of a deal they own, by any door."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier
from temporalio.client import Client, WorkflowUpdateFailedError

from api.closure import start_closure
from db import deals as deals_db
from db.models import Person
from dealflow.ids import approval_chain_workflow_id, deal_closure_workflow_id
from messages.approval import DecisionRequest
from messages.parking import RetryBudget
from tests.utils.approvals import click, eventually, slack_messages, slack_request_for
from tests.utils.deals import CFO, FINANCE, OPS, REP, create_deal, record_history, wait_for_stage
from tests.utils.parking import failure_points, retry, search_attribute_stage, wait_parked
from workflows.approval_chain import ApprovalChainWorkflow
from workflows.deal_closure import DealClosureWorkflow

CONTROLLER = "tom.becker@dealflow.example"  # the Finance Director's backup


def finance_step(deal_id: str) -> str:
    return f"{deal_id}.v1.s0.finance_director"


async def _approve(http, auth, deal_id: str) -> None:
    resp = await http.post(
        f"/v1/approvals/{finance_step(deal_id)}/decision",
        json={"decision": "approve"},
        headers=auth(FINANCE),
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    "activity", ["resolve_person", "decision_stats", "open_request", "deliver"]
)
async def test_a_failing_request_activity_parks_the_closure_and_one_retry_resumes_it(
    http, auth, settings, temporal_client, activity
):
    deal = await create_deal(http, auth(REP))  # the Finance Director only
    points = failure_points(settings)
    points.arm(activity, deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        parked = await wait_parked(http, deal["id"], auth(REP), activity)
        assert "InjectedFailure" in parked["stage_reason"]
        await search_attribute_stage(temporal_client, deal["id"], "needs_attention")
        chain = temporal_client.get_workflow_handle_for(
            ApprovalChainWorkflow.run, approval_chain_workflow_id(deal["id"], 1)
        )
        assert (await chain.query(ApprovalChainWorkflow.status)).parked.step == activity
    finally:
        points.clear(activity, deal["id"])
    await retry(http, deal["id"], auth(OPS))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    await slack_request_for(http, FINANCE, finance_step(deal["id"]))  # delivered after all
    await _approve(http, auth, deal["id"])
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    if activity == "deliver":
        await record_history(
            temporal_client.get_workflow_handle(approval_chain_workflow_id(deal["id"], 1)),
            "approval_chain_parked_then_retried",
        )
        await record_history(
            temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
            "deal_closure_child_parked_then_retried",
        )


async def _closure_events(temporal_client: Client, deal_id: str) -> list:
    handle = temporal_client.get_workflow_handle(deal_closure_workflow_id(deal_id))
    return [e async for e in handle.fetch_history_events()]


def _child_park_signals(events: list) -> int:
    return sum(
        1
        for e in events
        if e.HasField("workflow_execution_signaled_event_attributes")
        and e.workflow_execution_signaled_event_attributes.signal_name == "child_parked"
    )


def _open_record_stages(events: list) -> int:
    """record_stage activities scheduled and not yet finished (held by a transient failure)."""
    scheduled = {
        e.event_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "record_stage"
    }
    for e in events:
        for field in (
            "activity_task_completed_event_attributes",
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
        ):
            if e.HasField(field):
                scheduled.discard(getattr(e, field).scheduled_event_id)
    return len(scheduled)


async def test_a_child_that_parks_again_while_the_closure_records_its_resume_is_shown_parked(
    http, auth, settings, temporal_client, sessions
):
    """The pinned race behind the flaky retry: a child_parked signal that the closure handles
    while it awaits something else (here: recording the resume) must still be shown.

    Held: the closure's record_stage of the resume (a transient failure, its next attempt
    10 seconds away). Meanwhile the retried open_request fails again and the chain parks
    again. Released: the closure must end parked on it (and take the next retry), not show
    awaiting_approval over a parked chain whose retry the API then refuses (409 not_parked).
    """
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm("open_request", deal["id"])
    # The held record's next attempt comes after this gap; everything else succeeds first time.
    hold = RetryBudget(initial_interval_seconds=10, maximum_interval_seconds=10, maximum_attempts=3)
    closure = temporal_client.get_workflow_handle_for(
        DealClosureWorkflow.run, deal_closure_workflow_id(deal["id"])
    )
    try:
        async with sessions() as s:
            await start_closure(
                temporal_client,
                settings,
                await deals_db.get_deal(s, deal_id=deal["id"]),
                retry=hold,
            )
        await wait_parked(http, deal["id"], auth(REP), "open_request")
        await search_attribute_stage(temporal_client, deal["id"], "needs_attention")
        points.arm("record_stage", deal["id"], mode="transient")  # hold the resume's record
        try:
            await retry(http, deal["id"], auth(OPS))  # open_request is still armed: parks again

            async def reparked_while_held() -> bool:
                events = await _closure_events(temporal_client, deal["id"])
                return _child_park_signals(events) == 3 and _open_record_stages(events) == 1

            # park, resume, park again — all three in while the resume's record is held
            assert await eventually(reparked_while_held, what="the re-park during the hold")
        finally:
            points.clear("record_stage", deal["id"])

        async def shown_parked() -> bool:
            status = await closure.query(DealClosureWorkflow.status)
            return status.stage == "needs_attention" and status.parked is not None

        assert await eventually(shown_parked, timeout=60, what="the closure parked again")
        assert (await closure.query(DealClosureWorkflow.status)).parked.step == "open_request"
    finally:
        points.clear("open_request", deal["id"])
    await retry(http, deal["id"], auth(OPS))  # 202: the closure knows its child is parked
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    await slack_request_for(http, FINANCE, finance_step(deal["id"]))
    await record_history(closure, "deal_closure_child_reparked_while_resume_recorded")


async def test_a_failing_decision_record_parks_and_the_decision_answers_after_the_retry(
    http, auth, settings
):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await slack_request_for(http, FINANCE, finance_step(deal["id"]))  # the request is open
    points = failure_points(settings)
    points.arm("record_decision", deal["id"])
    try:
        decision = asyncio.ensure_future(_approve(http, auth, deal["id"]))
        await wait_parked(http, deal["id"], auth(REP), "record_decision")
        assert not decision.done()  # the decision answers once it is recorded
    finally:
        points.clear("record_decision", deal["id"])
    await retry(http, deal["id"], auth(OPS))
    await decision
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")


async def test_a_failing_withdrawal_parks_the_cancel_until_the_retry(http, auth, settings):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await slack_request_for(http, FINANCE, finance_step(deal["id"]))
    points = failure_points(settings)
    points.arm("withdraw_request", deal["id"])
    try:
        cancel = asyncio.ensure_future(
            http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
        )
        await wait_parked(http, deal["id"], auth(REP), "withdraw_request")
    finally:
        points.clear("withdraw_request", deal["id"])
    await retry(http, deal["id"], auth(OPS))
    resp = await cancel
    assert resp.status_code == 200 and resp.json()["stage"] == "cancelled"
    approvals = resp.json()["approvals"]
    assert [a["status"] for a in approvals] == ["withdrawn"]


async def test_a_failing_reminder_event_parks_and_one_retry_resumes(
    http, auth, settings, temporal_client: Client, sessions
):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm("record_event", deal["id"])
    try:
        async with sessions() as s:
            row = await deals_db.get_deal(s, deal_id=deal["id"])
            # A short SLA: the reminder, and the record_event that audits it, come in seconds.
            short = settings.model_copy(update={"approval_sla_override_seconds": 4})
            await start_closure(temporal_client, short, row)
        await wait_parked(http, deal["id"], auth(REP), "record_event")
    finally:
        points.clear("record_event", deal["id"])
    await retry(http, deal["id"], auth(OPS))

    async def reminded():
        audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
        return "approval.reminded" in [e["event"] for e in audit["events"]]

    assert await eventually(reminded, what="the reminder audited after the retry")
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")


async def test_a_failing_owner_notification_parks_and_one_retry_resumes(http, auth, settings):
    # A close-by date already passed: the chain warns the rep (notify) before asking anyone.
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    deal = await create_deal(http, auth(REP), close_by=yesterday)
    points = failure_points(settings)
    points.arm("notify", deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        await wait_parked(http, deal["id"], auth(REP), "notify")
    finally:
        points.clear("notify", deal["id"])
    await retry(http, deal["id"], auth(OPS))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")

    async def warned():
        return [m for m in await slack_messages(http, REP) if deal["name"] in (m["text"] or "")]

    assert await eventually(warned, what="the late warning after the retry")


# --- the owner may not decide -------------------------------------------------------------


async def _slack_click_as(http, settings, slack_user_id: str, step_id: str) -> dict:
    """A genuine, signed Slack block_actions request from ``slack_user_id`` on ``step_id``."""
    payload = {
        "type": "block_actions",
        "user": {"id": slack_user_id},
        "actions": [{"action_id": "approve", "value": step_id}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()))
    signature = SignatureVerifier(settings.secret("slack_signing_secret")).generate_signature(
        timestamp=ts, body=body
    )
    resp = await http.post(
        "/v1/webhooks/slack/interactions",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        },
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_the_owner_is_refused_by_the_workflow_and_by_slack(
    http, auth, settings, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = finance_step(deal["id"])
    await slack_request_for(http, FINANCE, sid)
    # Slack: the owner presses an Approve button for the step (a signed request from their
    # own Slack account).
    async with sessions() as s:
        rep_slack_id = (await s.get(Person, REP)).slack_user_id
    assert rep_slack_id
    answer = await _slack_click_as(http, settings, rep_slack_id, sid)
    assert "owns this deal" in answer["text"]
    # The update itself (what every door calls), even for a holder-shaped request.
    chain = temporal_client.get_workflow_handle_for(
        ApprovalChainWorkflow.run, approval_chain_workflow_id(deal["id"], 1)
    )
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await chain.execute_update(
            ApprovalChainWorkflow.decide,
            DecisionRequest(step_id=sid, actor_email=REP, decision="approve", channel="api"),
        )
    assert refused.value.cause.type == "OwnerMayNotDecide"
    # The API door: the owner is no approver, and would be refused as owner anyway.
    api = await http.post(
        f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(REP)
    )
    assert api.status_code == 403
    approval = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()["approvals"]
    assert approval[0]["status"] == "pending"
    await record_history(chain, "approval_chain_owner_refused")


async def test_out_of_office_naming_the_owner_as_delegate_routes_nothing_to_them(
    http, auth, sessions
):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = finance_step(deal["id"])
    await slack_request_for(http, FINANCE, sid)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    try:
        resp = await http.put(
            f"/v1/approvers/{FINANCE}/out-of-office",
            json={"until": until, "delegate_email": REP},
            headers=auth(FINANCE),
        )
        assert resp.status_code == 200, resp.text  # naming them is fine ...

        async def refused():
            audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
            return [e for e in audit["events"] if e["event"] == "approval.delegation_refused"]

        assert await eventually(refused, what="the refused delegation on the record")
        approval = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
        assert approval["approvals"][0]["delegate_email"] is None  # ... it routes nothing
        assert not [m for m in await slack_messages(http, REP) if sid in str(m.get("blocks") or "")]
    finally:
        async with sessions.begin() as s:
            person = await s.get(Person, FINANCE)
            person.ooo_until, person.ooo_delegate_email = None, None


async def test_escalation_skips_the_owner_and_goes_to_the_next_in_line(
    http, auth, settings, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP))
    async with sessions.begin() as s:  # the owner as the Finance Director's backup
        (await s.get(Person, FINANCE)).backup_email = REP
    try:
        async with sessions() as s:
            row = await deals_db.get_deal(s, deal_id=deal["id"])
            short = settings.model_copy(update={"approval_sla_override_seconds": 3})
            await start_closure(temporal_client, short, row)
        sid = finance_step(deal["id"])
        escalated = await slack_request_for(http, CFO, sid)  # the manager, past the owner
        approval = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
        assert approval["approvals"][0]["escalated_to"] == CFO
        audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
        assert "approval.owner_skipped" in [e["event"] for e in audit["events"]]
        await click(http, escalated["ts"], "approve", CFO)
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    finally:
        async with sessions.begin() as s:
            (await s.get(Person, FINANCE)).backup_email = CONTROLLER


async def test_when_only_the_owner_is_left_to_escalate_to_the_reps_manager_is_told(
    http, auth, settings, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP))
    async with sessions.begin() as s:  # the owner as both the backup and the manager
        finance = await s.get(Person, FINANCE)
        finance.backup_email, finance.manager_email = REP, REP
        rep_manager = (await s.get(Person, REP)).manager_email
    try:
        async with sessions() as s:
            row = await deals_db.get_deal(s, deal_id=deal["id"])
            short = settings.model_copy(update={"approval_sla_override_seconds": 3})
            await start_closure(temporal_client, short, row)

        async def told():
            return [
                m
                for m in await slack_messages(http, rep_manager)
                if "may not decide" in (m["text"] or "") and deal["name"] in m["text"]
            ]

        assert await eventually(told, timeout=60, what="the rep's manager told")
        audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
        skipped = [e for e in audit["events"] if e["event"] == "approval.owner_skipped"]
        assert skipped and skipped[0]["detail"]["to"] is None
        approval = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
        assert approval["approvals"][0]["holder_email"] == FINANCE  # it stays with its holder
    finally:
        async with sessions.begin() as s:
            finance = await s.get(Person, FINANCE)
            finance.backup_email, finance.manager_email = CONTROLLER, CFO
