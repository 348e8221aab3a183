"""The API's side of the approval chain workflow: the decision update and the reassignment."""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from messages.approval import ApprovalStep, DecisionRequest, Reassignment
from workflows.approval_chain import ApprovalChainWorkflow


async def decide(client: Client, workflow_id: str, request: DecisionRequest) -> ApprovalStep:
    """The ``decide`` update on the chain that holds the step; its validator's refusals raise
    ``WorkflowUpdateFailedError`` (the route maps them to 403/404/409/422)."""
    handle = client.get_workflow_handle_for(ApprovalChainWorkflow.run, workflow_id)
    return await handle.execute_update(ApprovalChainWorkflow.decide, request)


async def reassign(client: Client, workflow_id: str, change: Reassignment) -> bool:
    """Tell a chain that an approver is out of office: their pending steps go to the delegate.

    False if the chain no longer runs although its mirror still shows the steps pending: ended
    outside dealflow (terminated or reset in the Temporal UI), it has nobody left to tell."""
    try:
        await client.get_workflow_handle(workflow_id).signal(ApprovalChainWorkflow.reassign, change)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def is_running(client: Client, workflow_id: str) -> bool:
    """Whether the chain still runs (a refused update then means it did not reach it)."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return described.status == WorkflowExecutionStatus.RUNNING
