"""Crash test: the worker dies after the SMTP server took the kickoff invite and before the
delivery row says ``sent``; the fresh worker records it ``unconfirmed`` and sends no second
invite. Real ``python worker.py`` processes on a queue of their own.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from activities.handoff import HandoffTiming
from db.handoff_models import HandoffDelivery
from dealflow.ids import handoff_workflow_id
from tests.utils.deals import REP, create_deal
from tests.utils.polling import eventually
from tests.utils.workers import start_worker, stop, wait_exit
from workflows.handoff import HandoffInput, HandoffWorkflow

TIMING = "day=1,remind=0.5,renewal=3"


async def test_worker_dies_after_handing_the_invite_over_no_second_invite(
    http, auth, temporal_client, settings, sessions
):
    deal = await create_deal(http, auth(REP))
    primary = {"name": "Kim Crash", "email": f"kim.{deal['id']}@acme.example", "role": "primary"}
    r = await http.patch(
        f"/v1/handoffs/{deal['id']}",
        json={"contacts": [primary], "success_goals": ["Survive a crash"]},
        headers=auth(REP),
    )
    assert r.status_code == 200, r.text
    queue = f"handoff-hand-over-{uuid.uuid4().hex[:8]}"
    handle = await temporal_client.start_workflow(
        HandoffWorkflow.run,
        HandoffInput(
            deal_id=deal["id"],
            owner_email=REP,
            timing=HandoffTiming(
                activity_timeout_seconds=5,
                business_day_seconds=1,
                reminder_before_seconds=0.5,
                renewal_spacing_seconds=3,
            ),
        ),
        id=handoff_workflow_id(deal["id"]),
        task_queue=queue,
    )
    env = {"DEALFLOW_HANDOFF_TIMING_OVERRIDE": TIMING}
    doomed = start_worker(settings, queue, crash_at="handoff.after_invite_data", **env)
    assert await wait_exit(doomed) == 86  # the invite was handed over; the row says sending
    survivor = start_worker(settings, queue, **env)
    try:

        async def onboarding():
            s = await handle.query(HandoffWorkflow.status)
            return s if s.status == "onboarding" else None

        await eventually(onboarding, timeout=90, what="the handoff onboarding")
    finally:
        stop(survivor)
    invite_id = f"<kickoff.{deal['id']}@dealflow.example>"
    mail = (await http.get("/_sandbox/mail/messages", params={"to": primary["email"]})).json()
    assert [m["message_id"] for m in mail["messages"]].count(invite_id) == 1
    async with sessions() as s:
        rows = (
            await s.execute(
                select(HandoffDelivery.channel, HandoffDelivery.status).where(
                    HandoffDelivery.deal_id == deal["id"]
                )
            )
        ).all()
    assert ("email", "unconfirmed") in [tuple(r) for r in rows], rows
