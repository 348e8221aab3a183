"""The API's side of the deal closure workflow: start it, read it, message it."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.updates import result_within
from api.workflow_start import start_or_find
from db.models import Deal
from db.org import OrgDirectory
from dealflow.ids import (
    SA_CUSTOMER,
    SA_DEAL_AMOUNT,
    SA_DEAL_ID,
    SA_DEAL_STAGE,
    SA_OWNER_EMAIL,
    deal_closure_workflow_id,
)
from dealflow.settings import Settings
from messages.approval import ApprovalChainStatus
from messages.closure import (
    CancelRequest,
    DealClosureInput,
    DealClosureOptions,
    DealClosureStatus,
    InvoicePaid,
)
from messages.parking import RetryBudget
from messages.signature import OfflineSignature, SignatureStatus, SignatureTiming
from workflows.approval_chain import ApprovalChainWorkflow
from workflows.deal_closure import DealClosureWorkflow
from workflows.signature import SignatureWorkflow

# A query needs a worker to answer; when none does in this time, GET falls back to the database.
QUERY_TIMEOUT = timedelta(seconds=5)
# What a query answers when the workflow cannot answer now, so a read falls back to the
# database mirror (every closure writes its stage to the deal row before it shows it):
# - NOT_FOUND: no such workflow (yet);
# - DEADLINE_EXCEEDED / CANCELLED: no worker answered in time (the server's deadline, or the
#   client's own);
# - FAILED_PRECONDITION: the server refuses to query a workflow whose last workflow task failed
#   ("Workflow Task in failed state", WorkflowNotReadyFailure), as it is right after a worker
#   died mid-task, until a worker runs the task again.
NO_ANSWER = (
    RPCStatusCode.NOT_FOUND,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.FAILED_PRECONDITION,
)
# A read (``closure_status(..., read=True)``) also falls back when the Temporal server cannot be
# reached at all: the database can still answer it. A write does not: deciding from the mirror
# what a workflow would accept is a guess, so UNAVAILABLE reaches api/unavailable.py (503).
READ_NO_ANSWER = (*NO_ANSWER, RPCStatusCode.UNAVAILABLE)


async def start_closure(
    client: Client, settings: Settings, deal: Deal, *, retry: RetryBudget | None = None
) -> tuple[WorkflowHandle, bool]:
    """Start the closure, or find the one already running. Returns (handle, started_now).

    ``retry``: the activities' retry budget (default ``RetryBudget()``; tests shorten it).
    """
    # A closure that ended (e.g. cancelled) stays ended: ready-to-close cannot silently start
    # the process over for the same deal (start_or_find rejects a duplicate id).
    return await start_or_find(
        client,
        DealClosureWorkflow.run,
        DealClosureInput(
            deal_id=deal.id,
            owner_email=deal.owner_email,
            options=DealClosureOptions(
                activity_timeout_seconds=settings.activity_timeout_seconds,
                approval_sla_override_seconds=settings.approval_sla_override_seconds,
                signature=signature_timing(settings),
                public_base_url=settings.public_base_url,
                finance_email=OrgDirectory.load(settings.org_directory_path).approver_of.get(
                    "finance_director"
                ),
                payment_grace_seconds=settings.payment_grace_days * 86400.0,
                retry=retry or RetryBudget(),
            ),
        ),
        id=deal_closure_workflow_id(deal.id),
        task_queue=settings.task_queue,
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


async def describe_status(handle: WorkflowHandle) -> WorkflowExecutionStatus | None:
    try:
        return (await handle.describe()).status
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def closure_status(
    client: Client, deal_id: str, *, read: bool = False
) -> DealClosureStatus | None:
    """The live status from the workflow's query; None when there is no closure or no answer
    (then the caller uses the deal row). ``read``: for a read-only route, which falls back to
    the row when Temporal is unreachable too (``READ_NO_ANSWER``)."""
    handle = client.get_workflow_handle_for(
        DealClosureWorkflow.run, deal_closure_workflow_id(deal_id)
    )
    try:
        return await handle.query(DealClosureWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        if err.status in (READ_NO_ANSWER if read else NO_ANSWER):
            return None
        raise


async def approval_chain_status(client: Client, workflow_id: str) -> ApprovalChainStatus | None:
    """The live state of an approval chain, or None when it cannot answer now."""
    handle = client.get_workflow_handle_for(ApprovalChainWorkflow.run, workflow_id)
    try:
        return await handle.query(ApprovalChainWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        if err.status in NO_ANSWER:
            return None
        raise


async def live_approval_steps(client: Client, status: DealClosureStatus) -> list:
    """The approval steps to show: the running chain's, else the last chain's."""
    if status.approval_chain_workflow_id:
        chain = await approval_chain_status(client, status.approval_chain_workflow_id)
        if chain is not None:
            return chain.steps
    return status.approval_steps


def signature_timing(settings: Settings) -> SignatureTiming:
    """Signature timers from Settings; ``signature_timing_override`` sets them in seconds."""
    timing = SignatureTiming(
        poll_seconds=settings.signature_poll_seconds,
        reminder_business_days=settings.signature_reminder_business_days,
        not_opened_alert_seconds=settings.signature_not_opened_alert_hours * 3600,
        expire_seconds=settings.signature_expire_days * 86400.0,
        activity_timeout_seconds=settings.activity_timeout_seconds,
    )
    if settings.signature_timing_override:
        names = {
            "poll": "poll_seconds",
            "remind": "reminder_seconds",
            "alert": "not_opened_alert_seconds",
            "expire": "expire_seconds",
        }
        values = dict(part.split("=") for part in settings.signature_timing_override.split(","))
        timing = timing.model_copy(update={names[k.strip()]: float(v) for k, v in values.items()})
    return timing


async def signature_status(client: Client, status: DealClosureStatus) -> SignatureStatus | None:
    """The live signature state: the running tracking's, else the last one's."""
    if status.signature_workflow_id:
        handle = client.get_workflow_handle_for(SignatureWorkflow.run, status.signature_workflow_id)
        try:
            return await handle.query(SignatureWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as err:
            if err.status not in NO_ANSWER:
                raise
    return status.signature


# How long POST /v1/deals/{id}/cancel waits for the closure to record the cancellation before it
# answers 202 (accepted, still ending) instead. A cancel normally ends within a second or two;
# a withdrawal that must wait on a failing step (retrying, or parked for ops) could take
# minutes, and a client's read timeout (typically 30 s) must not be what answers it.
CANCEL_ANSWER_SECONDS = 20.0


async def cancel_closure(
    handle: WorkflowHandle, request: CancelRequest, *, answer_within: float = CANCEL_ANSWER_SECONDS
) -> DealClosureStatus | None:
    """Send the ``cancel`` update; its result, or None if accepted but not finished in time.

    The update is accepted (validated, recorded in the history) before the wait starts, so None
    still means the closure will end cancelled: the handler runs on without us. A refusal
    raises ``WorkflowUpdateFailedError`` as before.
    """
    update = await handle.start_update(
        DealClosureWorkflow.cancel, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
    )
    return await result_within(update, answer_within)


async def signal_offline_signed(client: Client, deal_id: str, signature: OfflineSignature) -> None:
    """A wet-signed PDF was stored: the closure passes it to its signature tracking."""
    handle = client.get_workflow_handle(deal_closure_workflow_id(deal_id))
    await handle.signal(DealClosureWorkflow.offline_signed, signature)


async def signal_retry_closing(client: Client, deal_id: str, by: str) -> None:
    """Ops fixed what made closing fail (``RPCError`` NOT_FOUND once the closure has ended)."""
    handle = client.get_workflow_handle(deal_closure_workflow_id(deal_id))
    await handle.signal(DealClosureWorkflow.retry_closing, by)


async def signal_invoice_paid(client: Client, deal_id: str, paid: InvoicePaid) -> None:
    """Stripe says the invoice is paid: the closure records the payment (once per invoice)."""
    handle = client.get_workflow_handle(deal_closure_workflow_id(deal_id))
    await handle.signal(DealClosureWorkflow.invoice_paid, paid)
