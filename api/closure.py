"""The API's side of the deal closure workflow: start it, read it, message it."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from db.models import Deal
from dealflow.ids import (
    SA_CUSTOMER,
    SA_DEAL_AMOUNT,
    SA_DEAL_ID,
    SA_DEAL_STAGE,
    SA_OWNER_EMAIL,
    deal_closure_workflow_id,
)
from dealflow.settings import Settings
from workflows.deal_closure import (
    DealClosureInput,
    DealClosureOptions,
    DealClosureStatus,
    DealClosureWorkflow,
)

# A query needs a worker to answer; when none does in this time, GET falls back to the database.
QUERY_TIMEOUT = timedelta(seconds=5)


async def start_closure(
    client: Client, settings: Settings, deal: Deal
) -> tuple[WorkflowHandle, bool]:
    """Start the closure, or find the one already running. Returns (handle, started_now)."""
    workflow_id = deal_closure_workflow_id(deal.id)
    try:
        handle = await client.start_workflow(
            DealClosureWorkflow.run,
            DealClosureInput(
                deal_id=deal.id,
                owner_email=deal.owner_email,
                options=DealClosureOptions(
                    activity_timeout_seconds=settings.activity_timeout_seconds
                ),
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            # A closure that ended (e.g. cancelled) stays ended: ready-to-close cannot silently
            # start the process over for the same deal.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SA_DEAL_ID, deal.id),
                    SearchAttributePair(SA_CUSTOMER, deal.account_name),
                    SearchAttributePair(SA_DEAL_STAGE, "quoting"),
                    SearchAttributePair(SA_DEAL_AMOUNT, 0.0),
                    SearchAttributePair(SA_OWNER_EMAIL, deal.owner_email),
                ]
            ),
        )
        return handle, True
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(workflow_id), False


async def describe_status(handle: WorkflowHandle) -> WorkflowExecutionStatus | None:
    try:
        return (await handle.describe()).status
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def closure_status(client: Client, deal_id: str) -> DealClosureStatus | None:
    """The live status from the workflow's query; None when there is no closure or no answer."""
    handle = client.get_workflow_handle_for(
        DealClosureWorkflow.run, deal_closure_workflow_id(deal_id)
    )
    try:
        return await handle.query(DealClosureWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.DEADLINE_EXCEEDED):
            return None
        raise
