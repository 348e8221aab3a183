"""The benchmark baseline workflow runs on the real worker (and its history is kept for replay)."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from dealflow.settings import Settings
from tests.utils.deals import record_history
from workflows.noop import NoopWorkflow


async def test_noop_workflow_completes_through_one_activity(
    temporal_client: Client, settings: Settings, worker
):
    handle = await temporal_client.start_workflow(
        NoopWorkflow.run, id=f"noop-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue
    )
    assert await handle.result() is None
    events = [e.WhichOneof("attributes") async for e in handle.fetch_history_events()]
    assert "activity_task_completed_event_attributes" in events
    await record_history(handle, "noop")
