"""Start a handoff directly: on a queue of its own (the crash tests' worker subprocesses) or on
the session worker's queue with short timings (the parking, cancel and follow-up tests)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from dealflow.ids import SA_DEAL_ID, SA_HANDOFF_STATUS, handoff_workflow_id
from messages.handoff import HandoffInput, HandoffStatus, HandoffTiming
from tests.utils.deals import REP, create_deal
from tests.utils.polling import eventually
from workflows.handoff import HandoffWorkflow

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


async def start_handoff_with(
    http: httpx.AsyncClient,
    auth,  # noqa: ANN001
    temporal_client: Client,
    settings,  # noqa: ANN001
    timing: HandoffTiming,
    *,
    before_start: Callable[[str], None] | None = None,
) -> tuple[dict, WorkflowHandle]:
    """A deal whose handoff has everything it needs, started on the session worker's queue
    with ``timing`` (short durations, a short retry budget): (deal, handle). ``before_start``
    gets the deal id before the handoff starts (to arm a failure point)."""
    deal = await create_deal(http, auth(REP))
    if before_start is not None:
        before_start(deal["id"])
    primary = {"name": "Kim Park", "email": primary_email(deal["id"]), "role": "primary"}
    r = await http.patch(
        f"/v1/handoffs/{deal['id']}",
        json={"contacts": [primary], "success_goals": ["Go live in a month"]},
        headers=auth(REP),
    )
    assert r.status_code == 200, r.text
    handle = await temporal_client.start_workflow(
        HandoffWorkflow.run,
        HandoffInput(deal_id=deal["id"], owner_email=REP, timing=timing),
        id=handoff_workflow_id(deal["id"]),
        task_queue=settings.task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_DEAL_ID, deal["id"]),
                SearchAttributePair(SA_HANDOFF_STATUS, "collecting"),
            ]
        ),
    )
    return deal, handle


async def status_where(
    handle: WorkflowHandle, pred: Callable[[HandoffStatus], object], what: str, timeout: float = 90
) -> HandoffStatus:
    """The workflow's ``status`` query until ``pred(status)`` holds (a worker of the test's own
    queue answers it)."""

    async def probe() -> HandoffStatus | None:
        s: HandoffStatus = await handle.query(HandoffWorkflow.status)
        return s if pred(s) else None

    return await eventually(probe, timeout=timeout, what=what)


async def handoff_where(
    http: httpx.AsyncClient, deal_id: str, headers: dict, pred, what: str, timeout: float = 60
) -> dict:  # noqa: ANN001
    """GET /v1/handoffs/{deal} until ``pred(body)`` holds."""

    async def probe() -> dict | None:
        r = await http.get(f"/v1/handoffs/{deal_id}", headers=headers)
        if r.status_code != 200:
            return None
        body = r.json()
        return body if pred(body) else None

    return await eventually(probe, timeout=timeout, what=what)
