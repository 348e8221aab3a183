"""NoopSequenceWorkflow: the campaign benchmark's baseline, a sequence that does nothing.

``bench.campaigns`` starts one per contact, each running as many no-op activities as the
campaign has steps, with the same waits between them (none, in the bench's zero-wait test mode).
It is what Temporal itself costs for the campaign's shape on this machine, measured in the same
run, so the campaign's sends per hour are reported as a ratio to its steps per hour.

No signals, queries or updates. Returns the workflow time (epoch seconds, ``workflow.now()``)
at which each step's activity had completed.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.deals import NoopActivities

# A no-op cannot fail for a reason a retry fixes slowly: a lost task (a worker restart) is the
# only failure, so three quick tries, then the bench sees the failure instead of waiting.
NOOP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class NoopSequenceInput(BaseModel):
    # Seconds to wait before each step (the campaign's wait_days x wait_day_seconds): one per
    # step, so len(waits) is the number of steps.
    waits: list[float]


@workflow.defn(name="NoopSequence")
class NoopSequenceWorkflow:
    """One no-op activity per step, after that step's wait (a timer only when it is positive).

    Signals, queries, updates: none.
    """

    @workflow.run
    async def run(self, inp: NoopSequenceInput) -> list[float]:
        done: list[float] = []
        for wait in inp.waits:
            if wait > 0:
                await workflow.sleep(wait)
            await workflow.execute_activity_method(
                NoopActivities.noop,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOOP_RETRY,
            )
            done.append(workflow.now().timestamp())
        return done
