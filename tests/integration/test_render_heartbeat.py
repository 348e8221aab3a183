"""A contract render slower than the heartbeat timeout completes in its first attempt.

The render is held (``HoldPoints``) inside the awaited render until the activity has been
running for longer than its heartbeat timeout, then released: the activity beats while the
render runs, so it is never timed out and restarted from scratch.
"""

from __future__ import annotations

import uuid

from api.closure import start_closure
from db import deals as deals_db
from dealflow.holds import HoldPoints
from dealflow.ids import deal_closure_workflow_id
from tests.utils.deals import REP, create_deal, wait_for_stage
from tests.utils.polling import eventually, hold_reached
from tests.utils.workers import start_worker, stop

# The activity timeout of this closure, which is also the render's heartbeat timeout.
TIMEOUT_SECONDS = 3.0


async def test_a_render_held_past_the_heartbeat_timeout_completes_in_one_attempt(
    http, auth, temporal_client, settings, sessions
):
    deal = await create_deal(http, auth(REP))
    queue = f"render-{uuid.uuid4().hex[:8]}"
    short = settings.model_copy(
        update={"task_queue": queue, "activity_timeout_seconds": TIMEOUT_SECONDS}
    )
    holds = HoldPoints(settings.state_dir, enabled=True)
    holds.arm("render_documents", deal["id"])
    worker = start_worker(settings, queue)
    try:
        async with sessions() as s:
            await start_closure(
                temporal_client, short, await deals_db.get_deal(s, deal_id=deal["id"])
            )
        handle = temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"]))
        await hold_reached(holds, "render_documents", deal["id"])

        async def beating_past_the_timeout() -> bool:
            """The render's first attempt has beaten for longer than its heartbeat timeout."""
            pending = (await handle.describe()).raw_description.pending_activities
            for a in pending:
                if a.activity_type.name != "render_documents":
                    continue
                assert a.attempt == 1, a  # timed out and restarted: what the beat prevents
                if not a.HasField("last_heartbeat_time"):
                    return False
                beaten = a.last_heartbeat_time.ToDatetime() - a.last_started_time.ToDatetime()
                return beaten.total_seconds() > TIMEOUT_SECONDS
            return False

        await eventually(beating_past_the_timeout, what="the render beating past its timeout")
        holds.release("render_documents", deal["id"])
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    finally:
        holds.release("render_documents", deal["id"])
        stop(worker)
    events = [e async for e in handle.fetch_history_events()]
    kinds = [e.WhichOneof("attributes") for e in events]
    assert "activity_task_timed_out_event_attributes" not in kinds
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    render_attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
        == "render_documents"
    ]
    assert render_attempts == [1]
