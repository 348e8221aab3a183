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
from tests.utils.history import activity_runs, history_runs
from tests.utils.polling import eventually, hold_reached
from tests.utils.workers import start_worker, stop

# The activity timeout of this closure, which is also the render's heartbeat timeout.
TIMEOUT_SECONDS = 3.0


async def _closure_held_in_its_render(deal, temporal_client, settings, sessions):
    """The deal's closure on a queue of its own with a worker process, its activity timeout
    (and so the render's heartbeat timeout) short, held in its render: (holds, queue, the
    closure's handle, the worker)."""
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
        await hold_reached(holds, "render_documents", deal["id"])
    except BaseException:
        holds.release("render_documents", deal["id"])
        stop(worker)
        raise
    handle = temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"]))
    return holds, queue, handle, worker


async def test_a_render_held_past_the_heartbeat_timeout_completes_in_one_attempt(
    http, auth, temporal_client, settings, sessions
):
    deal = await create_deal(http, auth(REP))
    holds, queue, handle, worker = await _closure_held_in_its_render(
        deal, temporal_client, settings, sessions
    )
    try:

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
    render_attempts = [r.attempt for r in activity_runs(events, "render_documents")]
    assert render_attempts == [1]


async def test_a_render_attempt_lost_with_its_worker_is_retried_one_document_at_a_time(
    http, auth, temporal_client, settings, sessions
):
    """The worker dies while the package's first call renders: the retry renders one document
    (each stored one stays stored) and returns, and the closure's next call renders the rest, with
    a budget of its own. Under a worker that keeps dying, the smallest step is the one that ends."""
    # 5,000 employees: an MSA beside the order form, a package of two.
    deal = await create_deal(http, auth(REP), account={"employees": 5000})
    holds, queue, handle, worker = await _closure_held_in_its_render(
        deal, temporal_client, settings, sessions
    )
    try:  # rendered, nothing stored yet
        worker.kill()  # SIGKILL, mid-render
        worker.wait()
        holds.arm("render_documents", deal["id"])  # hold the retry too, to see what it renders
        worker = start_worker(settings, queue)
        await hold_reached(holds, "render_documents", deal["id"])
        pending = [
            a
            for a in (await handle.describe()).raw_description.pending_activities
            if a.activity_type.name == "render_documents"
        ]
        assert [a.attempt for a in pending] == [2], pending
        holds.release("render_documents", deal["id"])
        live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    finally:
        holds.release("render_documents", deal["id"])
        stop(worker)
    calls = [  # (attempt, documents stored so far, documents remaining) per call, in order
        (r.attempt, len(r.result["documents"]), r.result["remaining"])
        for r in await history_runs(handle, "render_documents")
    ]
    assert [d["kind"] for d in live["documents"]] == ["order_form", "msa"]
    # The retry stored one document and left one; the next call, a first attempt, the other.
    assert calls == [(2, 1, 1), (1, 2, 0)], calls
