"""How the deal closure runs a step: activities that park and retry, children whose parks it
shows, and the stage it records (the deal row, the audit trail, the query, the search attribute).

``ClosureSteps`` is the base of ``DealClosureWorkflow`` (``workflows/deal_closure.py``, the
process) and ``ClosingStage`` (``workflows/closing.py``); it holds no handlers of its own.
Deterministic workflow code, like the rest of ``workflows/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.deals import (
        DEAL_NOT_FOUND,
        NO_APPROVER_FOR_ROLE,
        QUOTE_VERIFICATION_FAILED,
        DealActivities,
    )
    from dealflow.ids import SA_DEAL_STAGE
    from messages.closure import (
        CancelRequest,
        DealClosureInput,
        DealClosureStatus,
        InvoicePaid,
        RecordStageInput,
        TimelineEntry,
    )
    from messages.parking import ChildPark, RetryBudget
    from workflows.parking import (
        cancelled,
        describe_failure,
        park_reason,
        parked_failure,
        worker_loss_timeout,
    )

# Closures recorded before this let a running activity (retrying, say) finish before a cancel
# took effect; new ones cancel the activity at once.
CANCEL_INTERRUPTS_PATCH = "cancel-interrupts-activity"


# Closures recorded before this re-read the child's park count after every await in
# _await_child, so a child_parked signal handled during that await (the chain's "resumed" while
# the retry was being forwarded, or a re-park while a stage was recorded) was taken as seen and
# never shown; new ones take the count when they read the park.
CHILD_PARK_SEEN_PATCH = "child-park-seen-when-read"


# Database, rendering and closing activities: a few quick retries ride out a restart or a lock
# timeout; the budget (RetryBudget: 10 attempts over about 5 minutes) then parks the closure in
# needs_attention so a person sees it, instead of retrying unseen forever. Business errors are
# non-retryable and named. The closure builds the policy from its options (tests shorten it);
# this constant is the default, for reference.
NON_RETRYABLE = [DEAL_NOT_FOUND, QUOTE_VERIFICATION_FAILED, NO_APPROVER_FOR_ROLE]
LOCAL_SYSTEM_RETRY: RetryPolicy = RetryBudget().policy(non_retryable=NON_RETRYABLE)


# Writing needs_attention itself while parking: two quick tries, then show it anyway (the query
# and search attribute) — the park must not wait out a full budget to become visible.
PARK_RECORD_ATTEMPTS = 2


class ClosureCancelled(Exception):
    """Raised inside the workflow at the next checkpoint after a cancel was accepted."""


T = TypeVar("T")


class ClosureSteps:
    """Park-and-retry, child waiting and stage recording over the closure's state."""

    # The closure's state, set by DealClosureWorkflow.__init__.
    _input: DealClosureInput
    _status: DealClosureStatus
    _cancel: CancelRequest | None
    _stage_seq: int
    _retry: int  # bumped by retry / retry_closing
    _retry_by: str
    _paid: InvoicePaid | None
    _child_park: ChildPark | None
    _child_park_seq: int
    _finishing: bool  # recording the cancellation: checkpoints no longer raise
    _won: bool  # closed_won reached: only the payment is watched; no cancel

    def _checkpoint(self) -> None:
        if self._cancel is not None and not self._finishing:
            raise ClosureCancelled()

    async def _activity(
        self,
        name: str,
        method: Callable[[Any, Any], Awaitable[T]],
        arg: Any,
        *,
        heartbeat: bool = False,
    ) -> T:
        """Run one activity; when it gives up, park until a retry, then run it again."""
        return await self._step(name, lambda: self._run_activity(method, arg, heartbeat))

    async def _run_activity(
        self, method: Callable[[Any, Any], Awaitable[T]], arg: Any, heartbeat: bool
    ) -> T:
        """The activity, cancelled when the closure is (a cancel never waits out a retry)."""
        options = self._activity_options(heartbeat=heartbeat)
        if self._finishing or self._won or not workflow.patched(CANCEL_INTERRUPTS_PATCH):
            return await workflow.execute_activity_method(method, arg, **options)
        handle = workflow.start_activity_method(method, arg, **options)
        await workflow.wait_condition(lambda: handle.done() or self._cancellable())
        if not handle.done():
            handle.cancel()
        try:
            result: T = await handle
            return result
        except ActivityError:
            if self._cancellable():
                raise ClosureCancelled() from None
            raise

    async def _step(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()``; an activity or child that gave up parks the closure, then retries."""
        while True:
            try:
                return await call()
            except (ActivityError, ChildWorkflowError) as err:
                if cancelled(err):
                    raise
                await self._park(name, err)

    def _cancellable(self) -> bool:
        return self._cancel is not None and not self._finishing and not self._won

    async def _park(self, name: str, err: BaseException) -> None:
        """Show needs_attention with the error; wait for a retry (or a cancel)."""
        failure = parked_failure(name, err)
        resume = (self._status.stage, self._status.stage_reason)
        reason = park_reason(failure)
        if resume[0] == "closing":
            reason = f"Closing failed: {reason}"
        seen = self._retry  # before the park is visible: a retry sent while recording it counts
        self._status.parked = failure
        self._note("step.failed", reason)
        await self._show_stage("needs_attention", reason)
        await workflow.wait_condition(lambda: self._retry > seen or self._cancellable())
        self._status.parked = None
        self._checkpoint()
        self._note("step.retried", f"{name}, requested by {self._retry_by}")
        if resume[0] != "needs_attention":
            await self._show_stage(*resume)

    async def _await_child(
        self,
        handle: workflow.ChildWorkflowHandle[Any, T],
        withdraw: Callable[[], Awaitable[None]],
        *,
        withdrawn: bool = False,
    ) -> T:
        """Wait for a child's result, showing its parks and forwarding retries and a cancel
        (``withdrawn``: the cancel was forwarded already)."""
        shown: tuple[str, str | None] | None = None  # the stage to go back to after a park
        # Retries counted from the moment a park became visible: one sent before it (from the
        # UI, while nothing was parked) does not count; one sent while we record it does.
        retry_mark = self._retry
        counted_when_read = workflow.patched(CHILD_PARK_SEEN_PATCH)
        seen_park = self._child_park_seq
        if counted_when_read and self._child_park is not None:
            # It parked before we began to wait (its signal came with its start): not yet shown.
            seen_park -= 1
        while True:
            if not counted_when_read:
                seen_park = self._child_park_seq

            def woken(
                seen_park: int = seen_park, withdrawn: bool = withdrawn, mark: int = retry_mark
            ) -> bool:
                return (
                    handle.done()
                    or (self._cancel is not None and not withdrawn)
                    or self._child_park_seq != seen_park
                    or (self._child_park is not None and self._retry != mark)
                )

            await workflow.wait_condition(woken)
            if handle.done():
                break
            if self._cancel is not None and not withdrawn:
                withdrawn = True
                await withdraw()
                continue
            park = self._child_park
            if self._child_park_seq == seen_park:
                # A retry while the child is parked; it resumes and tells us (no failure).
                assert park is not None
                retry_mark = self._retry
                await workflow.get_external_workflow_handle(park.workflow_id).signal(
                    "retry", self._retry_by
                )
                continue
            # What we show is the park as of now: a signal handled while we record it (or while
            # a later retry is forwarded) changes the count again and is shown next.
            seen_park = self._child_park_seq
            if park is not None and park.failure is not None:
                if shown is None:
                    shown = (self._status.stage, self._status.stage_reason)
                retry_mark = self._retry
                self._status.parked = park.failure
                reason = park_reason(park.failure)
                self._note("step.failed", reason)
                await self._show_stage("needs_attention", reason)
            elif shown is not None:
                self._status.parked = None
                self._note("step.retried", f"requested by {self._retry_by}")
                await self._show_stage(*shown)
                shown = None
        self._status.parked = None
        self._child_park = None
        return await handle

    async def _show_stage(self, stage: str, reason: str | None) -> None:
        """Record a stage while parking or resuming: tried briefly, then shown anyway.

        The failing step may be ``record_stage`` itself; the park must still be visible (the
        query and the search attribute) and must not park again.
        """
        self._stage_seq += 1
        try:
            await workflow.execute_activity_method(
                DealActivities.record_stage,
                self._stage_input(stage, reason),
                **self._activity_options(attempts=PARK_RECORD_ATTEMPTS),
            )
        except ActivityError as err:
            self._note("stage.not_recorded", f"{stage}: {describe_failure(err)[1]}")
        self._show(stage, reason)

    def _note(self, event: str, detail: str | None = None) -> None:
        self._status.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))

    async def _record_stage(self, stage: str, reason: str | None) -> None:
        """Write the stage to the database and audit trail, then show it.

        The query, the search attribute and the deal row change together, after the write: a
        reader who sees a stage can rely on it being recorded.
        """
        self._stage_seq += 1
        # One input (one idempotency key) however often a park makes us try it again.
        record = self._stage_input(stage, reason)
        await self._activity("record_stage", DealActivities.record_stage, record)
        self._show(stage, reason)

    def _stage_input(self, stage: str, reason: str | None) -> RecordStageInput:
        return RecordStageInput(
            deal_id=self._input.deal_id,
            stage=stage,
            reason=reason,
            at=workflow.now(),
            idempotency_key=f"{workflow.info().workflow_id}/{workflow.info().run_id}"
            f"/stage/{self._stage_seq}",
        )

    def _show(self, stage: str, reason: str | None) -> None:
        self._status.stage = stage
        self._status.stage_reason = reason
        self._note(f"stage.{stage}", reason)
        workflow.upsert_search_attributes([SA_DEAL_STAGE.value_set(stage)])

    def _activity_options(
        self, *, heartbeat: bool = False, attempts: int | None = None
    ) -> dict[str, Any]:
        timeout = timedelta(seconds=self._input.options.activity_timeout_seconds)
        policy = self._input.options.retry.policy(non_retryable=NON_RETRYABLE)
        if attempts is not None:
            policy.maximum_attempts = attempts
        options: dict[str, Any] = {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": worker_loss_timeout(timeout),
            "retry_policy": policy,
        }
        if heartbeat:
            # Rendering a large package takes a while, longer still when many deals render at
            # once on one worker; the activity beats while each PDF renders (and the worker's
            # pulse between), so the heartbeat timeout notices a dead worker in seconds and the
            # overall bound can be generous (a package that is slow is not stuck).
            options["start_to_close_timeout"] = timeout * 10
        return options
