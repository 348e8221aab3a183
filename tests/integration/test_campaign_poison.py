"""Poison tests: every campaign and sequence activity failing for good parks in needs_attention.

A failure point (``dealflow.faults.FailurePoints``) is armed for one activity and one business
key (the campaign id, or the contact's sequence workflow id) before the step runs. The workflow
must then park: ``GET /v1/campaigns/{id}`` (or the contact's) shows ``needs_attention`` with the
error, the ``CampaignStatus`` search attribute finds it, and the counts name the parked contacts.
Once the point is cleared, ``POST …/retry`` (or the bare ``retry`` signal the Temporal UI sends)
runs the failed step again and the campaign carries on to its end: each email exactly once.

Real servers throughout; test mode makes the retry backoff a tenth of a second, so a transient
failure spends its whole budget (10 attempts) in a few seconds.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from db.campaign_models import Campaign, CampaignContact, CampaignSend, RepTask
from dealflow.faults import FailurePoints
from dealflow.ids import campaign_workflow_id, sequence_workflow_id
from messages.campaign import BounceRecorded
from tests.utils.campaigns import (
    campaign_mail,
    campaign_payload,
    contact,
    email_step,
    mail_to,
    reply,
    seasoned_sender,
    unique,
)
from tests.utils.deals import REP, record_history
from tests.utils.polling import eventually
from workflows.campaign import CampaignWorkflow
from workflows.sequence import SequenceWorkflow

# Zero waits, no reply window: a campaign runs from launch to completed in seconds.
FAST = {"wait_day_seconds": 0, "reply_window_seconds": 0}
# Step 2 is ten minutes off: the campaign and its sequences are still running when we act.
RUNNING = {"wait_day_seconds": 600, "reply_window_seconds": 0}
TWO_STEPS = [email_step(), email_step(subject=None, body="Again.", wait_days=1)]
CALL_STEP = {"channel": "call_task", "subject": "Call {{ first_name }}", "body": "Ask about Q3."}


@pytest.fixture
def failures(settings) -> FailurePoints:
    return FailurePoints(settings.state_dir, enabled=True)


async def _create(http, auth, sessions, people, *, steps, test_mode) -> str:
    sender = f"maya.chen+{unique()}@dealflow.example"
    await seasoned_sender(sessions, sender)
    payload = campaign_payload(
        [contact(e) for e in people],
        sender_email=sender,
        steps=steps,
        test_mode=test_mode,
        pause_company_on_reply=False,
    )
    resp = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


async def _launch(http, auth, campaign_id: str) -> None:
    resp = await http.post(f"/v1/campaigns/{campaign_id}/launch", headers=auth(REP))
    assert resp.status_code == 202, resp.text


async def _campaign(http, auth, campaign_id: str) -> dict[str, Any]:
    resp = await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _contact(http, auth, campaign_id: str, email: str) -> dict[str, Any]:
    resp = await http.get(f"/v1/campaigns/{campaign_id}/contacts/{email}", headers=auth(REP))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _campaign_in(http, auth, campaign_id: str, status: str, **match: Any) -> dict:
    async def probe():
        body = await _campaign(http, auth, campaign_id)
        ok = body["status"] == status and all(body.get(k) == v for k, v in match.items())
        return body if ok else None

    return await eventually(probe, what=f"campaign {campaign_id} {status} {match or ''}")


async def _contact_in(http, auth, campaign_id: str, email: str, status: str) -> dict:
    async def probe():
        body = await _contact(http, auth, campaign_id, email)
        return body if body["status"] == status else None

    return await eventually(probe, what=f"{email} {status}")


async def _search_attribute(temporal_client, workflow_id: str) -> str | None:
    desc = await temporal_client.get_workflow_handle(workflow_id).describe()
    return {k.name: v for k, v in desc.typed_search_attributes}.get("CampaignStatus")


async def _parked_by_search(temporal_client, campaign_id: str) -> set[str]:
    query = f'CampaignId = "{campaign_id}" AND CampaignStatus = "needs_attention"'
    return {w.id async for w in temporal_client.list_workflows(query)}


async def _db_attention(sessions, campaign_id: str, email: str | None = None):
    async with sessions() as s:
        if email is None:
            return await s.scalar(select(Campaign.attention).where(Campaign.id == campaign_id))
        return await s.scalar(
            select(CampaignContact.attention).where(
                CampaignContact.campaign_id == campaign_id, CampaignContact.email == email
            )
        )


async def _db_cleared(sessions, campaign_id: str, email: str | None = None) -> bool:
    return await _db_attention(sessions, campaign_id, email) is None


async def _mail(sandbox, email: str) -> list[dict[str, Any]]:
    return mail_to(sandbox, email)


async def _all_mailed(sandbox, people: list[str], n: int = 1):
    got = {e: len(mail_to(sandbox, e)) for e in people}
    return got if all(v >= n for v in got.values()) else None


def _message_ids_once(sandbox, campaign_id: str) -> None:
    ids = collections.Counter(m.message_id for m in campaign_mail(sandbox, campaign_id))
    assert ids and all(n == 1 for n in ids.values()), ids


async def _hard_bounces(sessions, campaign_id: str, email: str, sent: int, hard: int) -> None:
    """Sends on record for the bounce-rate check: ``hard`` of ``sent`` bounced (test data)."""
    async with sessions.begin() as s:
        sender = await s.scalar(select(Campaign.sender_email).where(Campaign.id == campaign_id))
        for i in range(sent):
            s.add(
                CampaignSend(
                    message_id=f"{campaign_id}.bounce{i}@dealflow.example",
                    campaign_id=campaign_id,
                    contact_email=email,
                    step_index=100 + i,  # one row per (contact, step)
                    sender_email=sender,
                    cap_day=dt.date.today(),
                    status="sent",
                    requested_at=dt.datetime.now(dt.UTC),
                    bounce_type="hard" if i < hard else None,
                )
            )


# --- the campaign workflow ----------------------------------------------------------------------

CAMPAIGN_ACTIVITIES = [
    "preflight",
    "enrol_batch",
    "campaign_progress",
    "finish_campaign",
    "broadcast_state",
    "check_bounce_rate",
    "notify_rep",
]
# These run only on an event while the campaign runs (a pause, a bounce): step 2 waits.
_ON_EVENT = ("broadcast_state", "check_bounce_rate", "notify_rep")


@pytest.mark.parametrize("activity", CAMPAIGN_ACTIVITIES)
async def test_a_permanent_failure_in_each_campaign_activity_parks_it_until_a_retry(
    activity, http, auth, sandbox, sessions, temporal_client, failures
):
    tag = unique()
    people = [f"c{i}.{tag}@poison{i}.example" for i in range(2)]
    on_event = activity in _ON_EVENT
    campaign_id = await _create(
        http,
        auth,
        sessions,
        people,
        steps=TWO_STEPS if on_event else [email_step()],
        test_mode=RUNNING if on_event else FAST,
    )
    workflow_id = campaign_workflow_id(campaign_id)
    handle = temporal_client.get_workflow_handle_for(CampaignWorkflow.run, workflow_id)
    failures.arm(activity, campaign_id)
    try:
        await _launch(http, auth, campaign_id)
        if on_event:
            await eventually(lambda: _all_mailed(sandbox, people), what="step 1 to everyone")
            if activity == "broadcast_state":
                resp = await http.post(f"/v1/campaigns/{campaign_id}/pause", headers=auth(REP))
                assert resp.status_code == 202, resp.text
            else:
                # 4 hard bounces on record: the check pauses the campaign. The signal is what
                # the delivery-event webhook sends on a hard bounce.
                await _hard_bounces(sessions, campaign_id, people[0], 60, 4)
                bounced = BounceRecorded(message_id=f"{campaign_id}.bounce0@dealflow.example")
                await handle.signal(CampaignWorkflow.bounce_recorded, bounced)

        parked = await _campaign_in(http, auth, campaign_id, "needs_attention")
        attention = parked["attention"]
        assert attention["activity"] == activity
        assert attention["error_type"] == "InjectedFailure"
        assert attention["retry_state"] == "NON_RETRYABLE_FAILURE"
        assert parked["status_reason"] == (
            f"{activity} failed: injected permanent failure in {activity} for {campaign_id}"
        )
        assert await _search_attribute(temporal_client, workflow_id) == "needs_attention"
        assert workflow_id in await eventually(
            lambda: _parked_by_search(temporal_client, campaign_id), what="found by search"
        )
        recorded = await eventually(lambda: _db_attention(sessions, campaign_id), what="on row")
        assert recorded["activity"] == activity
    finally:
        failures.clear(activity, campaign_id)

    resp = await http.post(f"/v1/campaigns/{campaign_id}/retry", headers=auth(REP))
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"campaign_id": campaign_id, "campaign": True, "contacts": []}

    if activity == "broadcast_state":
        # The pause reached the sequences once the fan-out ran again.
        async def told():
            got = [
                await temporal_client.get_workflow_handle_for(
                    SequenceWorkflow.run, sequence_workflow_id(campaign_id, e)
                ).query(SequenceWorkflow.status)
                for e in people
            ]
            return all(s.campaign_status == "paused" for s in got) or None

        await eventually(told, what="sequences told of the pause")
        done = await _campaign_in(http, auth, campaign_id, "paused")
    elif activity in ("check_bounce_rate", "notify_rep"):
        done = await _campaign_in(http, auth, campaign_id, "paused", attention=None)
        # 4 hard bounces in 62 sends (60 on record, 2 real): the re-run check paused it.
        assert "hard-bounce rate 6.5 % after 62 sends" in done["status_reason"]

        async def rep_told():
            return [
                m
                for m in sandbox.state.slack.messages(user_email=REP)
                if campaign_id in m.text and "paused itself" in m.text
            ] or None

        await eventually(rep_told, what="the rep told of the bounce pause")
    else:
        done = await _campaign_in(http, auth, campaign_id, "completed")
        result = await handle.result()
        assert result.phase == "completed" and result.attention is None
        assert all(len(mail_to(sandbox, e)) == 1 for e in people)
    assert done["attention"] is None
    assert await _search_attribute(temporal_client, workflow_id) is None
    await eventually(lambda: _db_cleared(sessions, campaign_id), what="row cleared")
    _message_ids_once(sandbox, campaign_id)
    if activity == "enrol_batch":
        await record_history(handle, "campaign_needs_attention_retried")
    if on_event:
        resp = await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))
        assert resp.status_code == 202, resp.text
        assert (await handle.result()).phase == "cancelled"


# --- the sequence workflow ----------------------------------------------------------------------

SEQUENCE_ACTIVITIES = [
    "send_email",
    "record_contact",
    "create_task",
    "complete_task",
    "route_reply",
    "notify_rep",
]


@pytest.mark.parametrize("activity", SEQUENCE_ACTIVITIES)
async def test_a_permanent_failure_in_each_sequence_activity_parks_it_until_a_retry(
    activity, http, auth, sandbox, sessions, temporal_client, failures
):
    tag = unique()
    ada, bob = f"ada.{tag}@seq-{tag}.example", f"bob.{tag}@other-{tag}.example"
    tasks = activity in ("create_task", "complete_task")
    replies = activity in ("route_reply", "notify_rep")
    if tasks:
        steps, test_mode = [CALL_STEP, email_step(subject="After our call")], FAST
    elif replies:
        steps, test_mode = TWO_STEPS, RUNNING
    else:
        steps, test_mode = [email_step()], FAST
    campaign_id = await _create(http, auth, sessions, [ada, bob], steps=steps, test_mode=test_mode)
    workflow_id = sequence_workflow_id(campaign_id, ada)
    handle = temporal_client.get_workflow_handle_for(SequenceWorkflow.run, workflow_id)
    done_url = f"/v1/campaigns/{campaign_id}/contacts/{ada}/tasks/0/done"
    first = None
    if activity not in ("complete_task", "route_reply", "notify_rep"):
        failures.arm(activity, workflow_id)
    try:
        await _launch(http, auth, campaign_id)
        if activity == "complete_task":
            await _contact_in(http, auth, campaign_id, ada, "waiting_task")
            failures.arm(activity, workflow_id)
            assert (await http.post(done_url, headers=auth(REP))).status_code == 202
        if replies:
            first = (await eventually(lambda: _mail(sandbox, ada), what="step 1 to Ada"))[0]
            failures.arm(activity, workflow_id)
            resp = await reply(http, to_message=first, text="Yes, interested - call me Tuesday?")
            assert resp.status_code == 200, resp.text

        parked = await _contact_in(http, auth, campaign_id, ada, "needs_attention")
        assert parked["live"] is True
        assert parked["attention"]["activity"] == activity
        assert parked["attention"]["error"] == (
            f"injected permanent failure in {activity} for {workflow_id}"
        )
        assert any(h["event"] == "needs_attention" for h in parked["history"])
        assert await _search_attribute(temporal_client, workflow_id) == "needs_attention"
        campaign = await eventually(
            lambda: _counted(http, auth, campaign_id), what="counted as needing attention"
        )
        assert campaign["status"] == "active"  # one contact parked, not the campaign
        # Bob's sequence is not held up by Ada's.
        assert (await _contact(http, auth, campaign_id, bob))["status"] != "needs_attention"
    finally:
        failures.clear(activity, workflow_id)

    if activity == "record_contact":
        # What the Temporal UI sends: the bare signal, no input.
        await temporal_client.get_workflow_handle(workflow_id).signal("retry")
    elif activity == "send_email":
        url = f"/v1/campaigns/{campaign_id}/contacts/{ada}/retry"
        resp = await http.post(url, headers=auth(REP))
        assert resp.status_code == 202, resp.text
        assert resp.json()["contacts"] == [ada]
    else:
        resp = await http.post(f"/v1/campaigns/{campaign_id}/retry", headers=auth(REP))
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"campaign_id": campaign_id, "campaign": False, "contacts": [ada]}

    if activity == "create_task":
        await _contact_in(http, auth, campaign_id, ada, "waiting_task")
        assert (await http.post(done_url, headers=auth(REP))).status_code == 202
    if replies:
        status = await handle.result()
        assert status.state == "stopped" and status.outcome == "interested"
        events = [h.event for h in status.history]
        assert "rep.notified" in events and "rep.notify_failed" not in events
        async with sessions() as s:
            follow_up = await s.scalar(
                select(RepTask).where(
                    RepTask.campaign_id == campaign_id,
                    RepTask.contact_email == ada,
                    RepTask.kind == "follow_up",
                )
            )
        assert follow_up is not None
    else:
        status = await handle.result()
        assert status.state == "completed", status
        if tasks:
            async with sessions() as s:
                task = await s.scalar(select(RepTask).where(RepTask.contact_email == ada))
            assert task.status == "done"
    final = await _contact(http, auth, campaign_id, ada)
    assert final["status"] != "needs_attention" and final["attention"] is None
    assert await _search_attribute(temporal_client, workflow_id) is None
    await eventually(lambda: _db_cleared(sessions, campaign_id, ada), what="row cleared")
    assert len(mail_to(sandbox, ada)) == 1
    _message_ids_once(sandbox, campaign_id)
    if activity == "send_email":
        await record_history(handle, "sequence_needs_attention_retried")
    if replies:
        await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))


async def _counted(http, auth, campaign_id: str):
    body = await _campaign(http, auth, campaign_id)
    return body if body["counts"]["needs_attention"] == 1 else None


async def test_a_transient_failure_spends_its_budget_then_parks_and_a_retry_sends_once(
    http, auth, sandbox, sessions, temporal_client, failures
):
    tag = unique()
    ada = f"ada.{tag}@transient-{tag}.example"
    campaign_id = await _create(http, auth, sessions, [ada], steps=[email_step()], test_mode=FAST)
    workflow_id = sequence_workflow_id(campaign_id, ada)
    failures.arm("send_email", workflow_id, mode="transient")
    try:
        await _launch(http, auth, campaign_id)
        parked = await _contact_in(http, auth, campaign_id, ada, "needs_attention")
        attention = parked["attention"]
        assert attention["activity"] == "send_email"
        assert attention["error_type"] == "InjectedTransientError"
        assert attention["retry_state"] == "MAXIMUM_ATTEMPTS_REACHED"  # the budget, spent
        assert mail_to(sandbox, ada) == []
    finally:
        failures.clear("send_email", workflow_id)
    resp = await http.post(f"/v1/campaigns/{campaign_id}/retry", headers=auth(REP))
    assert resp.status_code == 202, resp.text
    handle = temporal_client.get_workflow_handle_for(SequenceWorkflow.run, workflow_id)
    assert (await handle.result()).state == "completed"
    assert len(mail_to(sandbox, ada)) == 1
    _message_ids_once(sandbox, campaign_id)


async def test_retry_of_a_campaign_with_nothing_parked_is_409(http, auth, sandbox, sessions):
    tag = unique()
    ada = f"ada.{tag}@calm-{tag}.example"
    campaign_id = await _create(http, auth, sessions, [ada], steps=TWO_STEPS, test_mode=RUNNING)
    await _launch(http, auth, campaign_id)
    await eventually(lambda: _mail(sandbox, ada), what="step 1")
    resp = await http.post(f"/v1/campaigns/{campaign_id}/retry", headers=auth(REP))
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "nothing_to_retry"
    resp = await http.post(f"/v1/campaigns/{campaign_id}/contacts/{ada}/retry", headers=auth(REP))
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "nothing_to_retry"
    await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))


async def test_a_park_whose_record_fails_is_still_shown_found_and_retried(
    http, auth, sandbox, sessions, temporal_client, failures
):
    """``record_attention`` failing too: the row knows nothing, but the sequence's own status
    (the API's live read) and its search attribute do, and the campaign retry finds it."""
    tag = unique()
    ada = f"ada.{tag}@norecord-{tag}.example"
    campaign_id = await _create(http, auth, sessions, [ada], steps=[email_step()], test_mode=FAST)
    workflow_id = sequence_workflow_id(campaign_id, ada)
    failures.arm("send_email", workflow_id)
    failures.arm("record_attention", workflow_id)
    try:
        await _launch(http, auth, campaign_id)
        parked = await _contact_in(http, auth, campaign_id, ada, "needs_attention")
        assert parked["attention"]["activity"] == "send_email"
        assert workflow_id in await eventually(
            lambda: _parked_by_search(temporal_client, campaign_id), what="found by search"
        )
        assert await _db_attention(sessions, campaign_id, ada) is None
    finally:
        failures.clear("send_email", workflow_id)
        failures.clear("record_attention", workflow_id)
    resp = await http.post(f"/v1/campaigns/{campaign_id}/retry", headers=auth(REP))
    assert resp.status_code == 202, resp.text
    assert resp.json()["contacts"] == [ada]
    handle = temporal_client.get_workflow_handle_for(SequenceWorkflow.run, workflow_id)
    assert (await handle.result()).state == "completed"
    assert len(mail_to(sandbox, ada)) == 1
