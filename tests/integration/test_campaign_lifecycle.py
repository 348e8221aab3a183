"""Cancel, pause and resume in every non-terminal status; templates that raise when rendered.

Statuses: draft (no workflow yet), preflight (pinned: the workflow runs on a private queue whose
activity worker is not up yet, so the preflight is scheduled and cannot start), active, paused,
and needs_attention (parked on an injected failure). Real servers throughout.
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.worker import Worker

from dealflow.faults import FailurePoints
from dealflow.heartbeat import PulseInterceptor
from dealflow.ids import campaign_workflow_id, sequence_workflow_id
from tests.utils.campaigns import (
    campaign_mail,
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    launch_on_queue,
    mail_to,
    seasoned_sender,
    sequence_statuses,
    unique,
)
from tests.utils.deals import REP
from tests.utils.polling import eventually
from worker import WORKFLOWS, build_activities
from workflows.campaign import CampaignWorkflow
from workflows.sequence import SequenceWorkflow

RUNNING = {"wait_day_seconds": 600, "reply_window_seconds": 0}
TWO_STEPS = [email_step(), email_step(subject=None, body="Again.", wait_days=1)]


async def _campaign(http, auth, campaign_id: str) -> dict[str, Any]:
    resp = await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _status_is(http, auth, campaign_id: str, status: str) -> dict[str, Any]:
    async def probe():
        body = await _campaign(http, auth, campaign_id)
        return body if body["status"] == status else None

    return await eventually(probe, what=f"campaign {campaign_id} {status}")


async def _post(http, auth, campaign_id: str, verb: str, expect: int = 202) -> dict[str, Any]:
    resp = await http.post(f"/v1/campaigns/{campaign_id}/{verb}", headers=auth(REP))
    assert resp.status_code == expect, resp.text
    return resp.json()


async def _people_mailed(sandbox, people: list[str]):
    return all(mail_to(sandbox, e) for e in people) or None


async def _sequences_know(temporal_client, campaign_id: str, people: list[str], status: str):
    async def probe():
        got = await sequence_statuses(temporal_client, campaign_id, people)
        return all(s.campaign_status == status for s in got) or None

    await eventually(probe, what=f"every sequence knows the campaign is {status}")


def _payload(people: list[str], sender: str, **extra: Any) -> dict[str, Any]:
    return campaign_payload(
        [contact(e) for e in people],
        sender_email=sender,
        steps=TWO_STEPS,
        test_mode=RUNNING,
        pause_company_on_reply=False,
        **extra,
    )


class _PinnedPreflight:
    """A campaign launched on a private queue with only a workflow worker: its preflight is
    scheduled and cannot start until ``activities()`` brings an activity worker up."""

    def __init__(self, temporal_client, settings, sessions) -> None:
        self.queue = f"pinned-{unique()}"
        self.client = temporal_client
        self.settings = settings.model_copy(update={"task_queue": self.queue})
        self.sessions = sessions

    def workflows(self) -> Worker:
        return Worker(self.client, task_queue=self.queue, workflows=list(WORKFLOWS))

    def activities(self) -> Worker:
        return Worker(
            self.client,
            task_queue=self.queue,
            activities=build_activities(self.settings, self.sessions),
            interceptors=[PulseInterceptor()],
        )


async def _preflight_pending(temporal_client, campaign_id: str) -> None:
    handle = temporal_client.get_workflow_handle(campaign_workflow_id(campaign_id))

    async def probe():
        desc = await handle.describe()
        pending = [a.activity_type.name for a in desc.raw_description.pending_activities]
        return pending == ["preflight"] or None

    await eventually(probe, what="the preflight scheduled, not started")


@pytest.mark.parametrize("status", ["draft", "preflight", "active", "paused", "needs_attention"])
async def test_cancel_works_in_every_non_terminal_status(
    status, http, auth, sandbox, sessions, temporal_client, settings
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    people = [f"x{i}.{tag}@cancel{i}.example" for i in range(2)]
    payload = _payload(people, sender)
    failures = FailurePoints(settings.state_dir, enabled=True)

    if status == "draft":
        resp = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
        campaign_id = resp.json()["id"]
        assert (await _post(http, auth, campaign_id, "cancel"))["status"] == "cancelled"
        assert (await _campaign(http, auth, campaign_id))["finished_at"] is not None
        assert campaign_mail(sandbox, campaign_id) == []
        return

    if status == "preflight":
        pinned = _PinnedPreflight(temporal_client, settings, sessions)
        async with pinned.workflows():
            campaign_id = await launch_on_queue(
                http,
                auth(REP),
                payload,
                sessions=sessions,
                temporal_client=temporal_client,
                settings=settings,
                task_queue=pinned.queue,
            )
            await _preflight_pending(temporal_client, campaign_id)
            assert (await _post(http, auth, campaign_id, "cancel"))["status"] == "cancelled"
            async with pinned.activities():
                handle = temporal_client.get_workflow_handle_for(
                    CampaignWorkflow.run, campaign_workflow_id(campaign_id)
                )
                result = await handle.result()
        assert result.phase == "cancelled" and result.progress.preflight is None
        body = await _campaign(http, auth, campaign_id)
        assert body["status"] == "cancelled" and body["preflight"] == {"state": "running"}
        assert campaign_mail(sandbox, campaign_id) == []
        return

    resp = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
    campaign_id = resp.json()["id"]
    handle = temporal_client.get_workflow_handle_for(
        CampaignWorkflow.run, campaign_workflow_id(campaign_id)
    )
    if status == "needs_attention":
        failures.arm("enrol_batch", campaign_id)
    try:
        await _post(http, auth, campaign_id, "launch")
        if status == "needs_attention":
            await _status_is(http, auth, campaign_id, "needs_attention")
        else:
            await eventually(lambda: _people_mailed(sandbox, people), what="step 1")
        if status == "paused":
            await _post(http, auth, campaign_id, "pause")
            await _sequences_know(temporal_client, campaign_id, people, "paused")
        answer = await _post(http, auth, campaign_id, "cancel")
        result = await handle.result()
    finally:
        failures.clear("enrol_batch", campaign_id)
    assert answer["status"] == "cancelled"
    assert result.phase == "cancelled" and result.attention is None
    assert (await _campaign(http, auth, campaign_id))["status"] == "cancelled"
    expected = 0 if status == "needs_attention" else len(people)  # step 1 only, never step 2
    assert len(campaign_mail(sandbox, campaign_id)) == expected


async def test_pause_is_409_for_a_draft_and_resume_for_a_running_campaign(http, auth, sessions):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    resp = await http.post(
        "/v1/campaigns", json=_payload([f"d.{tag}@draft.example"], sender), headers=auth(REP)
    )
    campaign_id = resp.json()["id"]
    await _post(http, auth, campaign_id, "pause", expect=409)
    await _post(http, auth, campaign_id, "resume", expect=409)
    await _post(http, auth, campaign_id, "cancel")


async def test_pause_and_resume_reach_the_sequences_while_the_campaign_is_parked(
    http, auth, sandbox, sessions, temporal_client, settings
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    people = [f"n{i}.{tag}@parked{i}.example" for i in range(2)]
    failures = FailurePoints(settings.state_dir, enabled=True)
    resp = await http.post("/v1/campaigns", json=_payload(people, sender), headers=auth(REP))
    campaign_id = resp.json()["id"]
    handle = temporal_client.get_workflow_handle_for(
        CampaignWorkflow.run, campaign_workflow_id(campaign_id)
    )
    # Enrolled and mailing, then the progress check fails for good: parked, sequences running.
    failures.arm("campaign_progress", campaign_id)
    try:
        await _post(http, auth, campaign_id, "launch")
        await eventually(lambda: _people_mailed(sandbox, people), what="step 1")
        await _status_is(http, auth, campaign_id, "needs_attention")

        await _post(http, auth, campaign_id, "pause")
        await _sequences_know(temporal_client, campaign_id, people, "paused")
        # Carried out, and still parked on the step that fails.
        parked = await _status_is(http, auth, campaign_id, "needs_attention")
        assert parked["attention"]["activity"] == "campaign_progress"

        await _post(http, auth, campaign_id, "resume")
        await _sequences_know(temporal_client, campaign_id, people, "active")
        await _status_is(http, auth, campaign_id, "needs_attention")
    finally:
        failures.clear("campaign_progress", campaign_id)
    await _post(http, auth, campaign_id, "retry")
    await _status_is(http, auth, campaign_id, "active")
    await _post(http, auth, campaign_id, "cancel")
    assert (await handle.result()).phase == "cancelled"
    assert len(campaign_mail(sandbox, campaign_id)) == len(people)


async def test_pause_and_resume_during_the_preflight(
    http, auth, sandbox, sessions, temporal_client, settings
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    people = [f"p{i}.{tag}@prefl{i}.example" for i in range(2)]
    pinned = _PinnedPreflight(temporal_client, settings, sessions)
    async with pinned.workflows():
        campaign_id = await launch_on_queue(
            http,
            auth(REP),
            _payload(people, sender),
            sessions=sessions,
            temporal_client=temporal_client,
            settings=settings,
            task_queue=pinned.queue,
        )
        await _preflight_pending(temporal_client, campaign_id)
        assert (await _post(http, auth, campaign_id, "pause"))["status"] == "paused"
        handle = temporal_client.get_workflow_handle_for(
            CampaignWorkflow.run, campaign_workflow_id(campaign_id)
        )
        async with pinned.activities():

            async def preflight_done_and_paused():
                live = await handle.query(CampaignWorkflow.status)
                done = live.progress.preflight is not None
                return (done and live.phase == "paused" and live.progress.started == 0) or None

            # Paused before enrolment: nobody enrolled, so nothing can be sent.
            await eventually(preflight_done_and_paused, what="preflight done, held by the pause")
            assert campaign_mail(sandbox, campaign_id) == []
            await _post(http, auth, campaign_id, "resume")
            await eventually(lambda: _people_mailed(sandbox, people), what="step 1 after resume")
            await _post(http, auth, campaign_id, "cancel")
            assert (await handle.result()).phase == "cancelled"


# --- templates that compile but raise when rendered -------------------------------------------


async def test_a_template_that_raises_for_everyone_fails_the_launch_with_the_reason(
    http, auth, sandbox, sessions, temporal_client
):
    tag = unique()
    people = [f"z{i}.{tag}@zero.example" for i in range(2)]
    payload = campaign_payload(
        [contact(e) for e in people], steps=[email_step(body="Hi {{ first_name }} {{ 1/0 }}")]
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)
    handle = temporal_client.get_workflow_handle_for(
        CampaignWorkflow.run, campaign_workflow_id(campaign_id)
    )
    result = await handle.result()  # ends: no endless preflight
    assert result.phase == "failed"
    body = await _campaign(http, auth, campaign_id)
    assert body["status"] == "failed"
    assert body["status_reason"] == (
        "no contact can be mailed: template error in step 1: ZeroDivisionError: division by zero"
    )
    assert body["preflight"]["state"] == "failed"
    assert body["preflight"]["by_reason"] == {"template_error": 2}
    one = await http.get(f"/v1/campaigns/{campaign_id}/contacts/{people[0]}", headers=auth(REP))
    assert one.json()["status"] == "excluded"
    assert "ZeroDivisionError" in one.json()["excluded_reason"]
    assert campaign_mail(sandbox, campaign_id) == []


async def test_a_template_that_raises_on_one_contacts_value_excludes_only_that_contact(
    http, auth, sandbox, temporal_client
):
    tag = unique()
    zero, four = f"zero.{tag}@seats.example", f"four.{tag}@seats.example"
    payload = campaign_payload(
        [contact(zero, fields={"seats": "0"}), contact(four, fields={"seats": "4"})],
        steps=[email_step(body="{{ 100 // (fields.seats | int) }} per seat")],
        test_mode={"wait_day_seconds": 0, "reply_window_seconds": 0},
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)
    handle = temporal_client.get_workflow_handle_for(
        CampaignWorkflow.run, campaign_workflow_id(campaign_id)
    )
    assert (await handle.result()).phase == "completed"
    body = await _campaign(http, auth, campaign_id)
    excluded = {e["email"]: e["reason"] for e in body["preflight"]["excluded_contacts"]}
    assert excluded == {
        zero: "template error in step 1: ZeroDivisionError: integer division or modulo by zero"
    }
    assert "25 per seat" in mail_to(sandbox, four)[0]["text"]
    assert mail_to(sandbox, zero) == []


async def test_cancel_ends_a_sequence_parked_in_needs_attention(
    http, auth, sandbox, sessions, temporal_client, settings
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    ada, bob = f"ada.{tag}@parkcancel.example", f"bob.{tag}@parkcancel2.example"
    failures = FailurePoints(settings.state_dir, enabled=True)
    resp = await http.post("/v1/campaigns", json=_payload([ada, bob], sender), headers=auth(REP))
    campaign_id = resp.json()["id"]
    key = sequence_workflow_id(campaign_id, ada)
    failures.arm("send_email", key)
    try:
        await _post(http, auth, campaign_id, "launch")

        async def ada_parked():
            got = await http.get(f"/v1/campaigns/{campaign_id}/contacts/{ada}", headers=auth(REP))
            return got.json()["status"] == "needs_attention" or None

        await eventually(ada_parked, what="Ada's sequence parked")
        await eventually(lambda: _people_mailed(sandbox, [bob]), what="Bob mailed")
        await _post(http, auth, campaign_id, "cancel")
        sequence = temporal_client.get_workflow_handle_for(SequenceWorkflow.run, key)
        status = await sequence.result()
    finally:
        failures.clear("send_email", key)
    assert status.state == "cancelled" and status.stop_reason == "the campaign was cancelled"
    assert "park.abandoned" in [h.event for h in status.history]
    handle = temporal_client.get_workflow_handle_for(
        CampaignWorkflow.run, campaign_workflow_id(campaign_id)
    )
    assert (await handle.result()).phase == "cancelled"
    assert mail_to(sandbox, ada) == [] and len(mail_to(sandbox, bob)) == 1
