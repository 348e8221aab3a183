"""Start a handoff on a task queue of its own, for the crash tests' worker subprocesses."""

from __future__ import annotations

import uuid

import httpx
from temporalio.client import Client, WorkflowHandle

from activities.handoff import HandoffTiming
from dealflow.ids import handoff_workflow_id
from tests.utils.deals import REP, create_deal
from workflows.handoff import HandoffInput, HandoffWorkflow

# The same durations as HANDOFF_TIMING below, as DEALFLOW_HANDOFF_TIMING_OVERRIDE spells them.
HANDOFF_TIMING_ENV = {"DEALFLOW_HANDOFF_TIMING_OVERRIDE": "day=1,remind=0.5,renewal=3"}
HANDOFF_TIMING = HandoffTiming(
    activity_timeout_seconds=5,
    business_day_seconds=1,
    reminder_before_seconds=0.5,
    renewal_spacing_seconds=3,
)


def primary_email(deal_id: str) -> str:
    """The customer's primary contact that ``start_handoff_on_own_queue`` supplies."""
    return f"kim.{deal_id}@acme.example"


async def start_handoff_on_own_queue(
    http: httpx.AsyncClient,
    auth,
    temporal_client: Client,
    *,
    queue_prefix: str,  # noqa: ANN001
) -> tuple[dict, str, WorkflowHandle]:
    """A deal whose handoff has everything it needs, started on a fresh queue no worker polls
    yet: (deal, queue, handle). The test starts the workers it means to kill."""
    deal = await create_deal(http, auth(REP))
    primary = {"name": "Kim Crash", "email": primary_email(deal["id"]), "role": "primary"}
    r = await http.patch(
        f"/v1/handoffs/{deal['id']}",
        json={"contacts": [primary], "success_goals": ["Survive a crash"]},
        headers=auth(REP),
    )
    assert r.status_code == 200, r.text
    queue = f"{queue_prefix}-{uuid.uuid4().hex[:8]}"
    handle = await temporal_client.start_workflow(
        HandoffWorkflow.run,
        HandoffInput(deal_id=deal["id"], owner_email=REP, timing=HANDOFF_TIMING),
        id=handoff_workflow_id(deal["id"]),
        task_queue=queue,
    )
    return deal, queue, handle
