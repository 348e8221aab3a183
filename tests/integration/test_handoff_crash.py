"""Crash test: the worker dies right after the kickoff invite went out, and again while the
handoff waits on its timers; fresh workers finish it with one invite, one win post and one CRM
renewal. The workers are real ``python worker.py`` processes on a queue of their own.
"""

from __future__ import annotations

from sqlalchemy import func, select

from db.handoff_models import HandoffDelivery
from dealflow.ids import kickoff_message_id
from tests.utils.handoff import (
    HANDOFF_TIMING_ENV,
    primary_email,
    start_handoff_on_own_queue,
    status_where,
)
from tests.utils.workers import start_worker, stop, wait_exit


async def test_worker_killed_after_the_invite_and_while_waiting_sends_everything_once(
    http, auth, temporal_client, settings, sessions
):
    deal, queue, handle = await start_handoff_on_own_queue(
        http, auth, temporal_client, queue_prefix="handoff-crash"
    )
    env = HANDOFF_TIMING_ENV
    doomed = start_worker(settings, queue, crash_at="handoff.after_invite", **env)
    assert await wait_exit(doomed) == 86  # died after the invite was sent, before it was noted

    second = start_worker(settings, queue, **env)
    try:
        await status_where(handle, lambda s: s.status == "onboarding", "the handoff onboarding")
    finally:
        stop(second)  # killed while it waits for reminders and the renewal alerts
    third = start_worker(settings, queue, **env)
    try:
        status = await status_where(
            handle,
            lambda s: s.renewal is not None and all(a.sent_at for a in s.renewal.alerts),
            "every renewal alert",
        )
    finally:
        stop(third)

    invite_id = kickoff_message_id(deal["id"])
    mail = (
        await http.get("/_sandbox/mail/messages", params={"to": primary_email(deal["id"])})
    ).json()
    assert [m["message_id"] for m in mail["messages"]].count(invite_id) == 1
    wins = (await http.get("/_sandbox/slack/messages", params={"channel": "wins"})).json()
    assert len([m for m in wins["messages"] if deal["id"] in m["text"]]) == 1
    crm = (await http.get(f"/_sandbox/crm/deals/{deal['id']}-renewal")).json()
    assert crm["deal"]["properties"]["dealname"].startswith("Renewal: ")
    assert status.renewal is not None and status.renewal.crm_renewal_id == crm["deal"]["id"]
    async with sessions() as s:
        rows = dict(
            (
                await s.execute(
                    select(HandoffDelivery.channel, func.count())
                    .where(HandoffDelivery.deal_id == deal["id"], HandoffDelivery.status == "sent")
                    .group_by(HandoffDelivery.channel)
                )
            ).all()
        )
    assert rows["slack"] == 1  # the win post
