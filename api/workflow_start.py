"""Start a workflow whose id comes from the business key, or find the one already started."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError


async def start_or_find(
    client: Client, run: Any, arg: Any, *, id: str, **options: Any
) -> tuple[WorkflowHandle, bool]:
    """``client.start_workflow(run, arg, id=id, ...)``, or the handle of the workflow already
    started with that id. Returns (handle, started_now).

    The reuse policy is REJECT_DUPLICATE: a process that ended (e.g. cancelled) stays ended, and
    starting again (a retried request, a second click) never starts it over.
    """
    try:
        handle = await client.start_workflow(
            run, arg, id=id, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, **options
        )
        return handle, True
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(id), False
