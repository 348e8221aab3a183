"""Campaigns end to end: create, launch, mail in the SMTP sandbox, reply, stop with the reason.

Real servers throughout (PostgreSQL, the Temporal dev server, the SMTP and Slack sandboxes, the
API on a port). Campaigns run in test mode: windows always open, a wait day lasts a few seconds
(or none), so nothing here waits for a clock.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from db.campaign_models import RepTask
from dealflow.ids import campaign_workflow_id, sequence_workflow_id
from tests.utils.campaigns import (
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    header,
    mail_to,
    poll,
    reply,
    unique,
)
from tests.utils.deals import REP, record_history
from workflows.campaign import CampaignWorkflow
from workflows.sequence import SequenceWorkflow


async def test_launch_sends_threaded_mail_and_a_reply_stops_the_sequence_with_the_reason(
    http, auth, sandbox, temporal_client, sessions, settings
):
    ada = f"ada.{unique()}@acme-robotics.example"
    bob = f"bob.{unique()}@globex.example"
    payload = campaign_payload(
        [contact(ada), contact(bob)],
        steps=[email_step(), email_step(subject=None, body="Any thoughts?", wait_days=1)],
        # A wait day lasts a minute: step 2 is still waiting when Ada replies.
        test_mode={"wait_day_seconds": 60, "reply_window_seconds": 0},
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)

    first = (await poll("step 1 to Ada", lambda: _one(mail_to(sandbox, ada))))[0]
    assert first["subject"] == "Quick question, Ada"
    assert first["from"] == f"Maya Chen <{payload['sender']['email']}>"
    unsubscribe = header(first, "List-Unsubscribe")
    assert re.search(
        rf"<{re.escape(settings.public_base_url)}/v1/unsubscribe/[\w.-]+>", unsubscribe
    )
    assert "<mailto:" in unsubscribe
    assert header(first, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert settings.campaign_postal_address in first["text"]
    assert "Does acme-robotics.example Inc still run approvals" in first["text"]
    assert "/v1/unsubscribe/" in first["html"] and settings.campaign_postal_address in first["html"]

    url = f"/v1/campaigns/{campaign_id}/contacts/{ada}"

    async def waiting_for_step_2() -> dict | None:
        # The message reaches the mailbox a moment before the send activity reports back.
        body = (await http.get(url, headers=auth(REP))).json()
        return body if body["status"] != "sending" else None

    waiting = await poll("Ada's sequence past its first send", waiting_for_step_2)
    assert waiting["live"] is True
    assert waiting["status"] == "waiting" and waiting["step"] == 1
    assert waiting["next_send_at"] is not None
    assert [s["message_id"] for s in waiting["sent"]] == [first["message_id"].strip("<>")]

    resp = await reply(
        http,
        to_message=first,
        text="Yes, we're interested - could you send me some times for a call next week?",
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["classification"]["kind"] in ("interested", "meeting_request")
    assert answer["classification"]["rule"]
    assert answer["matched"] == {"campaign_id": campaign_id, "contact_email": ada}

    async def stopped():
        body = (await http.get(url, headers=auth(REP))).json()
        return body if body["status"] == "stopped" else None

    done = await poll("Ada's sequence stopped", stopped)
    assert done["stop_reason"].startswith("replied: ")
    assert "rule" in done["stop_reason"]
    events = [h["event"] for h in done["history"]]
    assert "reply.received" in events and "sequence.stopped" in events

    # The rep hears about it in Slack, with the thread, and has a task.
    async def slack_dm():
        return [
            m
            for m in sandbox.state.slack.messages(user_email=REP)
            if ada in m.text and "reply from" in m.text
        ]

    dm = (await poll("the rep's Slack message", slack_dm))[0]
    assert "Quick question, Ada" in dm.text and "Sequence stopped" in dm.text
    async with sessions() as s:
        tasks = (await s.scalars(select(RepTask).where(RepTask.contact_email == ada))).all()
    assert [t.kind for t in tasks] == ["follow_up"]

    campaign = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
    assert campaign["counts"]["replied"] == 1
    assert campaign["counts"]["sent"] >= 2
    assert campaign["steps"][0]["replied"] == 1

    # Bob is untouched: still waiting for step 2. Tidy up.
    bob_state = (
        await http.get(f"/v1/campaigns/{campaign_id}/contacts/{bob}", headers=auth(REP))
    ).json()
    assert bob_state["status"] == "waiting"
    assert (
        await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))
    ).status_code == 202
    handle = temporal_client.get_workflow_handle(sequence_workflow_id(campaign_id, ada))
    await handle.result()
    await record_history(handle, "sequence_replied_interested")
    await poll(
        "Bob cancelled",
        lambda: _status(http, auth, campaign_id, bob, "cancelled"),
    )


async def test_follow_ups_are_threaded_and_the_campaign_completes(
    http, auth, sandbox, temporal_client
):
    cy = f"cy.{unique()}@initech.example"
    payload = campaign_payload(
        [contact(cy)],
        steps=[
            email_step(),
            email_step(subject=None, body="Following up, {{ first_name }}."),
            email_step(subject="A last note", body="Last one from me."),
        ],
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)
    messages = await poll("three steps to Cy", lambda: _n(mail_to(sandbox, cy), 3))
    first, second, third = messages
    ids = [m["message_id"].strip("<>") for m in messages]
    assert len(set(ids)) == 3
    assert second["subject"] == f"Re: {first['subject']}"
    assert header(second, "In-Reply-To") == f"<{ids[0]}>"
    assert header(second, "References") == f"<{ids[0]}>"
    assert header(third, "In-Reply-To") == f"<{ids[1]}>"
    assert header(third, "References") == f"<{ids[0]}> <{ids[1]}>"
    assert third["subject"] == "A last note"

    handle = temporal_client.get_workflow_handle_for(
        CampaignWorkflow.run, campaign_workflow_id(campaign_id)
    )
    result = await handle.result()
    assert result.phase == "completed"
    campaign = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
    assert campaign["status"] == "completed"
    assert campaign["counts"]["sent"] == 3 and campaign["counts"]["completed"] == 1
    assert campaign["preflight"]["state"] == "done"
    seq = temporal_client.get_workflow_handle(sequence_workflow_id(campaign_id, cy))
    status = await seq.query(SequenceWorkflow.status)
    assert status.state == "completed" and len(status.sent) == 3
    await record_history(handle, "campaign_completed")
    await record_history(seq, "sequence_three_emails_completed")
    # Launching again is refused: it already ran.
    again = await http.post(f"/v1/campaigns/{campaign_id}/launch", headers=auth(REP))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "campaign_not_draft"


async def _status(http, auth, campaign_id, email, status):
    body = (
        await http.get(f"/v1/campaigns/{campaign_id}/contacts/{email}", headers=auth(REP))
    ).json()
    return body if body["status"] == status else None


async def _one(messages):
    return messages if len(messages) >= 1 else None


async def _n(messages, n):
    return messages if len(messages) >= n else None
