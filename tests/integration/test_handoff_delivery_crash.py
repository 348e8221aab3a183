"""Crash test: the worker dies after the SMTP server took the kickoff invite and before the
delivery row says ``sent``; the fresh worker records it ``unconfirmed`` and sends no second
invite. Real ``python worker.py`` processes on a queue of their own.
"""

from __future__ import annotations

from sqlalchemy import select

from db.handoff_models import HandoffDelivery
from dealflow.ids import kickoff_message_id
from tests.utils.handoff import (
    HANDOFF_TIMING_ENV,
    primary_email,
    start_handoff_on_own_queue,
    status_where,
)
from tests.utils.workers import start_worker, stop, wait_exit


async def test_worker_dies_after_handing_the_invite_over_no_second_invite(
    http, auth, temporal_client, settings, sessions
):
    deal, queue, handle = await start_handoff_on_own_queue(
        http, auth, temporal_client, queue_prefix="handoff-hand-over"
    )
    env = HANDOFF_TIMING_ENV
    doomed = start_worker(settings, queue, crash_at="handoff.after_invite_data", **env)
    assert await wait_exit(doomed) == 86  # the invite was handed over; the row says sending
    survivor = start_worker(settings, queue, **env)
    try:
        await status_where(handle, lambda s: s.status == "onboarding", "the handoff onboarding")
    finally:
        stop(survivor)
    invite_id = kickoff_message_id(deal["id"])
    mail = (
        await http.get("/_sandbox/mail/messages", params={"to": primary_email(deal["id"])})
    ).json()
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
