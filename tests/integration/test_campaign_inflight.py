"""Sends already under way when a pause or a reply arrives: stopped by the database alone.

The workflows and the activities run on two workers of a private task queue. The activity
worker is stopped, every sequence's step-2 send comes due and is scheduled, then the pause (or
the replies) arrive and are acknowledged, then the activity worker comes back. As far as the
sequences are concerned those sends are already under way, so only what the API or the webhook
wrote to PostgreSQL can stop them; the tests check that it does, every time.
"""

from __future__ import annotations

from sqlalchemy import func, select
from temporalio.worker import Worker

from db.campaign_models import CampaignContact
from dealflow.heartbeat import PulseInterceptor
from tests.utils.campaigns import (
    campaign_mail,
    campaign_payload,
    contact,
    email_step,
    launch_on_queue,
    poll,
    reply,
    seasoned_sender,
    sequence_statuses,
    unique,
)
from tests.utils.deals import REP
from worker import WORKFLOWS, build_activities

STEPS = [email_step(), email_step(subject=None, body="Following up.", wait_days=1)]


async def _scheduled_but_not_sent(
    http, auth, sandbox, sessions, temporal_client, settings, *, act, then
) -> tuple[str, list[str]]:
    """Run a campaign on a private queue until every step-2 send is scheduled but none runs.

    ``act(campaign_id, people, firsts)`` runs then (the pause, or the replies); the activity
    worker comes back, the scheduled sends run, and once every sequence has settled
    ``then(campaign_id, people)`` runs while the workers are still up.
    """
    queue = f"race-{unique()}"
    queue_settings = settings.model_copy(update={"task_queue": queue})
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    people = [f"s{i}.{tag}@split{i % 4}.example" for i in range(12)]
    payload = campaign_payload(
        [contact(e) for e in people],
        sender_email=sender,
        steps=STEPS,
        test_mode={"wait_day_seconds": 6, "reply_window_seconds": 0},
        pause_company_on_reply=False,
    )

    def activity_worker() -> Worker:
        return Worker(
            temporal_client,
            task_queue=queue,
            activities=build_activities(queue_settings, sessions),
            interceptors=[PulseInterceptor()],
        )

    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)):
        async with activity_worker():
            campaign_id = await launch_on_queue(
                http,
                auth(REP),
                payload,
                sessions=sessions,
                temporal_client=temporal_client,
                settings=settings,
                task_queue=queue,
            )

            async def all_waiting():
                got = await sequence_statuses(temporal_client, campaign_id, people)
                return all(len(s.sent) == 1 and s.state == "waiting" for s in got) or None

            await poll("every step 2 waiting", all_waiting)
            # ...and each wait recorded (an activity), so only the timers are left to run.
            await poll("every wait recorded", lambda: _waits_recorded(sessions, campaign_id))
        # No activity worker: the timers fire and each sequence schedules its step-2 send.

        async def all_sending():
            got = await sequence_statuses(temporal_client, campaign_id, people)
            return all(s.state == "sending" and s.step == 1 for s in got) or None

        await poll("every step 2 send scheduled", all_sending)
        firsts = {m.to[0]: m.model_dump(by_alias=True) for m in campaign_mail(sandbox, campaign_id)}
        assert len(firsts) == len(people)
        await act(campaign_id, people, firsts)
        async with activity_worker():

            async def all_settled():
                got = await sequence_statuses(temporal_client, campaign_id, people)
                return all(s.state in ("stopped", "paused") for s in got) or None

            await poll("every scheduled send settled", all_settled)
            await then(campaign_id, people)
    return campaign_id, people


async def _waits_recorded(sessions, campaign_id: str):
    async with sessions() as s:
        waiting = await s.scalar(
            select(func.count())
            .select_from(CampaignContact)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.next_send_at.is_not(None),
            )
        )
    return waiting == 12 or None


async def test_a_reply_to_a_send_already_under_way_stops_it(
    http, auth, sandbox, sessions, temporal_client, settings
):
    async def replies(campaign_id, people, firsts):
        for email in people:
            resp = await reply(http, to_message=firsts[email], text="Not interested, thanks.")
            assert resp.json()["matched"]["contact_email"] == email

        async def heard():
            got = await sequence_statuses(temporal_client, campaign_id, people)
            return all(any(h.event == "reply.received" for h in s.history) for s in got) or None

        # Every sequence heard its reply while its send was already scheduled.
        await poll("the sequences heard the replies", heard)

    async def check(campaign_id, people):
        final = await sequence_statuses(temporal_client, campaign_id, people)
        assert all(s.state == "stopped" and s.outcome == "not_interested" for s in final)
        # Each scheduled send ran, and the hold the webhook wrote refused it.
        assert all(any(h.event == "send.refused" for h in s.history) for s in final)
        assert all([x.step for x in s.sent] == [0] for s in final)
        assert len(campaign_mail(sandbox, campaign_id)) == len(people)

    await _scheduled_but_not_sent(
        http, auth, sandbox, sessions, temporal_client, settings, act=replies, then=check
    )


async def test_a_pause_stops_sends_already_under_way_until_resume(
    http, auth, sandbox, sessions, temporal_client, settings
):
    async def pause(campaign_id, people, firsts):
        resp = await http.post(f"/v1/campaigns/{campaign_id}/pause", headers=auth(REP))
        assert resp.status_code == 202

    async def resume(campaign_id, people):
        assert len(campaign_mail(sandbox, campaign_id)) == len(people)  # nothing after 202
        final = await sequence_statuses(temporal_client, campaign_id, people)
        assert all(s.state == "paused" for s in final)
        resp = await http.post(f"/v1/campaigns/{campaign_id}/resume", headers=auth(REP))
        assert resp.status_code == 202

        async def all_sent():
            return len(campaign_mail(sandbox, campaign_id)) == 2 * len(people) or None

        await poll("step 2 sent after resume", all_sent)

    campaign_id, people = await _scheduled_but_not_sent(
        http, auth, sandbox, sessions, temporal_client, settings, act=pause, then=resume
    )
    ids = [m.message_id for m in campaign_mail(sandbox, campaign_id)]
    assert len(ids) == len(set(ids)) == 2 * len(people)
