"""The two promises that must hold under races, on the real stack.

* Once ``pause`` has answered 202, no email of the campaign is sent until ``resume``: a pause is
  fired while step 2 is coming due for dozens of contacts at once.
* A reply that arrives just before a due send stops it: replies are posted in the last moments
  before each contact's step 2 is due, so their answers land on both sides of the due time.

Here as natural races on the shared worker; test_campaign_inflight.py pins the hardest case
down deterministically (sends already scheduled when the pause or the reply arrives).

No test sleeps to "let things settle": each polls the sequences' status queries until they have
all reached a state in which they can no longer send, then reads the SMTP capture.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import func, select

from db.campaign_models import CampaignSend
from dealflow.ids import campaign_workflow_id, sequence_workflow_id
from tests.utils.campaigns import (
    campaign_mail,
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    poll,
    reply,
    seasoned_sender,
    sequence_statuses,
    unique,
)
from tests.utils.deals import REP, record_history

N = 40
STEPS = [email_step(), email_step(subject=None, body="Following up.", wait_days=1)]


async def test_no_email_is_sent_after_pause_answers_202_until_resume(
    http, auth, sandbox, sessions, temporal_client
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    n = N
    people = [f"r{i}.{tag}@race{i % 7}.example" for i in range(n)]
    payload = campaign_payload(
        [contact(e) for e in people],
        sender_email=sender,
        steps=STEPS,
        test_mode={"wait_day_seconds": 2, "reply_window_seconds": 0},
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)

    # Fire the pause while step 2 is coming due: every step 1 out, the first step 2 too.
    async def step_two_started():
        sent = campaign_mail(sandbox, campaign_id)
        follow_ups = sum(1 for m in sent if (m.subject or "").startswith("Re:"))
        return (follow_ups >= 1 and len(sent) - follow_ups == n) or None

    await poll("step 2 starting", step_two_started, interval=0.005)
    resp = await http.post(f"/v1/campaigns/{campaign_id}/pause", headers=auth(REP))
    acked_at = dt.datetime.now(dt.UTC)
    at_ack = len(campaign_mail(sandbox, campaign_id))
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "paused"
    assert n < at_ack < 2 * n, f"the pause did not race the due sends ({at_ack} sent)"

    # Every sequence ends up either done or blocked by the pause; none can send from there.
    async def quiescent():
        statuses = await sequence_statuses(temporal_client, campaign_id, people)
        return all(s.state in ("paused", "completed") for s in statuses) or None

    await poll("every sequence blocked or done", quiescent)
    # ...and every step-2 due time has passed (2 s after step 1), while paused.
    # (From the database: a sequence whose send attempt timed out under load learns that its
    # step 1 went out only when it retries after the resume; the claim stops a second copy.)
    async with sessions() as s:
        last_step_one = await s.scalar(
            select(func.max(CampaignSend.sent_at)).where(
                CampaignSend.campaign_id == campaign_id, CampaignSend.step_index == 0
            )
        )
    last_due = last_step_one + dt.timedelta(seconds=2)
    await poll(
        "every step 2 due time passed",
        lambda: _true(dt.datetime.now(dt.UTC) > last_due + dt.timedelta(seconds=0.5)),
        timeout=10,
    )
    await poll("still blocked or done", quiescent)
    assert len(campaign_mail(sandbox, campaign_id)) == at_ack
    async with sessions() as s:
        sent_times = (
            await s.scalars(
                select(CampaignSend.sent_at).where(
                    CampaignSend.campaign_id == campaign_id,
                    CampaignSend.status.in_(["sent", "unconfirmed"]),
                )
            )
        ).all()
    assert len(sent_times) == at_ack
    assert max(sent_times) <= acked_at
    statuses = await sequence_statuses(temporal_client, campaign_id, people)
    refused = sum(1 for s in statuses if any(h.event == "campaign.paused" for h in s.history))
    assert refused >= n - (at_ack - n)  # every unsent sequence knows the campaign is paused

    resp = await http.post(f"/v1/campaigns/{campaign_id}/resume", headers=auth(REP))
    assert resp.status_code == 202

    async def all_sent():
        return len(campaign_mail(sandbox, campaign_id)) == 2 * n or None

    await poll("the rest sent after resume", all_sent)
    ids = [m.message_id for m in campaign_mail(sandbox, campaign_id)]
    assert len(ids) == len(set(ids)) == 2 * n
    handle = temporal_client.get_workflow_handle(campaign_workflow_id(campaign_id))
    paused_one = next(
        s
        for s in await sequence_statuses(temporal_client, campaign_id, people)
        if any(h.event == "paused" for h in s.history)
    )
    await record_history(handle, "campaign_paused_resumed")
    await record_history(
        temporal_client.get_workflow_handle(
            sequence_workflow_id(campaign_id, paused_one.contact_email)
        ),
        "sequence_paused_resumed",
    )


async def test_a_reply_just_before_a_due_send_stops_it(
    http, auth, sandbox, sessions, temporal_client
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    people = [f"q{i}.{tag}@reply{i % 5}.example" for i in range(N)]
    payload = campaign_payload(
        [contact(e) for e in people],
        sender_email=sender,
        steps=STEPS,
        test_mode={"wait_day_seconds": 5, "reply_window_seconds": 0},
        pause_company_on_reply=False,
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)

    async def all_first():
        mail = [m for m in campaign_mail(sandbox, campaign_id) if m.subject.startswith("Quick")]
        return mail if len(mail) == N else None

    firsts = {m.to[0]: m.model_dump(by_alias=True) for m in await poll("step 1 out", all_first)}
    statuses = {
        s.contact_email: s for s in await sequence_statuses(temporal_client, campaign_id, people)
    }
    acked: dict[str, dt.datetime] = {}
    latency: list[float] = []

    async def reply_just_before_due(i: int, email: str) -> None:
        due = statuses[email].next_send_at
        assert due is not None
        # Posted 0 to 3.9 s before the send is due, spread so they do not all arrive at once
        # (here the API, the worker and this test share one process): the answers land on both
        # sides of the due time, and for some contacts right on it.
        lead = (i % 14) * 0.3
        await asyncio.sleep(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds() - lead))
        posted = dt.datetime.now(dt.UTC)
        resp = await reply(http, to_message=firsts[email], text="Not interested, thanks.")
        assert resp.status_code == 200, resp.text
        acked[email] = dt.datetime.now(dt.UTC)
        latency.append((acked[email] - posted).total_seconds())

    await asyncio.gather(*(reply_just_before_due(i, e) for i, e in enumerate(people)))

    async def all_ended():
        got = await sequence_statuses(temporal_client, campaign_id, people)
        return got if all(s.state in ("stopped", "completed") for s in got) else None

    final = await poll("every sequence stopped (or done, if its send won)", all_ended)
    async with sessions() as s:
        step_two = dict(
            (
                await s.execute(
                    select(CampaignSend.contact_email, CampaignSend.sent_at).where(
                        CampaignSend.campaign_id == campaign_id,
                        CampaignSend.step_index == 1,
                        CampaignSend.status == "sent",
                    )
                )
            ).all()
        )
    late = [m for m in campaign_mail(sandbox, campaign_id) if (m.subject or "").startswith("Re:")]
    assert len(late) == len(step_two)
    for status in final:
        email = status.contact_email
        if email in step_two:
            # The send won: it was recorded before the reply was acknowledged.
            assert step_two[email] < acked[email]
            continue
        assert status.state == "stopped" and status.outcome == "not_interested"
        assert [s.step for s in status.sent] == [0]
    # The promise exactly: a reply acknowledged before the due time stops the send.
    before_due = [e for e, at in acked.items() if at < statuses[e].next_send_at]
    print(f"\nwebhook latency median {sorted(latency)[len(latency) // 2] * 1000:.0f} ms")
    assert before_due, "no reply was acknowledged before its send was due: nothing was tested"
    for email in before_due:
        assert email not in step_two, email
    refused_by_hold = [s for s in final if any(h.event == "send.refused" for h in s.history)]
    print(
        f"\nreply race: {len(refused_by_hold)} sends refused by the webhook's hold before the "
        f"sequence heard the reply, {N - len(refused_by_hold) - len(step_two)} stopped by the "
        f"signal first, {len(step_two)} sends went out before their reply was acknowledged; "
        f"{len(before_due)} replies acknowledged before the due time, none of them got step 2 "
        f"(webhook latency median {sorted(latency)[len(latency) // 2] * 1000:.0f} ms)"
    )


async def _true(value: bool):
    return value or None
