"""Park-and-retry, shared by the deal closure and its children (approval chain, signature).

Every activity call has a retry budget (``RetryBudget``). When an activity gives up — a
non-retryable error, or its budget spent — the workflow does not fail: it *parks*. It shows
``needs_attention`` with the error, waits for a person's ``retry`` signal (the API's
``POST /v1/deals/{id}/retry`` or the Temporal UI), then runs the failed step again, and only it.

A child parks itself and tells its parent with the ``child_parked`` signal, so the closure's stage,
the deal row and the ``DealStage`` search attribute show ``needs_attention``; the closure's retry
is forwarded to the child (ops may also signal the child directly; it then tells the parent it
resumed).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

from messages.parking import ParkedFailure

# How long a killed worker's running activity goes unnoticed: every activity gets this heartbeat
# timeout and the worker's PulseInterceptor (dealflow/heartbeat.py) beats while it runs, so a
# retry starts this long after the kill instead of after the start-to-close timeout (30 s and
# more). Long enough that a busy event loop (2 cores, PDFs rendering) does not miss a beat:
# the pulse comes every third of it. Timeouts are not part of the commands a history is replayed
# against, so changing them is replay-safe.
WORKER_LOSS_TIMEOUT = timedelta(seconds=8)


def worker_loss_timeout(start_to_close: timedelta) -> timedelta:
    """The heartbeat timeout for an activity: WORKER_LOSS_TIMEOUT, never above its own bound."""
    return min(start_to_close, WORKER_LOSS_TIMEOUT)


def cancelled(err: BaseException) -> bool:
    """The call was cancelled by us (its request's stage ended): not a failure to park on."""
    return isinstance(err, (ActivityError, ChildWorkflowError)) and isinstance(
        err.cause, CancelledError
    )


def describe_failure(err: BaseException) -> tuple[str | None, str]:
    """(error type, message) of an activity's or child's failure, for people to read."""
    cause = err
    while isinstance(cause, (ActivityError, ChildWorkflowError)) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.type, cause.message
    if isinstance(cause, (ActivityError, ChildWorkflowError)):
        return type(cause).__name__, str(cause)
    return type(cause).__name__, str(cause) or type(cause).__name__


def parked_failure(step: str, err: BaseException) -> ParkedFailure:
    """What this workflow shows when ``step`` gave up with ``err`` (call it in the workflow)."""
    error_type, message = describe_failure(err)
    return ParkedFailure(
        step=step,
        error_type=error_type,
        message=message,
        since=workflow.now(),
        workflow_id=workflow.info().workflow_id,
    )


def park_reason(failure: ParkedFailure) -> str:
    kind = f" ({failure.error_type})" if failure.error_type else ""
    return f"{failure.step} failed{kind}: {failure.message}. Fix the cause, then retry."
