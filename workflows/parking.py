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

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

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


class RetryBudget(BaseModel):
    """How long an activity's unexpected errors are retried before the workflow parks.

    The defaults: the first retries are quick (a worker restart, a lock timeout, a dropped
    connection heal within seconds), backing off to one try a minute; 10 attempts span about
    5 minutes (1+2+4+8+16+32+60+60+60 s), long enough to ride out a database failover or a
    provider's brief outage, short enough that a person hears of a real fault within minutes
    instead of the workflow retrying forever unseen. Tests shorten the intervals.
    """

    initial_interval_seconds: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval_seconds: float = 60.0
    maximum_attempts: int = 10

    def policy(self, *, non_retryable: list[str] | None = None, scale: float = 1.0) -> RetryPolicy:
        """The activity RetryPolicy; ``scale`` stretches the intervals (slower providers)."""
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.initial_interval_seconds * scale),
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=timedelta(seconds=self.maximum_interval_seconds * scale),
            maximum_attempts=self.maximum_attempts,
            non_retryable_error_types=non_retryable or [],
        )


class ParkedFailure(BaseModel):
    """What failed and why, as the API and the Temporal UI (the query) show it."""

    step: str  # the activity (or child) that gave up
    error_type: str | None = None
    message: str
    since: datetime
    workflow_id: str  # where the retry goes (the closure forwards it to a child)


class ChildPark(BaseModel):
    """Sent by a child to its parent: it parked (``failure`` set) or resumed (``None``)."""

    workflow_id: str
    failure: ParkedFailure | None = None


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


def park_reason(failure: ParkedFailure) -> str:
    kind = f" ({failure.error_type})" if failure.error_type else ""
    return f"{failure.step} failed{kind}: {failure.message}. Fix the cause, then retry."
