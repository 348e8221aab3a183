"""How the approval chain runs its activities and keeps its bookkeeping: park and retry (and
tell the closure), the directory, deliveries, request events, withdrawal, the owner's notices and
the predicted finish.

``ApprovalSteps`` is the base of ``ApprovalChainWorkflow`` (``workflows/approval_chain.py``, the
process); it holds no handlers of its own. Deterministic workflow code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from domain.schedule import add_business_hours
    from messages.approval import (
        ApprovalChainInput,
        ApprovalStep,
        DecisionStatsInput,
        DeliverInput,
        NotifyInput,
        PersonInfo,
        RequestEventInput,
        RequestSpec,
        ResolvePersonInput,
        StageSpec,
        Withdrawal,
        WithdrawInput,
    )
    from messages.parking import ChildPark, ParkedFailure, RetryBudget
    from workflows.parking import cancelled, parked_failure, worker_loss_timeout

# Messaging and DB writes: quick retries ride out a blip; Slack's rate limits (HTTP 429) are
# retried by slack_sdk itself. The budget (RetryBudget: 10 attempts over about 5 minutes) then
# parks the request in needs_attention: a delivery is never dropped silently, and never retried
# unseen forever either. Bad data (unknown person) is non-retryable and named. The chain builds
# the policy from its options (tests shorten it); this constant is the default, for reference.
NON_RETRYABLE = ["UnknownPerson"]
DELIVERY_RETRY: RetryPolicy = RetryBudget().policy(non_retryable=NON_RETRYABLE)


# Replay safety: chains recorded before this let an activity with an ``interrupt`` (the first
# stage's decision_stats) run out its retries before a withdrawal took effect, so a cancel of the
# deal waited minutes on a failing or slow call; new ones cancel that activity at once.
WITHDRAW_INTERRUPTS_PATCH = "withdraw-interrupts-activity"


T = TypeVar("T")


class ApprovalSteps:
    """Park-and-retry and the chain's activity calls over the chain's state."""

    # The chain's state, set by ApprovalChainWorkflow.__init__.
    _input: ApprovalChainInput
    _steps: dict[str, ApprovalStep]
    _specs: dict[str, RequestSpec]
    _people: dict[str, PersonInfo]
    _changed: dict[str, int]  # bumps wake a request's timer loop
    _outcome: str
    _current_stage: int | None
    _predicted_finish: datetime | None
    _withdrawal: Withdrawal | None
    _final_by: str | None
    _event_seq: int
    _final_comment: str | None
    _retry: int
    _parked: ParkedFailure | None
    _parks_open: int
    _stopped: set[asyncio.Task[Any]]

    async def _act(
        self,
        name: str,
        method: Callable[[Any, Any], Awaitable[T]],
        arg: Any,
        *,
        interrupt: Callable[[], bool] | None = None,
    ) -> T | None:
        """Run an activity; when it gives up, park until ``retry``, then run it again.

        ``interrupt``: a condition (the chain was withdrawn) that ends the call without a
        result: the running activity is cancelled (even while it waits out its retries) or the
        park ends without a retry; the call then returns None. A request's task is cancelled
        instead (its stage ended).
        """
        while True:
            self._stop_if_stage_ended()
            try:
                if interrupt is not None and workflow.patched(WITHDRAW_INTERRUPTS_PATCH):
                    if interrupt():
                        return None  # already withdrawn: not worth starting
                    handle = workflow.start_activity_method(method, arg, **self._options())
                    stop_when: Callable[[], bool] = interrupt  # not None here (checked above)

                    def ended(
                        h: workflow.ActivityHandle[T] = handle,
                        stop: Callable[[], bool] = stop_when,
                    ) -> bool:
                        return h.done() or stop()

                    await workflow.wait_condition(ended)
                    if not handle.done():
                        # Withdrawn while the activity runs or waits out its retries: its
                        # result is no longer needed, and the withdrawal must not wait for it.
                        handle.cancel()
                        with contextlib.suppress(ActivityError):
                            await handle
                        return None
                    result: T = await handle
                else:
                    result = await workflow.execute_activity_method(method, arg, **self._options())
                self._stop_if_stage_ended()
                return result
            except ActivityError as err:
                if cancelled(err):
                    raise
                failure = parked_failure(name, err)
                if not await self._park(failure, interrupt):
                    return None

    def _stop_if_stage_ended(self) -> None:
        """End a request task of a stage that ended, even if its cancellation was swallowed."""
        if asyncio.current_task() in self._stopped:
            raise asyncio.CancelledError()

    async def _park(self, failure: ParkedFailure, interrupt: Callable[[], bool] | None) -> bool:
        """Wait for a retry (True) or the interrupt (False); the closure is told either way."""
        seen = self._retry  # before the park is visible: a retry from then on counts
        task = asyncio.current_task()
        self._parked = failure
        self._parks_open += 1
        await self._tell_parent(failure)
        try:
            await workflow.wait_condition(
                lambda: (
                    self._retry > seen
                    or (interrupt is not None and interrupt())
                    or task in self._stopped  # its cancellation was swallowed by the signal
                )
            )
            self._stop_if_stage_ended()
        except asyncio.CancelledError:
            # The request's stage ended (a decision elsewhere, a withdrawal): no longer parked.
            await self._unpark()
            raise
        await self._unpark()
        return self._retry > seen

    async def _unpark(self) -> None:
        self._parks_open -= 1
        if self._parks_open == 0:
            self._parked = None
            await self._tell_parent(None)

    async def _tell_parent(self, failure: ParkedFailure | None) -> None:
        parent = workflow.info().parent
        if parent is None:
            return
        await workflow.get_external_workflow_handle(parent.workflow_id).signal(
            "child_parked", ChildPark(workflow_id=workflow.info().workflow_id, failure=failure)
        )

    def _due(self, spec: RequestSpec, start: datetime, person: PersonInfo) -> datetime:
        override = self._input.options.sla_override_seconds
        if override is not None:
            return start + timedelta(seconds=override)
        if spec.sla_business_hours:
            return add_business_hours(start, spec.sla_hours, person.timezone)
        return start + timedelta(hours=spec.sla_hours)

    async def _person(self, email: str) -> PersonInfo:
        # Fetched once per chain: a decision made against the directory as it was at assignment
        # is reproducible; out-of-office changes arrive as `reassign` signals.
        if email not in self._people:
            person = await self._act(
                "resolve_person",
                ApprovalActivities.resolve_person,
                ResolvePersonInput(email=email, deal_id=self._input.deal.deal_id),
            )
            assert person is not None  # no interrupt: only a retry ends its park
            self._people[email] = person
        return self._people[email]

    async def _deliver(self, step: ApprovalStep, purpose: str) -> None:
        spec = self._specs[step.step_id]
        await self._act(
            "deliver",
            ApprovalActivities.deliver,
            DeliverInput(
                step=step,
                role_label=spec.role_label,
                recipient_email=step.delegate_email or step.holder_email,
                purpose=purpose,
                summary=self._input.deal,
                link_ttl_hours=self._input.options.link_ttl_hours,
            ),
        )

    async def _event(
        self, step: ApprovalStep, event: str, actor: str, detail: dict[str, Any]
    ) -> None:
        await self._act(
            "record_event",
            ApprovalActivities.record_event,
            RequestEventInput(
                deal_id=self._input.deal.deal_id,
                step=step,
                event=event,
                actor=actor,
                detail=detail,
                at=workflow.now(),
                idempotency_key=f"{workflow.info().workflow_id}/event/{self._next_seq()}",
            ),
        )

    async def _withdraw_step(self, step: ApprovalStep, reason: str) -> None:
        step.status = "withdrawn"
        step.comment = reason
        self._changed.setdefault(step.step_id, 0)
        self._changed[step.step_id] += 1
        await self._act(
            "withdraw_request",
            ApprovalActivities.withdraw_request,
            WithdrawInput(
                deal_id=self._input.deal.deal_id, step=step, reason=reason, at=workflow.now()
            ),
        )

    async def _notify_owner(
        self, key: str, text: str, *, interrupt: Callable[[], bool] | None = None
    ) -> None:
        await self._act(
            "notify",
            ApprovalActivities.notify,
            NotifyInput(
                recipient_email=self._input.deal.owner_email,
                key=f"{workflow.info().workflow_id}/{key}",
                text=text,
                deal_id=self._input.deal.deal_id,
            ),
            interrupt=interrupt,
        )

    async def _predict_finish(self, stage: StageSpec) -> None:
        """Expected decision times per approver; warn the rep if the deal will close late."""
        remaining = [s for s in self._input.stages if s.index >= stage.index]
        emails = sorted({r.approver_email for s in remaining for r in s.requests})
        stats = await self._act(
            "decision_stats",
            ApprovalActivities.decision_stats,
            DecisionStatsInput(emails=emails, deal_id=self._input.deal.deal_id),
            interrupt=lambda: self._withdrawal is not None,
        )
        if stats is None:  # withdrawn while parked: no prediction is needed any more
            return
        total_hours = 0.0
        for s in remaining:
            slowest = 0.0
            for r in s.requests:
                st = stats.by_email.get(r.approver_email)
                if st is not None and st.count >= self._input.options.min_history:
                    median, p90, source = st.median_hours, st.p90_hours, "history"
                else:
                    median, p90, source = r.expected_hours, r.expected_hours, "policy"
                step = self._steps[r.step_id]
                step.expected_median_hours, step.expected_p90_hours = median, p90
                step.expected_source = source
                slowest = max(slowest, p90)
            total_hours += slowest
        self._predicted_finish = workflow.now() + timedelta(hours=total_hours)
        close_by = self._input.deal.close_by
        if close_by is not None and self._predicted_finish.date() > close_by:
            await self._notify_owner(
                f"late/{stage.index}",
                f"Heads up: approvals for {self._input.deal.name} are expected to finish around "
                f"{self._predicted_finish:%Y-%m-%d %H:%M} UTC, after the close-by date "
                f"{close_by:%Y-%m-%d}.",
                interrupt=lambda: self._withdrawal is not None,
            )

    def _options(self) -> dict[str, Any]:
        timeout = timedelta(seconds=self._input.options.activity_timeout_seconds)
        return {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": worker_loss_timeout(timeout),
            "retry_policy": self._input.options.retry.policy(non_retryable=NON_RETRYABLE),
        }

    def _next_seq(self) -> int:
        self._event_seq += 1
        return self._event_seq
