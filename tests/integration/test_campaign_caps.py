"""Sender caps and warm-up shared across campaigns, overflow order, the bounce-rate auto-pause.

The first tests run on the whole stack. The day-crossing ones call the send activity directly
(``ActivityEnvironment``) against the real database and SMTP sandbox, with a clock the test
moves: a sender's week of warm-up cannot be waited for.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities.campaigns import CampaignActivities
from activities.sequence import SequenceActivities
from db import campaigns as campaigns_db
from db.campaign_models import Campaign, CampaignSend, SenderDayUsage
from dealflow.faults import CrashPoints
from dealflow.ids import message_id_for, sequence_workflow_id
from domain.campaign_email import EmailLayout
from integrations.smtp import SmtpMailer
from messages.campaign import BounceCheckInput, SendEmailInput, WindowSpec
from tests.utils.campaigns import (
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    mail_to,
    poll,
    post_signed,
    seasoned_sender,
    unique,
)
from tests.utils.deals import REP, record_history
from workflows.sequence import SequenceWorkflow

LA = ZoneInfo("America/Los_Angeles")


async def test_two_campaigns_share_a_new_senders_warm_up_cap(
    http, auth, sandbox, sessions, temporal_client
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"  # a new mailbox: week one of its warm-up
    a = [f"a{i}.{tag}@cap{i}.example" for i in range(12)]
    b = [f"b{i}.{tag}@cap{i}.example" for i in range(12)]
    steps = [email_step()]
    first = await create_and_launch(
        http, auth(REP), campaign_payload([contact(e) for e in a], sender_email=sender, steps=steps)
    )
    second = await create_and_launch(
        http, auth(REP), campaign_payload([contact(e) for e in b], sender_email=sender, steps=steps)
    )

    async def settled():
        async with sessions() as s:
            rows = (
                await s.execute(
                    select(
                        CampaignSend.status, CampaignSend.cap_day, CampaignSend.contact_email
                    ).where(CampaignSend.sender_email == sender)
                )
            ).all()
        return rows if len(rows) == 24 and all(r[0] in ("sent", "reserved") for r in rows) else None

    rows = await poll("every send sent or moved", settled)
    today = dt.datetime.now(LA).date()
    sent = [r for r in rows if r[0] == "sent"]
    moved = [r for r in rows if r[0] == "reserved"]
    # Warm-up week one allows 20 a day (below the mailbox's own 500), across both campaigns.
    assert len(sent) == 20 and len(moved) == 4
    assert {r[1] for r in sent} == {today}
    assert {r[1] for r in moved} == {today + dt.timedelta(days=1)}
    captured = [m for e in a + b for m in mail_to(sandbox, e)]
    assert len(captured) == 20
    async with sessions() as s:
        usage = dict(
            (
                await s.execute(
                    select(SenderDayUsage.day, SenderDayUsage.used).where(
                        SenderDayUsage.sender_email == sender
                    )
                )
            ).all()
        )
    assert usage == {today: 20, today + dt.timedelta(days=1): 4}

    # The contacts moved wait for their slot, with the reason in their history.
    email = moved[0][2]
    campaign_id = first if email in a else second

    async def waiting():
        body = (
            await http.get(f"/v1/campaigns/{campaign_id}/contacts/{email}", headers=auth(REP))
        ).json()
        return body if body["status"] == "waiting" and body["next_send_at"] else None

    state = await poll("the moved contact waits for its slot", waiting)
    slot = dt.datetime.fromisoformat(state["next_send_at"])
    assert slot.astimezone(LA).date() == today + dt.timedelta(days=1)
    assert any(
        h["event"] == "send.deferred" and "daily cap" in h["detail"] for h in state["history"]
    )
    await record_history(
        temporal_client.get_workflow_handle(sequence_workflow_id(campaign_id, email)),
        "sequence_deferred_by_cap",
    )
    for campaign in (first, second):
        await http.post(f"/v1/campaigns/{campaign}/cancel", headers=auth(REP))


class _Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


async def _activities(settings, sessions, clock, warmup):
    return SequenceActivities(
        settings=settings.model_copy(update={"campaign_warmup": warmup}),
        sessions=sessions,
        claims=sessions,
        mailer=SmtpMailer(settings.smtp_host, settings.smtp_port),
        layout=EmailLayout(settings.templates_dir),
        slack=None,
        crash_points=CrashPoints("", settings.state_dir),
        clock=clock,
    )


async def _active_campaign(sessions, *, sender: str, daily_limit: int, people: list[str]) -> str:
    async with sessions.begin() as s:
        campaign = await campaigns_db.create_campaign(
            s,
            owner_email=REP,
            name="caps",
            sender={
                "email": sender,
                "name": "Maya Chen",
                "daily_limit": daily_limit,
                "timezone": "America/Los_Angeles",
            },
            steps=[
                {
                    "channel": "email",
                    "subject": "Hello {{ first_name }}",
                    "body": "Hi.",
                    "send_window": {
                        "start": "09:00",
                        "end": "17:00",
                        "days_index": [0, 1, 2, 3, 4],
                    },
                }
            ],
            contacts=[contact(e) for e in people],
            fallbacks={},
            options={},
        )
        campaign.status = "active"
        await campaigns_db.upsert_mailbox(
            s, email=sender, daily_limit=daily_limit, timezone="America/Los_Angeles"
        )
        return campaign.id


async def test_overflow_keeps_its_place_in_the_next_window_and_the_ramp_follows_the_weeks(
    settings, sessions, sandbox
):
    tag = unique()
    sender = f"ramp+{tag}@dealflow.example"
    people = [f"c{i}.{tag}@ramp.example" for i in range(20)]
    campaign_id = await _active_campaign(sessions, sender=sender, daily_limit=5, people=people)
    # Friday 2026-11-20, 13:00 in New York (the contacts' zone), inside the 09-17 window.
    clock = _Clock(dt.datetime(2026, 11, 20, 18, 0, tzinfo=dt.UTC))
    acts = await _activities(settings, sessions, clock, warmup=[2, 4])
    env = ActivityEnvironment()

    async def send(i: int):
        return await env.run(
            acts.send_email,
            SendEmailInput(
                campaign_id=campaign_id,
                contact_email=people[i],
                step_index=0,
                message_id=message_id_for(campaign_id, people[i], 0, sender),
                requested_at=clock(),
                window=WindowSpec(),
                timezone="America/New_York",
                country="US",
            ),
        )

    # Week one of the ramp: 2 a day. The third request of Friday moves to the next window:
    # Monday 09:00 in New York (the weekend is not in the window).
    friday = [await send(i) for i in range(3)]
    assert [r.outcome for r in friday] == ["sent", "sent", "deferred"]
    monday_9am = dt.datetime(2026, 11, 23, 14, 0, tzinfo=dt.UTC)
    assert friday[2].retry_at == monday_9am

    # Monday: a new request arrives before the moved one wakes up. The moved one kept its
    # place (its slot was reserved on Friday), so the newcomer gets what is left and the
    # next newcomer moves to Tuesday.
    clock.at = monday_9am
    monday = [await send(3), await send(2), await send(4)]
    assert [r.outcome for r in monday] == ["sent", "sent", "deferred"]
    assert monday[2].retry_at == dt.datetime(2026, 11, 24, 14, 0, tzinfo=dt.UTC)

    # Week two (from the first send on Friday the 20th): 4 a day.
    clock.at = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC)
    week_two = [await send(i) for i in range(5, 10)]
    assert [r.outcome for r in week_two].count("sent") == 4
    # Past the ramp: the mailbox's own limit, 5.
    clock.at = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)
    week_three = [await send(i) for i in range(10, 16)]
    assert [r.outcome for r in week_three].count("sent") == 5
    # A retried send never sends twice: same Message-ID, same answer, no new mail.
    again = await send(0)
    assert again.outcome == "sent"
    assert len(mail_to(sandbox, people[0])) == 1


async def test_the_hard_bounce_rate_pauses_past_five_percent_after_fifty_sends(settings, sessions):
    tag = unique()
    sender = f"bounce+{tag}@dealflow.example"
    people = [f"h{i}.{tag}@bounce.example" for i in range(60)]
    campaign_id = await _active_campaign(sessions, sender=sender, daily_limit=1000, people=people)
    acts = CampaignActivities(
        settings=settings, sessions=sessions, crash_points=CrashPoints("", settings.state_dir)
    )
    env = ActivityEnvironment()
    check = BounceCheckInput(campaign_id=campaign_id, threshold=0.05, min_sends=50)

    async def record(n_sent: int, n_hard: int) -> None:
        async with sessions.begin() as s:
            await s.execute(
                CampaignSend.__table__.delete().where(CampaignSend.campaign_id == campaign_id)
            )
            for i in range(n_sent):
                s.add(
                    CampaignSend(
                        message_id=f"{tag}.{i}@dealflow.example",
                        campaign_id=campaign_id,
                        contact_email=people[i],
                        step_index=0,
                        sender_email=sender,
                        cap_day=dt.date.today(),
                        status="sent",
                        requested_at=dt.datetime.now(dt.UTC),
                        bounce_type="hard" if i < n_hard else None,
                    )
                )

    await record(49, 10)  # 20 %, but too few sends to judge
    assert not (await env.run(acts.check_bounce_rate, check)).paused
    await record(60, 3)  # exactly 5 %: not past it
    assert not (await env.run(acts.check_bounce_rate, check)).paused
    await record(60, 4)  # 6.7 %
    result = await env.run(acts.check_bounce_rate, check)
    assert result.paused and result.state.status == "paused"
    assert "hard-bounce rate 6.7 % after 60 sends" in result.reason
    async with sessions() as s:
        status = await s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    assert status == "paused"


async def test_a_campaign_pauses_itself_on_hard_bounces_and_tells_the_rep(
    http, auth, sandbox, sessions, temporal_client
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)
    people = [f"v{i}.{tag}@list{i % 9}.example" for i in range(52)]
    campaign_id = await create_and_launch(
        http,
        auth(REP),
        campaign_payload(
            [contact(e) for e in people],
            sender_email=sender,
            steps=[email_step(), email_step(subject=None, body="Again.", wait_days=1)],
            test_mode={"wait_day_seconds": 600, "reply_window_seconds": 0},
            pause_company_on_reply=False,
        ),
    )

    async def all_sent():
        got = [m for e in people for m in mail_to(sandbox, e)]
        return got if len(got) == len(people) else None

    sent = await poll("step 1 to everyone", all_sent)
    for message in sent[:3]:
        bounce = {"type": "bounce", "message_id": message["message_id"], "bounce_type": "hard"}
        assert (await post_signed(http, "/v1/webhooks/email/events", bounce)).status_code == 200

    async def paused():
        body = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
        return body if body["status"] == "paused" else None

    campaign = await poll("the campaign paused itself", paused)
    assert "hard-bounce rate 5.8 % after 52 sends" in campaign["status_reason"]

    async def told():
        return [
            m
            for m in sandbox.state.slack.messages(user_email=REP)
            if campaign_id in m.text and "paused itself" in m.text
        ] or None

    await poll("the rep was told", told)
    # The pause reached the sequences too.
    handle = temporal_client.get_workflow_handle_for(
        SequenceWorkflow.run, sequence_workflow_id(campaign_id, people[-1])
    )

    async def sequence_paused():
        return (await handle.query(SequenceWorkflow.status)).campaign_status == "paused" or None

    await poll("sequences know", sequence_paused)
    await record_history(
        temporal_client.get_workflow_handle(f"campaign/{campaign_id}"), "campaign_bounce_paused"
    )
    await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))
