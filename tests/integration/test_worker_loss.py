"""A killed worker is noticed by the activity's heartbeat timeout, not its start-to-close timeout.

Every activity gets a heartbeat timeout (``WORKER_LOSS_TIMEOUT``) and the worker's
``PulseInterceptor`` beats while any activity runs, including the ones that never heartbeat
themselves. ``open_request`` (the approval chain's first write) is such an activity; it is held
(``HoldPoints``) so the test decides when it ends.
"""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client

from api.closure import start_closure
from db import deals as deals_db
from dealflow.holds import HoldPoints
from dealflow.ids import approval_chain_workflow_id
from tests.utils.deals import REP, create_deal, wait_for_stage
from tests.utils.polling import eventually, hold_reached
from tests.utils.workers import start_worker, stop
from workflows.parking import WORKER_LOSS_TIMEOUT

# Far above WORKER_LOSS_TIMEOUT: a recovery that waited for it would miss the test's deadlines.
START_TO_CLOSE_SECONDS = 300.0


async def _pending(client: Client, workflow_id: str, activity: str):  # noqa: ANN202
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except Exception:  # noqa: BLE001 - the chain may not have started yet
        return None
    for a in desc.raw_description.pending_activities:
        if a.activity_type.name == activity:
            return a
    return None


async def _start(http, auth, settings, holds):  # noqa: ANN001, ANN202
    deal = await create_deal(http, auth(REP))
    queue = f"loss-{uuid.uuid4().hex[:8]}"
    slow = settings.model_copy(
        update={"task_queue": queue, "activity_timeout_seconds": START_TO_CLOSE_SECONDS}
    )
    holds.arm("open_request", deal["id"])
    return deal, queue, slow


async def _start_closure(temporal_client, sessions, slow, holds, deal_id: str) -> None:
    """Start the deal's closure with the slow settings; wait until open_request is held."""
    async with sessions() as s:
        row = await deals_db.get_deal(s, deal_id=deal_id)
    await start_closure(temporal_client, slow, row)
    await hold_reached(holds, "open_request", deal_id)


async def test_a_held_activity_without_beats_of_its_own_outlives_its_heartbeat_timeout(
    http, auth, temporal_client, settings, sessions
):
    holds = HoldPoints(settings.state_dir, enabled=True)
    deal, queue, slow = await _start(http, auth, settings, holds)
    chain_id = approval_chain_workflow_id(deal["id"], 1)
    worker = start_worker(settings, queue)
    try:
        await _start_closure(temporal_client, sessions, slow, holds, deal["id"])

        async def beating_past_the_timeout() -> bool:
            a = await _pending(temporal_client, chain_id, "open_request")
            assert a is not None and a.attempt == 1, a  # timed out and retried: no pulse
            if not a.HasField("last_heartbeat_time"):
                return False
            beaten = a.last_heartbeat_time.ToDatetime() - a.last_started_time.ToDatetime()
            return beaten > WORKER_LOSS_TIMEOUT

        await eventually(beating_past_the_timeout, timeout=60, what="open_request beating on")
        holds.release("open_request", deal["id"])
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    finally:
        holds.release("open_request", deal["id"])
        stop(worker)


async def test_a_worker_killed_mid_activity_is_retried_after_the_heartbeat_timeout(
    http, auth, temporal_client, settings, sessions
):
    holds = HoldPoints(settings.state_dir, enabled=True)
    deal, queue, slow = await _start(http, auth, settings, holds)
    chain_id = approval_chain_workflow_id(deal["id"], 1)
    doomed = start_worker(settings, queue)
    survivor = None
    try:
        await _start_closure(temporal_client, sessions, slow, holds, deal["id"])
        doomed.kill()
        doomed.wait()
        holds.arm("open_request", deal["id"])  # still held; note the next arrival
        survivor = start_worker(settings, queue)
        # The retry reaches the hold again, well inside START_TO_CLOSE_SECONDS.
        await hold_reached(holds, "open_request", deal["id"], timeout=120)
        retried = await _pending(temporal_client, chain_id, "open_request")
        assert retried is not None and retried.attempt == 2
        # The lost attempt ended by its heartbeat timeout, not by start-to-close.
        timeout = retried.last_failure.timeout_failure_info.timeout_type
        assert timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
        holds.release("open_request", deal["id"])
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    finally:
        holds.release("open_request", deal["id"])
        if doomed.poll() is None:
            doomed.kill()
        if survivor is not None:
            stop(survivor)
