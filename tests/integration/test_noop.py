"""The benchmark baseline workflow runs on the real worker (and its history is kept for replay)."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from dealflow.settings import Settings
from tests.utils.deals import record_history
from workflows.noop import NoopWorkflow
from workflows.noop_sequence import NoopSequenceInput, NoopSequenceWorkflow


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


async def test_noop_sequence_runs_one_noop_per_step_after_its_wait(
    temporal_client: Client, settings: Settings, worker
):
    handle = await temporal_client.start_workflow(
        NoopSequenceWorkflow.run,
        NoopSequenceInput(waits=[0, 0.2, 0]),
        id=f"noop-sequence-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
    )
    done = await handle.result()
    assert len(done) == 3 and done == sorted(done)
    kinds = [e.WhichOneof("attributes") async for e in handle.fetch_history_events()]
    assert kinds.count("activity_task_completed_event_attributes") == 3
    assert kinds.count("timer_fired_event_attributes") == 1  # only the positive wait
    await record_history(handle, "noop_sequence")
