"""What a parked workflow shows and sends: the retry budget of its activities, the failure it
parked on, and a child's word to its parent. Shared by every process's messages; the workflow
side of park-and-retry is ``workflows/parking.py``."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio.common import RetryPolicy


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
