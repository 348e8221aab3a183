"""NoopWorkflow: the benchmark baseline — one workflow with one activity that does nothing.

It measures what Temporal itself costs on this machine (start, a workflow task, an activity
round trip, completion), so the deal benchmarks can report their cost as a ratio to it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.deals import NoopActivities


@workflow.defn(name="Noop")
class NoopWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity_method(
            NoopActivities.noop, start_to_close_timeout=timedelta(seconds=10)
        )
